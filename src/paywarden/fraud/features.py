"""Incremental risk features: one code path for live scoring and for replay.

A :class:`FeatureState` holds per-entity state and is fed transactions one at a
time, in time order. The live gateway calls it with a card fingerprint as the
*customer* and a merchant account (or terminal) as the *terminal*; the backtest
and ``paywarden fraud train`` replay labelled history through the very same
methods. There is no separate batch pipeline.

For each transaction, call :meth:`FeatureState.features` (before the decision),
then :meth:`FeatureState.update` (record it). Labels arrive later through
:meth:`FeatureState.add_label` with the time at which they became known.

Features (the names are in :attr:`FeatureState.names`):

* the amount, hour of day, weekend and night (hour <= 6) flags;
* customer count and mean amount over each window (1/7/30 days by default),
  including the current transaction, as the Fraud Detection Handbook (ch. 3,
  "Baseline feature transformation") defines them;
* terminal count and fraud risk over each window *with the label delay*: the
  transactions in ``(t - delay - w, t - delay]`` and the share of them whose
  fraud label is known by ``t`` (the handbook's delayed terminal risk, made
  explicit: a label counts only once it is known *and* its transaction is older
  than the delay, so early reports never change the window's meaning);
* the customer's own history before this transaction: count, mean amount, and
  this amount relative to that mean (ratio and z-score) and to the mean of the
  previous 30 days — stolen-card spending stands out against the card's habits;
* the number of frauds on this customer known by now.

Windows are half-open on the left, ``(t - w, t]``, like pandas' time-based
rolling windows that the handbook uses. Time is in seconds (UTC epoch). A
transaction older than one already seen for the same entity is treated as
happening at the latest time seen (windows never move backwards).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DAY = 86_400.0
_COMPACT_AT = 2048
_MAX_AGE_DAYS = 60.0
_MAX_STREAK = 256
_SPIKE_RATIO = 2.5
_SPIKE_MIN_HISTORY = 5
_SPIKE_WINDOW = 14 * DAY


@dataclass(frozen=True, slots=True, kw_only=True)
class Tx:
    """One transaction as the feature code sees it."""

    tx_id: Hashable
    ts: float  # seconds since the UTC epoch
    customer: Hashable  # a card fingerprint in the gateway, customer_id in the data set
    terminal: Hashable  # a merchant account or terminal
    amount: float  # in major units of one currency


class _Customer:
    """Amounts in the last ``max(windows)`` days, with one head per window."""

    __slots__ = (
        "amounts",
        "base",
        "heads",
        "hist_n",
        "hist_sq",
        "hist_sum",
        "known_frauds",
        "spikes",
        "sums",
        "times",
    )

    def __init__(self, n_windows: int) -> None:
        self.times: list[float] = []
        self.amounts: list[float] = []
        self.base = 0  # absolute index of times[0]
        self.heads = [0] * n_windows  # absolute index of the first entry inside each window
        self.sums = [0.0] * n_windows
        self.hist_n = 0
        self.hist_sum = 0.0
        self.hist_sq = 0.0
        self.known_frauds = 0
        self.spikes: deque[float] | None = None  # times of recent unusually large amounts


class _Terminal:
    """Transactions of the last ``delay + max(windows)`` days and their known labels."""

    __slots__ = ("base", "delayed", "flags", "frauds", "heads", "ids", "last_fraud", "times")

    def __init__(self, n_windows: int) -> None:
        self.times: list[float] = []
        self.ids: list[Hashable] = []
        self.flags: list[int] = []  # 1 once a fraud label is known
        self.base = 0
        self.delayed = 0  # absolute index of the first entry younger than the delay
        self.heads = [0] * n_windows
        self.frauds = [0] * n_windows  # sum of flags in [heads[i], delayed)
        self.last_fraud = -math.inf  # time of the latest known fraud older than the delay


class FeatureState:
    """Per-customer and per-terminal state; see the module docstring."""

    def __init__(
        self, *, windows_days: Sequence[int] = (1, 7, 30), delay_days: float = 7.0
    ) -> None:
        if not windows_days or any(w <= 0 for w in windows_days):
            raise ValueError("windows_days must be positive")
        if delay_days < 0:
            raise ValueError("delay_days must not be negative")
        # Longest window first, so heads[0] is the oldest entry still needed.
        self.windows_days = tuple(sorted(windows_days, reverse=True))
        self.delay_days = float(delay_days)
        self._win = [w * DAY for w in self.windows_days]
        self._delay = self.delay_days * DAY
        self._customers: dict[Hashable, _Customer] = {}
        self._terminals: dict[Hashable, _Terminal] = {}
        # tx_id -> (terminal, absolute index, customer), for labels; dropped once the
        # transaction leaves the longest delayed window.
        self._where: dict[Hashable, tuple[_Terminal, int, _Customer]] = {}
        self._labels: list[tuple[float, int, Hashable, bool]] = []  # heap by known_at
        self._label_seq = 0
        self._now = -math.inf
        self.names: tuple[str, ...] = self._names()

    def _names(self) -> tuple[str, ...]:
        ws = [f"{w}d" for w in self.windows_days]
        return (
            "amount",
            "hour",
            "is_weekend",
            "is_night",
            *(f"customer_nb_tx_{w}" for w in ws),
            *(f"customer_avg_amount_{w}" for w in ws),
            *(f"terminal_nb_tx_{w}" for w in ws),
            *(f"terminal_risk_{w}" for w in ws),
            "customer_hist_nb_tx",
            "customer_hist_avg_amount",
            "amount_over_hist_avg",
            "amount_zscore_hist",
            f"amount_over_prev_avg_{ws[0]}",
            "customer_known_frauds",
            "terminal_known_fraud_age_days",
            "terminal_fraud_streak",
            "customer_spikes_14d",
            "terminal_fraud_run_days",
        )

    @property
    def n_features(self) -> int:
        return len(self.names)

    # -- labels ----------------------------------------------------------------

    def add_label(self, tx_id: Hashable, fraud: bool, known_at: float) -> bool:
        """Record that ``tx_id`` is (or is not) fraud, known from ``known_at`` on.

        Returns False when the transaction is unknown (never recorded, or older
        than the longest delayed window, where its label no longer matters).
        """
        if tx_id not in self._where:
            return False
        if fraud:
            self._label_seq += 1
            heapq.heappush(self._labels, (known_at, self._label_seq, tx_id, True))
        return True

    def _advance_clock(self, ts: float) -> float:
        self._now = max(self._now, ts)
        now = self._now
        labels = self._labels
        if not labels or labels[0][0] > now:
            return now
        while labels and labels[0][0] <= now:
            _, _, tx_id, fraud = heapq.heappop(labels)
            where = self._where.get(tx_id)
            if where is None or not fraud:
                continue
            term, idx, cust = where
            cust.known_frauds += 1
            pos = idx - term.base
            if term.flags[pos]:
                continue
            term.flags[pos] = 1
            if idx < term.delayed:  # already inside the delayed windows: count it now
                term.last_fraud = max(term.last_fraud, term.times[pos])
                heads = term.heads
                frauds = term.frauds
                for i in range(len(heads)):
                    if heads[i] <= idx:
                        frauds[i] += 1
        return now

    # -- windows ---------------------------------------------------------------

    def _slide_customer(self, c: _Customer, now: float) -> None:
        times = c.times
        amounts = c.amounts
        base = c.base
        heads = c.heads
        sums = c.sums
        n = len(times) + base
        for i, w in enumerate(self._win):
            h = heads[i]
            cut = now - w
            if h < n and times[h - base] <= cut:
                s = sums[i]
                while h < n and times[h - base] <= cut:
                    s -= amounts[h - base]
                    h += 1
                heads[i] = h
                sums[i] = s if h < n else 0.0  # reset drift when the window empties
        drop = heads[0] - base
        if drop > _COMPACT_AT and drop * 2 > len(times):
            del times[:drop]
            del amounts[:drop]
            c.base = heads[0]

    def _slide_terminal(self, t: _Terminal, now: float) -> None:
        times = t.times
        flags = t.flags
        base = t.base
        n = len(times) + base
        frauds = t.frauds
        nw = len(frauds)
        d = t.delayed
        cut = now - self._delay
        while d < n and times[d - base] <= cut:
            if flags[d - base]:
                for i in range(nw):
                    frauds[i] += 1
                t.last_fraud = max(t.last_fraud, times[d - base])
            d += 1
        t.delayed = d
        heads = t.heads
        where = self._where
        ids = t.ids
        for i, w in enumerate(self._win):
            h = heads[i]
            cut_w = cut - w
            while h < d and times[h - base] <= cut_w:
                if flags[h - base]:
                    frauds[i] -= 1
                if i == 0:  # leaving the longest window: its label can no longer matter
                    where.pop(ids[h - base], None)
                h += 1
            heads[i] = h
        drop = heads[0] - base
        if drop > _COMPACT_AT and drop * 2 > len(times):
            del times[:drop]
            del ids[:drop]
            del flags[:drop]
            t.base = heads[0]

    # -- public API ------------------------------------------------------------

    def features(self, tx: Tx) -> npt.NDArray[np.float64]:
        """Features of ``tx`` given everything recorded so far (``tx`` itself counts
        in the customer windows, as in the handbook). Does not record ``tx``."""
        out = np.empty(self.n_features, dtype=np.float64)
        self.features_into(tx=tx, out=out)
        return out

    def features_into(self, *, tx: Tx, out: npt.NDArray[np.float64]) -> None:
        """:meth:`features`, written into a preallocated row (replay uses this)."""
        now = self._advance_clock(tx.ts)
        c, t = self._entities(tx.customer, tx.terminal)
        out[:] = self._vector(now, tx.ts, c, t, tx.amount)

    def _entities(self, customer: Hashable, terminal: Hashable) -> tuple[_Customer, _Terminal]:
        c = self._customers.get(customer)
        if c is None:
            c = self._customers[customer] = _Customer(len(self._win))
        t = self._terminals.get(terminal)
        if t is None:
            t = self._terminals[terminal] = _Terminal(len(self._win))
        return c, t

    def _vector(
        self, now: float, ts: float, c: _Customer, t: _Terminal, amount: float
    ) -> list[float]:
        self._slide_customer(c, now)
        self._slide_terminal(t, now)

        hour = (ts % DAY) / 3600.0
        # 1970-01-01 was a Thursday: weekday 0 = Monday.
        weekday = (int(ts // DAY) + 3) % 7
        n_c = len(c.times) + c.base + 1
        sums = c.sums
        cust_counts = [float(n_c - h) for h in c.heads]
        cust_avgs = [(s + amount) / k for s, k in zip(sums, cust_counts, strict=True)]
        d = t.delayed
        term_counts = [float(d - h) for h in t.heads]
        term_risk = [f / k if k else 0.0 for f, k in zip(t.frauds, term_counts, strict=True)]
        hn = c.hist_n
        if hn:
            mean = c.hist_sum / hn
            var = c.hist_sq / hn - mean * mean
            std = math.sqrt(var) if var > 1e-9 else 0.0
            ratio = amount / mean if mean > 0 else 1.0
            z = (amount - mean) / std if std > 0 else 0.0
        else:
            mean, ratio, z = amount, 1.0, 0.0
        # How long ago (before the delay) the terminal's latest known fraud happened, and
        # how many of its latest transactions older than the delay are all known frauds:
        # a compromised terminal keeps being used while the small windows may be empty.
        age = (now - self._delay - t.last_fraud) / DAY
        age = min(age, _MAX_AGE_DAYS)
        streak = 0
        pos = d - t.base - 1
        flags = t.flags
        while pos >= 0 and streak < _MAX_STREAK and flags[pos]:
            streak += 1
            pos -= 1
        # ...and since when that run of frauds has lasted (compromises do not last forever).
        run_days = (now - t.times[pos + 1]) / DAY if streak else 0.0
        spikes = c.spikes
        n_spikes = 0.0
        if spikes:
            cut = now - _SPIKE_WINDOW
            while spikes and spikes[0] <= cut:
                spikes.popleft()
            n_spikes = float(len(spikes))
        prev_n = cust_counts[0] - 1.0
        s0 = sums[0]
        prev_ratio = amount * prev_n / s0 if prev_n > 0 and s0 > 0 else 1.0
        vec = [amount, hour, 1.0 if weekday >= 5 else 0.0, 1.0 if hour < 7.0 else 0.0]
        vec += cust_counts
        vec += cust_avgs
        vec += term_counts
        vec += term_risk
        vec += (
            float(hn),
            mean,
            ratio,
            z,
            prev_ratio,
            float(c.known_frauds),
            age,
            float(streak),
            n_spikes,
            run_days,
        )
        return vec

    def update(self, tx: Tx) -> None:
        """Record ``tx`` (after :meth:`features`; in time order)."""
        self._record(tx.tx_id, tx.ts, tx.customer, tx.terminal, tx.amount)

    def _record(
        self, tx_id: Hashable, ts: float, customer: Hashable, terminal: Hashable, amount: float
    ) -> None:
        now = self._advance_clock(ts)
        c, t = self._entities(customer, terminal)
        self._append(tx_id, now, c, t, amount)

    def _append(
        self, tx_id: Hashable, now: float, c: _Customer, t: _Terminal, amount: float
    ) -> None:
        c.times.append(now)
        c.amounts.append(amount)
        sums = c.sums
        for i in range(len(sums)):
            sums[i] += amount
        # An amount far above the card's own mean (before this one) is a "spike"; several
        # in a short time suggest a stolen card being used, before any label is known.
        if c.hist_n >= _SPIKE_MIN_HISTORY and amount * c.hist_n > _SPIKE_RATIO * c.hist_sum:
            if c.spikes is None:
                c.spikes = deque()
            c.spikes.append(now)
        c.hist_n += 1
        c.hist_sum += amount
        c.hist_sq += amount * amount
        idx = len(t.times) + t.base
        t.times.append(now)
        t.ids.append(tx_id)
        t.flags.append(0)
        self._where[tx_id] = (t, idx, c)

    def score_and_record(self, tx: Tx, out: npt.NDArray[np.float64]) -> None:
        """:meth:`features_into` then :meth:`update`: the per-transaction step of a replay."""
        now = self._advance_clock(tx.ts)
        c, t = self._entities(tx.customer, tx.terminal)
        out[:] = self._vector(now, tx.ts, c, t, tx.amount)
        self._append(tx.tx_id, now, c, t, tx.amount)
