"""Audit log fixtures: a real SQLite store in a temporary directory, a movable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from paywarden.audit.entry import Actor
from paywarden.audit.log import AuditLog
from paywarden.audit.sealing import FernetSealer
from paywarden.audit.signing import Signer
from paywarden.audit.store import AuditStore


class Clock:
    """A UTC clock tests move by hand."""

    def __init__(self, start: datetime = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fernet_key() -> bytes:
    return Fernet.generate_key()


LogFactory = Callable[..., AuditLog]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite"


@pytest.fixture
def make_log(db_path: Path, fernet_key: bytes, clock: Clock) -> Iterator[LogFactory]:
    opened: list[AuditLog] = []

    def factory(**kw: Any) -> AuditLog:
        url = kw.pop("url", f"sqlite:///{db_path}")
        service = kw.pop("service", "gateway")
        store = AuditStore(url)
        signer = Signer(store, service=service, sealer=FernetSealer(fernet_key))
        options: dict[str, Any] = {
            "signer": signer,
            "pseudonym_key": b"p" * 32,
            "now": clock,
            "sign_interval": None,
        }
        options.update(kw)
        log = AuditLog(store, service=service, **options)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


def spec(i: int, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for one ordinary entry."""
    return {
        "event": "api_key.created",
        "outcome": "success",
        "actor": Actor.api_key(f"key_{i % 7}"),
        "details": {"i": i},
        **extra,
    }
