"""The decision engine on its own: the shipped model catches a compromised card
(spending far above the card's habits) and lets large first payments through."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from paywarden.db import Database
from paywarden.fraud.engine import (
    DEFAULT_MODEL_PATH,
    Decision,
    FraudEngine,
    PaymentSignals,
    RatesError,
    amount_in_usd_cents,
    load_usd_rates,
    model_key,
)
from paywarden.fraud.features import FeatureState, Tx
from paywarden.fraud.model import RiskModel
from paywarden.fraud.velocity import MemoryVelocityStore

T0 = 1_790_000_000.0


@pytest.fixture
def engine() -> Iterator[FraudEngine]:
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=FeatureState().names)
    e = FraudEngine(velocity=MemoryVelocityStore(), identifier_key=b"k" * 32, model=model)
    # Ten days of a merchant's ordinary traffic: 300 cards, $20-80 each.
    rng = random.Random(5)
    history = [
        (
            f"pi_{i}",
            T0 + i * 300.0,
            model_key(f"card{i % 300}", False),
            model_key("acct_1", False),
            rng.randint(2000, 8000),
        )
        for i in range(3000)
    ]
    e.warm_up(history)
    yield e
    e.close()


def _assess(e: FraudEngine, db: Database, n: int, card: str, cents: int) -> tuple[str, str]:
    with db.write() as s:
        d = e.assess(
            s,
            PaymentSignals(
                account_id="acct_1",
                livemode=False,
                payment_intent_id=f"pi_x{n}",
                attempt_key=f"pi_x{n}:0",
                at=T0 + 3000 * 300.0 + n * 3600.0,
                amount=cents,
                currency="usd",
                card_fingerprint=card,
            ),
        )
    assert d.risk_score is not None and d.reasons
    return d.action, d.risk_level


def test_a_compromised_card_is_caught_and_new_cards_pass(engine: FraudEngine, db: Database) -> None:
    # A first payment of any size on a new card is not suspicious by itself.
    assert _assess(engine, db, 1, "fresh", 150_000) == ("allow", "normal")
    # card5 usually spends $20-80; a thief spends several times that, repeatedly.
    spend = (30_000, 45_000, 60_000, 90_000)
    seen = [_assess(engine, db, n, "card5", cents) for n, cents in enumerate(spend, 2)]
    assert seen[0] == ("allow", "normal")  # one unusual purchase is not yet fraud
    assert seen[-1] == ("block", "highest"), seen  # the pattern is
    assert all(level != "normal" for _, level in seen[2:]), seen
    # Its ordinary spending elsewhere is untouched.
    assert _assess(engine, db, 9, "card7", 5_000) == ("allow", "normal")


def _pay_in(e: FraudEngine, db: Database, currency: str, amount: int, **extra: Any) -> Decision:
    """One card9 payment in ``currency``, after the engine's warm-up history."""
    with db.write() as s:
        return e.assess(
            s,
            PaymentSignals(
                account_id="acct_1",
                livemode=False,
                payment_intent_id=f"pi_{currency}",
                attempt_key=f"pi_{currency}:0",
                at=T0 + 3000 * 300.0,
                amount=amount,
                currency=currency,
                card_fingerprint="card9",
                **extra,
            ),
        )


def test_euro_amounts_are_scored_in_dollars(engine: FraudEngine, db: Database) -> None:
    d = _pay_in(engine, db, "eur", 5_000, ip_address="81.2.69.160")  # a GeoLite2 address in GB
    assert d.action == "allow" and d.risk_score is not None


def test_without_a_model_rules_still_decide(db: Database) -> None:
    e = FraudEngine(velocity=MemoryVelocityStore(), identifier_key=b"k" * 32)
    with db.write() as s:
        d = e.assess(
            s,
            PaymentSignals(
                account_id="a",
                livemode=False,
                payment_intent_id="pi_1",
                attempt_key="pi_1:0",
                at=T0,
                amount=100,
                currency="usd",
            ),
        )
    assert d.action == "allow" and d.risk_score is None and d.risk_level == "not_assessed"


def test_reported_fraud_survives_a_restart_through_warm_up() -> None:
    """A fresh engine warmed with the payments and their fraud reports knows the
    card's reported fraud, as the engine that took the report did."""
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=FeatureState().names)
    history = [(f"pi_{i}", T0 + i * 300.0, f"card{i % 30}", "acct_1", 5000) for i in range(300)]
    later = Tx(tx_id="pi_new", ts=T0 + 400 * 300.0, customer="card5", terminal="acct_1", amount=50)
    known = FeatureState().names.index("customer_known_frauds")

    def known_frauds(labels: list[tuple[str, float]]) -> float:
        e = FraudEngine(velocity=MemoryVelocityStore(), identifier_key=b"k" * 32, model=model)
        try:
            e.warm_up(history, labels)
            assert e._features is not None
            return float(e._features.features(later)[known])
        finally:
            e.close()

    assert known_frauds([]) == 0
    assert known_frauds([("pi_5", T0 + 100 * 300.0), ("pi_35", T0 + 101 * 300.0)]) == 2
    # A report on a payment the warm-up did not replay changes nothing.
    assert known_frauds([("pi_unknown", T0 + 100 * 300.0)]) == 0


def test_a_currency_without_a_rate_is_not_scored_until_one_is_configured(
    db: Database, tmp_path: Path
) -> None:
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=FeatureState().names)
    plain = FraudEngine(velocity=MemoryVelocityStore(), identifier_key=b"k" * 32, model=model)
    try:
        d = _pay_in(plain, db, "thb", 150_000)
        assert (d.risk_score, d.risk_level) == (None, "not_assessed")
    finally:
        plain.close()
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,usd_per_unit\nTHB,0.029\neur,1.10\n", encoding="utf-8")
    loaded = load_usd_rates(rates)
    assert loaded["thb"] == Decimal("0.029") and loaded["eur"] == Decimal("1.10")
    assert loaded["usd"] == Decimal(1)  # the built-in ones stay
    assert amount_in_usd_cents(150_000, "thb", loaded) == 4350
    e = FraudEngine(
        velocity=MemoryVelocityStore(), identifier_key=b"k" * 32, model=model, usd_rates=loaded
    )
    try:
        assert _pay_in(e, db, "thb", 150_000).risk_score is not None
    finally:
        e.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cur,rate\nthb,1\n", "first line"),
        ("currency,usd_per_unit\nxyz,1\n", ":2: 'xyz' is not a known currency"),
        ("currency,usd_per_unit\nthb,abc\n", ":2: 'abc' is not a number"),
        ("currency,usd_per_unit\n\nthb,-1\n", ":3: the rate must be above 0"),
        ("currency,usd_per_unit\nthb,NaN\n", ":2: the rate must be above 0"),
        ("currency,usd_per_unit\nthb,1,2\n", ":2: expected"),
        ("", "first line"),
    ],
)
def test_a_bad_rates_file_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RatesError, match=re.escape(message)):
        load_usd_rates(path)
    with pytest.raises(RatesError, match=re.escape("rates-missing.csv")):
        load_usd_rates(tmp_path / "rates-missing.csv")


def test_every_model_feature_has_words_for_reviewers() -> None:
    from paywarden.fraud.engine import _FEATURE_LABELS

    assert set(_FEATURE_LABELS) == set(FeatureState().names)


def test_test_mode_never_shapes_live_scores(engine: FraudEngine, db: Database) -> None:
    """The model's card and merchant history is kept per mode."""
    assert engine._features is not None
    names = engine._features.names
    for n, live in enumerate((False, False, True)):
        with db.write() as s:
            engine.assess(
                s,
                PaymentSignals(
                    account_id="acct_1",
                    livemode=live,
                    payment_intent_id=f"pi_mode{n}",
                    attempt_key=f"pi_mode{n}:0",
                    at=T0 + 3000 * 300.0 + n,
                    amount=5_000,
                    currency="usd",
                    card_fingerprint="card_modes",
                ),
            )
    later = T0 + 3000 * 300.0 + 10
    test_tx = Tx(tx_id="t", ts=later, customer=model_key("card_modes", False),
                 terminal=model_key("acct_1", False), amount=50)  # fmt: skip
    live_tx = Tx(tx_id="l", ts=later, customer=model_key("card_modes", True),
                 terminal=model_key("acct_1", True), amount=50)  # fmt: skip
    seen = names.index("customer_hist_nb_tx")
    assert engine._features.features(test_tx)[seen] == 2
    assert engine._features.features(live_tx)[seen] == 1
