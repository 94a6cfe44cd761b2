"""Latency of the whole in-process fraud decision, as confirm runs it.

``FraudEngine.assess`` inside a gateway database transaction: signals (GeoIP,
device token, email HMAC), velocity record-and-snapshot (and, for a block, the
blocked outcome), model score with reasons, the merchant's rules and lists read
from the database and applied with the built-in ones.

Two timings per payment: the decision itself (``assess``, which is what confirm
waits for before it calls the acquirer) and the whole gateway transaction around
it (BEGIN IMMEDIATE, decision, COMMIT). Baseline in the same run: the same
transaction with only the rules read and one list lookup, so the ratio shows
what the engine adds. Payments come from 20,000 cards, 5,000 customers and
emails, 10,000 devices and 30,000 IP addresses, so most are allowed and a few per cent are
blocked by the built-in card-testing rules.

The garbage collector is tuned as in the gateway process
(:func:`paywarden.core.gctune.tune_for_service`, after set-up);
``PAYWARDEN_GC_DEFAULTS=1`` keeps CPython's defaults.

    taskset -c 0 .venv/bin/python bench/fraud_decision.py [--n 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from paywarden.core.gctune import tune_for_service
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


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=1000)
    return q[499] * 1e6, q[989] * 1e6, q[998] * 1e6


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


def _run(step: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    db = _setup(home)
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=FeatureState().names)
    tokens = DeviceTokens(b"d" * 32)
    devices = [
        tokens.issue({"screen": f"{1000 + k}x1080", "platform": "Linux"}, now=time.time())
        for k in range(10_000)
    ]
    rng = random.Random(1)
    ips = [f"81.2.{i // 250}.{1 + i % 250}" for i in range(30_000)]

    def signals(i: int) -> PaymentSignals:
        return PaymentSignals(
            account_id="acct_b", livemode=False, payment_intent_id=f"pi_{i}",
            attempt_key=f"pi_{i}:0", at=time.time(), amount=rng.randint(500, 20000),
            currency="usd", card_fingerprint=f"card{rng.randint(0, 20_000)}",
            card_country="US", customer=f"cus_{rng.randint(0, 5000)}",
            email=f"user{rng.randint(0, 5000)}@example.com", ip_address=rng.choice(ips),
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
            accept_language="en-GB,en;q=0.9", device_token=rng.choice(devices),
        )  # fmt: skip

    def baseline(i: int) -> object:
        with db.write() as s:
            admin.active_rules(s, account_id="acct_b", livemode=False)
            return admin.list_hits(
                s, account_id="acct_b", livemode=False, values=["user1@example.com", "US"]
            )

    tune_for_service()
    results: dict[str, list[float]] = {}
    results["baseline: transaction + rules read + list lookup"] = _run(baseline, args.n)
    stores: list[tuple[str, VelocityStore]] = [
        ("velocity in memory", MemoryVelocityStore()),
        ("velocity SQLite write-through (single-node default)", SqliteVelocityStore(home / "v.db")),
    ]
    actions: dict[str, Counter[str]] = {}
    for name, store in stores:
        engine = FraudEngine(
            velocity=store, identifier_key=b"k" * 32, ipgeo=IpGeo.open(None),
            device_tokens=tokens, model=model,
        )  # fmt: skip
        inner: list[float] = []
        seen: Counter[str] = Counter()

        def decide(
            i: int,
            engine: FraudEngine = engine,
            inner: list[float] = inner,
            seen: Counter[str] = seen,
        ) -> object:
            sig = signals(i)
            with db.write() as s:
                s.connection()  # confirm has already begun its transaction (and read the intent)
                t = time.perf_counter()
                decision = engine.assess(s, sig)
                inner.append(time.perf_counter() - t)
            seen[f"{decision.action} ({decision.rule_id})"] += 1
            return decision

        _run(decide, 500)  # warm
        inner.clear()
        seen.clear()
        whole = _run(decide, args.n)
        results[f"decision ({name})"] = list(inner)
        results[f"transaction with the decision ({name})"] = whole
        actions[name] = Counter(seen)
        engine.close()
    base = _percentiles(results["baseline: transaction + rules read + list lookup"])
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    print(f"# fraud decision latency, {now}, {cpu}, n={args.n}")
    print("| case | p50 µs | p99 µs | p99.9 µs | p99 / baseline p99 |")
    print("|---|---|---|---|---|")
    for name, samples in results.items():
        p50, p99, p999 = _percentiles(samples)
        print(f"| {name} | {p50:,.0f} | {p99:,.0f} | {p999:,.0f} | {p99 / base[1]:.2f} |")
    for name, seen in actions.items():
        print(f"actions, {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))


if __name__ == "__main__":
    main()
