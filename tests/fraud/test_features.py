"""The incremental feature state against a brute-force reference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywarden.fraud import features as fmod
from paywarden.fraud.features import DAY, FeatureState, Tx

T0 = 1_530_403_200.0  # 2018-07-01T00:00:00Z, a Sunday


def tx(i: int, ts: float, customer: int = 1, terminal: int = 1, amount: float = 10.0) -> Tx:
    return Tx(tx_id=i, ts=ts, customer=customer, terminal=terminal, amount=amount)


def feat(state: FeatureState, t: Tx) -> dict[str, float]:
    return dict(zip(state.names, state.features(t).tolist(), strict=True))


def test_customer_windows_include_the_current_transaction() -> None:
    s = FeatureState()
    s.update(tx(1, T0, amount=10.0))
    s.update(tx(2, T0 + 2 * DAY, amount=30.0))
    f = feat(s, tx(3, T0 + 2.5 * DAY, amount=50.0))
    assert f["customer_nb_tx_1d"] == 2  # tx 2 and the current one
    assert f["customer_avg_amount_1d"] == pytest.approx(40.0)
    assert f["customer_nb_tx_7d"] == 3
    assert f["customer_avg_amount_7d"] == pytest.approx(30.0)
    assert f["customer_hist_nb_tx"] == 2
    assert f["customer_hist_avg_amount"] == pytest.approx(20.0)
    assert f["amount_over_hist_avg"] == pytest.approx(2.5)


def test_window_edges_are_open_on_the_left() -> None:
    s = FeatureState()
    s.update(tx(1, T0))
    f = feat(s, tx(2, T0 + DAY))  # exactly one day later: tx 1 is out of the 1-day window
    assert f["customer_nb_tx_1d"] == 1
    assert f["customer_nb_tx_7d"] == 2


def test_time_features() -> None:
    s = FeatureState()
    f = feat(s, tx(1, T0 + 3 * 3600 + 1800))  # Sunday 03:30 UTC
    assert (f["hour"], f["is_weekend"], f["is_night"]) == (3.5, 1.0, 1.0)
    f = feat(s, tx(2, T0 + DAY + 12 * 3600))  # Monday noon
    assert (f["is_weekend"], f["is_night"]) == (0.0, 0.0)


def test_terminal_risk_waits_for_the_delay_and_the_label() -> None:
    s = FeatureState(delay_days=7)
    s.update(tx(1, T0, terminal=9))
    s.add_label(1, True, T0 + 7 * DAY)
    other = 100
    # Six days later: the transaction is younger than the delay; nothing is visible.
    f = feat(s, tx(2, T0 + 6 * DAY, customer=other, terminal=9))
    assert f["terminal_nb_tx_30d"] == 0
    assert f["terminal_risk_30d"] == 0
    # Just past the delay, the fraud is known and inside the 1-day delayed window.
    f = feat(s, tx(3, T0 + 7.5 * DAY, customer=other, terminal=9))
    assert f["terminal_nb_tx_1d"] == 1
    assert f["terminal_risk_1d"] == 1.0
    assert f["terminal_fraud_streak"] == 1
    assert f["customer_known_frauds"] == 0  # the other card
    assert feat(s, tx(4, T0 + 7.6 * DAY, customer=1, terminal=5))["customer_known_frauds"] == 1


def test_a_label_known_late_counts_only_from_then_on() -> None:
    s = FeatureState(delay_days=7)
    s.update(tx(1, T0, terminal=9))
    s.add_label(1, True, T0 + 10 * DAY)  # reported three days after the delay
    assert feat(s, tx(2, T0 + 8 * DAY, customer=2, terminal=9))["terminal_risk_7d"] == 0.0
    assert feat(s, tx(3, T0 + 10 * DAY, customer=2, terminal=9))["terminal_risk_7d"] == 1.0


def test_unknown_transaction_label_is_refused() -> None:
    assert FeatureState().add_label("nope", True, T0) is False


def test_features_do_not_record() -> None:
    s = FeatureState()
    s.features(tx(1, T0))
    assert feat(s, tx(2, T0 + 1))["customer_nb_tx_1d"] == 1


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="windows"):
        FeatureState(windows_days=())
    with pytest.raises(ValueError, match="delay"):
        FeatureState(delay_days=-1)


# -- brute-force reference --------------------------------------------------------


@dataclass
class _Rec:
    tx: Tx
    known_at: float | None  # fraud label known from then on; None = never labelled fraud


def _reference(
    history: list[_Rec], t: Tx, *, windows: tuple[int, ...], delay: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    now = t.ts
    for w in windows:
        mine = [r.tx.amount for r in history if r.tx.customer == t.customer]
        recent = [
            r.tx.amount for r in history if r.tx.customer == t.customer and r.tx.ts > now - w * DAY
        ]
        out[f"customer_nb_tx_{w}d"] = len(recent) + 1
        out[f"customer_avg_amount_{w}d"] = (sum(recent) + t.amount) / (len(recent) + 1)
        term = [
            r
            for r in history
            if r.tx.terminal == t.terminal
            and now - delay * DAY - w * DAY < r.tx.ts <= now - delay * DAY
        ]
        frauds = sum(1 for r in term if r.known_at is not None and r.known_at <= now)
        out[f"terminal_nb_tx_{w}d"] = len(term)
        out[f"terminal_risk_{w}d"] = frauds / len(term) if term else 0.0
    out["customer_hist_nb_tx"] = len(mine)
    out["customer_known_frauds"] = sum(
        1
        for r in history
        if r.tx.customer == t.customer and r.known_at is not None and r.known_at <= now
    )
    return out


_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=60.0),  # hours since the previous transaction
        st.integers(min_value=0, max_value=2),  # customer
        st.integers(min_value=0, max_value=2),  # terminal
        st.floats(min_value=0.5, max_value=500.0),  # amount
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=20.0)),  # label lag, days
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events=_events)
def test_incremental_state_matches_the_reference(
    events: list[tuple[float, int, int, float, float | None]],
) -> None:
    windows = (1, 7, 30)
    delay = 7.0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fmod, "_COMPACT_AT", 2)  # exercise list compaction too
        s = FeatureState(windows_days=windows, delay_days=delay)
        history: list[_Rec] = []
        ts = T0
        for i, (gap_h, cust, term, amount, lag) in enumerate(events):
            ts += gap_h * 3600.0
            t = Tx(tx_id=i, ts=ts, customer=cust, terminal=term, amount=amount)
            got = feat(s, t)
            want = _reference(history, t, windows=windows, delay=delay)
            for name, value in want.items():
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
            s.update(t)
            known_at = None if lag is None else ts + lag * DAY
            if known_at is not None:
                s.add_label(i, True, known_at)
            history.append(_Rec(t, known_at))


@settings(max_examples=40, deadline=None)
@given(events=_events, cut=st.floats(min_value=0.0, max_value=1.0))
def test_labels_from_the_future_never_leak(
    events: list[tuple[float, int, int, float, float | None]], cut: float
) -> None:
    """Features at time t are the same whatever labels become known after t."""
    rows: list[list[np.ndarray]] = [[], []]
    for variant in (0, 1):
        s = FeatureState()
        ts = T0
        for i, (gap_h, cust, term, amount, lag) in enumerate(events):
            ts += gap_h * 3600.0
            t = Tx(tx_id=i, ts=ts, customer=cust, terminal=term, amount=amount)
            rows[variant].append(s.features(t))
            s.update(t)
            if lag is not None:
                s.add_label(i, True, ts + lag * DAY)
            elif variant == 1:
                # A label that becomes known only after the last transaction.
                s.add_label(i, True, ts + 1e9 * (1 + cut))
    for a, b in zip(rows[0], rows[1], strict=True):
        assert np.array_equal(a, b)


def test_names_match_the_vector() -> None:
    s = FeatureState(windows_days=(2, 5))
    v = s.features(tx(1, T0))
    assert len(v) == len(s.names) == s.n_features
    assert "terminal_risk_2d" in s.names
    assert all(math.isfinite(x) for x in v)


@settings(max_examples=30, deadline=None)
@given(events=_events)
def test_replay_step_matches_the_live_path(
    events: list[tuple[float, int, int, float, float | None]],
) -> None:
    """``score_and_record`` (replay) gives the rows of ``features`` then ``update`` (live)."""
    live, replayed = FeatureState(), FeatureState()
    row = np.empty(replayed.n_features)
    ts = T0
    for i, (gap_h, cust, term, amount, lag) in enumerate(events):
        ts += gap_h * 3600.0
        t = Tx(tx_id=i, ts=ts, customer=cust, terminal=term, amount=amount)
        want = live.features(t)
        live.update(t)
        replayed.score_and_record(t, row)
        assert np.array_equal(row, want)
        if lag is not None:
            live.add_label(i, True, ts + lag * DAY)
            replayed.add_label(i, True, ts + lag * DAY)
