"""Sealed keys: context binding, the vault's KMS adapter, the public API."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import paywarden.audit as audit
from paywarden.audit.errors import AuditKeyError
from paywarden.audit.sealing import FernetSealer, KmsSealer
from paywarden.audit.service import open_vault_audit
from paywarden.audit.verify import verify_store
from paywarden.config import Settings
from paywarden.vault.kms import LocalKeyring


def test_fernet_sealer_binds_the_context() -> None:
    sealer = FernetSealer(Fernet.generate_key())
    blob = sealer.seal(b"secret key", context=b"ctx/a")
    assert sealer.unseal(blob, context=b"ctx/a") == b"secret key"
    with pytest.raises(AuditKeyError):
        sealer.unseal(blob, context=b"ctx/b")
    with pytest.raises(AuditKeyError):
        FernetSealer(Fernet.generate_key()).unseal(blob, context=b"ctx/a")
    with pytest.raises(ValueError):
        sealer.seal(b"x", context=b"")
    assert "***" in repr(sealer)


def test_kms_sealer_wraps_with_the_vault_keyring(tmp_path: Path) -> None:
    kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
    sealer = KmsSealer(kms)
    blob = sealer.seal(b"k" * 32, context=b"paywarden/audit/x")
    assert sealer.unseal(blob, context=b"paywarden/audit/x") == b"k" * 32
    with pytest.raises(AuditKeyError):
        sealer.unseal(blob, context=b"paywarden/audit/y")
    assert not sealer.needs_reseal(blob)
    kms.rotate()
    assert sealer.needs_reseal(blob)


def test_vault_audit_log_reseals_before_the_old_kek_retires(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
    log = open_vault_audit(settings, kms, sign_interval=None)
    log.record(
        event="card.tokenized",
        outcome="success",
        actor=audit.Actor.service("gateway"),
        sensitive={"fingerprint": "fp_1"},
    )
    log.close()
    kms.rotate()
    log = open_vault_audit(settings, kms, sign_interval=None)
    assert log.reseal_keys() == 2  # the signing key and the pseudonym key
    log.close()
    kms.set_min_decryption_version(2)  # the old KEK no longer unwraps anything
    log = open_vault_audit(settings, kms, sign_interval=None)
    log.sign_tree_head()
    pseudonyms = {e.hmac.get("fingerprint") for e in log.entries()} - {None}
    log.record(
        event="card.tokenized",
        outcome="success",
        actor=audit.Actor.service("gateway"),
        sensitive={"fingerprint": "fp_1"},
    )
    assert {e.hmac.get("fingerprint") for e in log.entries()} - {None} == pseudonyms
    assert verify_store(log.store, service="vault").ok
    log.close()


def test_the_public_api_is_pinned() -> None:
    assert sorted(audit.__all__) == [
        "Actor",
        "AuditEntryError",
        "AuditError",
        "AuditKeyError",
        "AuditLog",
        "AuditWriteError",
        "ConsistencyProof",
        "Entry",
        "FernetSealer",
        "Finding",
        "InclusionProof",
        "KeySealer",
        "KmsSealer",
        "Origin",
        "Resource",
        "TreeHead",
        "VerifyReport",
        "open_gateway_audit",
        "open_vault_audit",
        "verify_store",
    ]
    assert issubclass(audit.AuditEntryError, audit.AuditWriteError)


def test_signing_key_ids_never_look_like_card_numbers(tmp_path: Path) -> None:
    # Key ids go into entries, whose guard refuses 13-digit runs: every id drawn
    # must pass it (about one random 16-hex id in a thousand would not).
    import re

    from paywarden.audit.signing import Signer
    from paywarden.audit.store import AuditStore
    from paywarden.core.secrets import Secret

    store = AuditStore(f"sqlite:///{tmp_path / 'ids.sqlite'}")
    sealer = FernetSealer(Secret(Fernet.generate_key().decode(), "storage_key"))
    signer = Signer(store, service="gateway", sealer=sealer)
    ids = [signer.load_or_create(now_ms=0)]
    ids += [signer.rotate(now_ms=i)[1] for i in range(1, 300)]
    assert not [k for k in ids if re.search(r"[0-9]{13}", k)]
    store.dispose()
