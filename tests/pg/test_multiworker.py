"""Several gateway worker processes on one PostgreSQL database stay correct.

Three real uvicorn processes share one schema; requests on the same objects are
spread across them at once. Idempotency, state transitions and capture/refund
totals must hold exactly as with one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paywarden.config import load_or_create_secrets
from paywarden.customers.models import Customer
from paywarden.db import Database
from paywarden.migrations import upgrade
from paywarden.payments.models import Charge, Refund
from paywarden.tenancy import service as tenancy
from tests.conftest import ACQUIRER_TOKEN, Acquirers, flatten, pg_schema

pytestmark = pytest.mark.pg
WORKERS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    urls: list[str]
    key: str
    db: Database

    def post(
        self, i: int, path: str, data: dict[str, Any] | None = None, idem: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        if idem:
            headers["Idempotency-Key"] = idem
        return httpx.post(
            self.urls[i % len(self.urls)] + path,
            data=flatten(data or {}),
            headers=headers,
            timeout=30,
        )


@pytest.fixture
def cluster(tmp_path: Path, clean_acquirers: Acquirers) -> Iterator[Cluster]:
    with pg_schema() as url:
        home = tmp_path / "home"
        home.mkdir(mode=0o700)
        fd = os.open(home / "secrets.json", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "api_key_pepper": "pepper-" + "p" * 24,
                    "storage_key": "Jm2q5t7Yp0bT0B4x3rUvzQ8s0a1c2d3e4f5g6h7i8j8=",
                    "acquirer_token": ACQUIRER_TOKEN,
                },
                fh,
            )
        secrets = load_or_create_secrets(home)
        upgrade(url)
        db = Database(url)
        with db.write() as s:
            acct = tenancy.create_account(s, name="Multi", email=None, now=int(time.time()))
            key = tenancy.create_key(
                s,
                account_id=acct.id,
                kind="secret",
                livemode=False,
                pepper=secrets.api_key_pepper,
                now=int(time.time()),
            )
            raw = key.secret.reveal()
        acq = [
            {"name": n, "url": u, "priority": i}
            for i, (n, u) in enumerate(clean_acquirers.urls.items())
        ]
        procs, urls = [], []
        log_path = tmp_path / "workers.log"
        log = log_path.open("ab")
        for _ in range(WORKERS):
            port = _free_port()
            env = {
                **os.environ,
                "PAYWARDEN_HOME": str(home),
                "PAYWARDEN_DATABASE_URL": url,
                "PAYWARDEN_ACQUIRERS": json.dumps(acq),
                "PAYWARDEN_PORT": str(port),
                "PAYWARDEN_LOG_LEVEL": "WARNING",
            }
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "paywarden.gateway.asgi:app_factory",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        try:
            for u, p in zip(urls, procs, strict=True):
                deadline = time.monotonic() + 30
                while True:
                    assert p.poll() is None, log_path.read_text()
                    try:
                        if httpx.get(u + "/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "worker did not start"
                    time.sleep(0.1)
            yield Cluster(urls, raw, db)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
            log.close()
            db.dispose()


def _count(db: Database, model: type, *where: Any) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_concurrent_confirms_across_workers(cluster: Cluster) -> None:
    pi = cluster.post(
        0,
        "/v1/payment_intents",
        {"amount": 900, "currency": "usd", "payment_method": "pm_card_visa"},
    ).json()
    with ThreadPoolExecutor(12) as ex:
        codes = list(
            ex.map(
                lambda i: cluster.post(i, f"/v1/payment_intents/{pi['id']}/confirm").status_code,
                range(24),
            )
        )
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 400}
    assert _count(cluster.db, Charge, Charge.payment_intent_id == pi["id"]) == 1


def test_concurrent_captures_and_refunds_across_workers(cluster: Cluster) -> None:
    pi = cluster.post(
        0,
        "/v1/payment_intents",
        {
            "amount": 1000,
            "currency": "usd",
            "confirm": True,
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
        },
    ).json()
    assert pi["status"] == "requires_capture"
    with ThreadPoolExecutor(9) as ex:
        caps = list(
            ex.map(
                lambda i: (
                    cluster.post(
                        i, f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": 900}
                    ).status_code
                ),
                range(9),
            )
        )
    assert caps.count(200) == 1
    with ThreadPoolExecutor(12) as ex:
        refs = list(
            ex.map(
                lambda i: (
                    cluster.post(
                        i, "/v1/refunds", {"payment_intent": pi["id"], "amount": 250}
                    ).status_code
                ),
                range(12),
            )
        )
    assert refs.count(200) == 3  # 3 x 250 <= 900 < 4 x 250
    with cluster.db.read() as s:
        total = s.scalar(
            select(func.sum(Refund.amount)).where(Refund.payment_intent_id == pi["id"])
        )
        ch = s.scalar(select(Charge).where(Charge.payment_intent_id == pi["id"]))
    assert total == 750
    assert ch is not None
    assert ch.amount_captured == 900
    assert ch.amount_refunded == 750


def test_idempotency_key_across_workers(cluster: Cluster) -> None:
    with ThreadPoolExecutor(12) as ex:
        rs = list(
            ex.map(
                lambda i: cluster.post(
                    i, "/v1/customers", {"email": "x@example.com"}, idem="multi-key"
                ),
                range(12),
            )
        )
    assert {r.status_code for r in rs} <= {200, 409}
    ids = {r.json()["id"] for r in rs if r.status_code == 200}
    assert len(ids) == 1
    assert _count(cluster.db, Customer) == 1
