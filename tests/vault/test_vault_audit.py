"""The vault's audit log: every card access is on the record before it happens,
and an access that cannot be recorded does not happen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paywarden.audit import verify_store
from paywarden.core.clock import FrozenClock
from paywarden.vault.bins import BinTable
from paywarden.vault.kms import LocalKeyring
from paywarden.vault.models import VaultCard
from paywarden.vault.server import vault_database
from paywarden.vault.service import VaultError, VaultPolicy, VaultService
from tests.vault.conftest import vault_audit_log
from tests.vault.test_service import START, VISA, tokenize


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[VaultService]:
    kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
    audit = vault_audit_log(tmp_path, kms)
    service = VaultService(
        db=vault_database(f"sqlite:///{tmp_path / 'vault.db'}"),
        kms=kms,
        bins=BinTable.load_default(),
        clock=FrozenClock(START),
        policy=VaultPolicy(),
        destinations={},
        audit=audit,
    )
    yield service
    service.close()
    service.db.dispose()


def _events(svc: VaultService) -> list[str]:
    assert svc.audit is not None
    return [e.event for e in svc.audit.entries()]


def test_card_access_and_key_changes_are_in_the_merkle_log(svc: VaultService) -> None:
    meta = tokenize(svc)
    svc.reveal(
        token=meta.token, account_id="acct_1", actor="operator", reason="chargeback evidence #1"
    )
    svc.rotate_kek(actor="operator", reason="annual rotation")
    svc.rewrap_batch(actor="operator")
    events = _events(svc)
    assert events[0] == "audit.started"
    for expected in ("vault.tokenize", "vault.reveal", "vault.kek_rotate"):
        assert expected in events
    assert svc.audit is not None
    entry = next(e for e in svc.audit.entries() if e.event == "vault.reveal")
    assert entry.actor == {"type": "operator", "id": "operator"}
    assert entry.resource == {"type": "card", "id": meta.token}
    assert entry.reason == "chargeback evidence #1"
    svc.audit.sign_tree_head()
    assert verify_store(svc.audit.store, service="vault").ok
    raw = b"".join(body for _, body in svc.audit.raw_entries())
    assert VISA.encode() not in raw and VISA[-8:].encode() not in raw


def test_no_unaudited_card_access(svc: VaultService) -> None:
    tokenize(svc)
    assert svc.audit is not None
    svc.audit.close()  # the log can no longer take entries
    with pytest.raises(VaultError) as caught:
        tokenize(svc, number="5555555555554444")
    assert caught.value.status == 503 and caught.value.code == "audit_unavailable"
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VaultCard)) == 1  # nothing stored
