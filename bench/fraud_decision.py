"""Latency of the whole in-process fraud decision, as confirm runs it.

``FraudEngine.assess`` inside a gateway database transaction: signals (GeoIP,
device token, email HMAC), velocity record-and-snapshot, model score with
reasons, the merchant's rules and lists read from the database and applied with
the built-in ones. Baseline in the same run: the same transaction with only the
rules and lists read (no decision), so the ratio shows what the engine adds.

    taskset -c 0 .venv/bin/python bench/fraud_decision.py [--n 3000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paywarden.db import Database
from paywarden.fraud import admin
from paywarden.fraud.engine import DEFAULT_MODEL_PATH, FraudEngine, PaymentSignals
from paywarden.fraud.features import FeatureState
from paywarden.fraud.model import RiskModel
from paywarden.fraud.signals import DeviceTokens, IpGeo
from paywarden.fraud.velocity import MemoryVelocityStore, VelocityStore
from paywarden.fraud.velocity_sqlite import SqliteVelocityStore
from paywarden.migrations import upgrade

RULES = [
    "Block if :card_country: != :ip_country: and :amount_in_usd: > 500",
    "Review if :card_count_for_ip_address_daily: > 3",
    "Request 3DS if :risk_level: = 'elevated'",
    "Allow if :customer: in @trusted_customers",
    "Block if :email_domain: in @bad_domains",
    "Review if :total_charges_per_card_number_hourly: > 5",
    "Block if :ip_country: in ('KP', 'IR') and :amount_in_usd: > 50",
    "Review if :declined_charges_per_email_daily: > 2",
]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e6, q[98] * 1e6


def _setup(home: Path) -> Database:
    url = f"sqlite:///{home / 'gw.db'}"
    upgrade(url)
    db = Database(url)
    with db.write() as s:
        for alias in ("trusted_customers", "bad_domains"):
            vl = admin.create_list(
                s, account_id="acct_b", livemode=False, now=0, actor="bench",
                alias=alias, name=alias, item_type="string", metadata={},
            )  # fmt: skip
            for i in range(200):
                admin.add_item(s, vl=vl, value=f"{alias}-{i}", now=0, actor="bench")
        for i, text in enumerate(RULES):
            from paywarden.fraud.models import FraudRule

            s.add(
                FraudRule(
                    id=f"rule_b{i}", account_id="acct_b", livemode=False, created=0,
                    action=text.split(" if ")[0].lower().replace(" ", "_"), source=text,
                    mode="shadow" if i % 4 == 3 else "active", enabled=True, version=1,
                    updated=0,
                )
            )  # fmt: skip
    return db


def _run(db: Database, step: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    db = _setup(home)
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=FeatureState().names)
    tokens = DeviceTokens(b"d" * 32)
    token = tokens.issue({"screen": "1920x1080", "platform": "Linux"}, now=time.time())
    rng = random.Random(1)
    ips = [f"81.2.69.{i}" for i in range(1, 200)]

    def signals(i: int) -> PaymentSignals:
        return PaymentSignals(
            account_id="acct_b", livemode=False, payment_intent_id=f"pi_{i}",
            attempt_key=f"pi_{i}:0", at=time.time(), amount=rng.randint(500, 20000),
            currency="usd", card_fingerprint=f"card{rng.randint(0, 500)}",
            card_country="US", customer=f"cus_{rng.randint(0, 300)}",
            email=f"user{rng.randint(0, 300)}@example.com", ip_address=rng.choice(ips),
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
            accept_language="en-GB,en;q=0.9", device_token=token,
        )  # fmt: skip

    def baseline(i: int) -> object:
        with db.write() as s:
            admin.active_rules(s, account_id="acct_b", livemode=False)
            return admin.list_hits(
                s, account_id="acct_b", livemode=False, values=["user1@example.com", "US"]
            )

    results = {}
    results["baseline: transaction + rules/lists read"] = _run(db, baseline, args.n)
    stores: list[tuple[str, VelocityStore]] = [
        ("decision, velocity in memory", MemoryVelocityStore()),
        ("decision, velocity SQLite write-through", SqliteVelocityStore(home / "vel.db")),
    ]
    for name, store in stores:
        engine = FraudEngine(
            velocity=store, identifier_key=b"k" * 32, ipgeo=IpGeo.open(None),
            device_tokens=tokens, model=model,
        )  # fmt: skip

        def decide(i: int, engine: FraudEngine = engine) -> object:
            with db.write() as s:
                return engine.assess(s, signals(i))

        _run(db, decide, 200)  # warm
        results[name] = _run(db, decide, args.n)
        engine.close()
    base = _percentiles(results["baseline: transaction + rules/lists read"])
    today = dt.datetime.now(dt.UTC).date()
    print(f"# fraud decision latency, {today}, {platform.processor() or platform.machine()}")
    print(f"{'case':<45} {'p50 µs':>8} {'p99 µs':>8} {'p99 / baseline p99':>20}")
    for name, samples in results.items():
        p50, p99 = _percentiles(samples)
        print(f"{name:<45} {p50:>8.0f} {p99:>8.0f} {p99 / base[1]:>20.2f}")


if __name__ == "__main__":
    main()
