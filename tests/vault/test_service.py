"""The vault's service layer with its real database and a real local keyring,
on a clock the tests move."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paywarden.core.clock import FrozenClock
from paywarden.core.secrets import Secret
from paywarden.vault.bins import BinTable
from paywarden.vault.cards import CardValidationError
from paywarden.vault.crypto import aead, hpke
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.kms import KeyManager, LocalKeyring, TransitKms, WrappedKey
from paywarden.vault.models import (
    VaultAccessLog,
    VaultCard,
    VaultCvc,
    VaultHpkeKey,
    VaultHpkeSeen,
)
from paywarden.vault.server import vault_database
from paywarden.vault.service import NotFound, VaultError, VaultPolicy, VaultService
from tests.conftest import pg_schema

VISA = "4242424242424242"
START = 1_790_000_000.0  # 2026-09-21


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture(
    params=[
        "sqlite-local",
        pytest.param("postgresql-local", marks=pytest.mark.pg),
        "sqlite-transit",
    ]
)
def svc(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> Iterator[VaultService]:
    """The vault's own database on SQLite or PostgreSQL; KEKs in the local
    keyring or in a real OpenBao server's Transit engine."""
    store, backend = request.param.split("-")
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'vault.db'}"
        if store == "postgresql":
            url = stack.enter_context(pg_schema())
        kms: KeyManager
        if backend == "transit":
            bao = request.getfixturevalue("openbao")
            kms = TransitKms(
                bao.url, Secret(bao.token, "token"), key_name=f"kek-{uuid.uuid4().hex[:8]}"
            )
        else:
            kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
        yield from _service(url, kms, clock)


def _service(url: str, kms: KeyManager, clock: FrozenClock) -> Iterator[VaultService]:
    service = VaultService(
        db=vault_database(url),
        kms=kms,
        bins=BinTable.load_default(),
        clock=clock,
        policy=VaultPolicy(cvc_ttl_seconds=600, hpke_overlap_seconds=3600),
        destinations={},
    )
    yield service
    service.close()
    service.db.dispose()


def tokenize(svc: VaultService, account: str = "acct_1", number: str = VISA, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"exp_month": 12, "exp_year": 2034, "cvc": "123", **kw}
    return svc.tokenize(account_id=account, number=number, actor="gateway", **args)  # type: ignore[arg-type]


def test_tokenize_keeps_only_ciphertext_and_display_data(svc: VaultService) -> None:
    meta = tokenize(svc)
    assert meta.token.startswith("vtok_")
    assert (meta.brand, meta.bin, meta.last4) == ("visa", "424242", "4242")
    with svc.db.read() as s:
        row = s.scalar(select(VaultCard).where(VaultCard.token == meta.token))
        assert row is not None
        assert VISA.encode() not in row.ciphertext
        assert row.wrapped_key is not None
        assert s.get(VaultCvc, meta.token) is not None


def test_fingerprint_is_per_tenant(svc: VaultService) -> None:
    a1 = tokenize(svc, "acct_1").fingerprint
    assert tokenize(svc, "acct_1").fingerprint == a1
    assert svc.fingerprint(account_id="acct_1", number=VISA, actor="gateway") == a1
    assert tokenize(svc, "acct_2").fingerprint != a1


def test_invalid_cards_are_card_errors_without_echo(svc: VaultService) -> None:
    with pytest.raises(CardValidationError) as exc:
        tokenize(svc, number="4242424242424241")
    assert exc.value.code == "incorrect_number"
    assert "424242424242424" not in str(exc.value) + repr(exc.value)


def test_ciphertext_is_bound_to_record_and_tenant(svc: VaultService) -> None:
    a, b = tokenize(svc, "acct_1"), tokenize(svc, "acct_1", number="5555555555554444")
    with svc.db.write() as s:
        ra = s.scalar(select(VaultCard).where(VaultCard.token == a.token))
        rb = s.scalar(select(VaultCard).where(VaultCard.token == b.token))
        assert ra is not None and rb is not None
        # Swap the ciphertexts: neither opens under the other's record.
        ra.ciphertext, rb.ciphertext = rb.ciphertext, ra.ciphertext
    with svc.db.read() as s:
        row = s.scalar(select(VaultCard).where(VaultCard.token == a.token))
    assert row is not None
    with pytest.raises(DecryptionError):
        svc._open_card(row)


def test_reveal_needs_a_reason_and_is_logged(svc: VaultService) -> None:
    meta = tokenize(svc)
    with pytest.raises(VaultError):
        svc.reveal(token=meta.token, account_id=None, actor="operator", reason="")
    out = svc.reveal(
        token=meta.token, account_id=None, actor="operator", reason="chargeback evidence #12"
    )
    assert out["number"] == VISA
    reveals = svc.access_log(action="reveal")
    assert [(r["actor"], r["reason"]) for r in reveals] == [("operator", "chargeback evidence #12")]


def test_shredded_card_can_never_be_opened_again(svc: VaultService) -> None:
    meta = tokenize(svc)
    with svc.db.read() as s:
        row = s.scalar(select(VaultCard).where(VaultCard.token == meta.token))
        assert row is not None
        ciphertext, version, blob = row.ciphertext, row.kek_version, row.wrapped_key
    assert svc.shred(token=meta.token, account_id="acct_1", actor="gateway", reason="detached")
    with svc.db.read() as s:
        row = s.scalar(select(VaultCard).where(VaultCard.token == meta.token))
        assert row is not None
        assert row.wrapped_key is None and row.kek_version is None
        assert row.ciphertext == ciphertext
        assert s.get(VaultCvc, meta.token) is None
    with pytest.raises(NotFound):
        svc.reveal(token=meta.token, account_id=None, actor="operator", reason="just checking")
    # Even someone who kept a copy of the old wrapped key and every KEK cannot
    # open it with the wrong data key; and without the copy there is no key at all.
    with pytest.raises(DecryptionError):
        aead.open_sealed(aead.generate_key(), ciphertext, aad=b"card|x|acct_1")
    assert version is not None and blob is not None


def test_hpke_rotation_overlap(svc: VaultService, clock: FrozenClock) -> None:
    svc.ensure_hpke_key()
    old = svc.encryption_keys()[0]
    blob = seal(old, iat=int(clock.now()))
    blob2 = seal(old, iat=int(clock.now()))
    new_id = svc.rotate_hpke(actor="operator")
    assert [k["id"] for k in svc.encryption_keys()] == [new_id]
    # Still accepted during the overlap...
    meta = svc.tokenize_encrypted(
        account_id="acct_1", key_id=old["id"], payload=blob, actor="gateway"
    )
    assert meta.last4 == "4242"
    # ...and refused after it, for good once the sweep destroys the key.
    clock.advance(3601)
    with pytest.raises(VaultError) as exc:
        svc.tokenize_encrypted(
            account_id="acct_1", key_id=old["id"], payload=blob2, actor="gateway"
        )
    assert exc.value.code == "encrypted_card_invalid"
    assert svc.sweep()["hpke_keys_destroyed"] == 1
    with svc.db.read() as s:
        row = s.scalar(select(VaultHpkeKey).where(VaultHpkeKey.id == old["id"]))
        assert row is not None and row.wrapped_private_key == b""


def seal(
    key: dict[str, str], *, iat: int, account: str | None = "acct_1", number: str = VISA
) -> str:
    card: dict[str, object] = {
        "number": number,
        "exp_month": 1,
        "exp_year": 2030,
        "cvc": "999",
        "iat": iat,
    }
    if account is not None:
        card["account"] = account
    sealed = hpke.seal_to(
        base64.urlsafe_b64decode(key["public_key"] + "=="),
        json.dumps(card).encode(),
        info=hpke.info_for(key["id"]),
    )
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def test_an_encrypted_card_is_bound_to_its_account_time_and_single_use(
    svc: VaultService, clock: FrozenClock
) -> None:
    svc.ensure_hpke_key()
    key = svc.encryption_keys()[0]
    now = int(clock.now())

    def attempt(payload: str, account: str = "acct_1") -> str:
        try:
            svc.tokenize_encrypted(
                account_id=account, key_id=key["id"], payload=payload, actor="gateway"
            )
        except VaultError as exc:
            return exc.code
        return "ok"

    good = seal(key, iat=now)
    assert attempt(good, account="acct_2") == "encrypted_card_invalid"  # another merchant
    assert attempt(good) == "ok"
    assert attempt(good) == "encrypted_card_reused"  # once only
    assert attempt(seal(key, iat=now, account=None)) == "encrypted_card_invalid"
    assert attempt(seal(key, iat=now - 3601)) == "encrypted_card_invalid"  # too old
    assert attempt(seal(key, iat=now + 301)) == "encrypted_card_invalid"  # from the future
    assert attempt(seal(key, iat=now - 60)) == "ok"
    # The replay memory is swept once the payloads could no longer be accepted.
    clock.advance(3601)
    svc.sweep()
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VaultHpkeSeen)) == 0


def test_short_numbers_do_not_give_the_gateway_their_bin(svc: VaultService) -> None:
    assert tokenize(svc, number="4222222222222").bin is None  # 13 digits
    assert tokenize(svc, number=VISA).bin == "424242"


def test_acquirer_answers_are_scrubbed_of_the_card_number() -> None:
    from paywarden.vault.service import _scrub

    answer = {"id": "auth_1", "echo": {"card": "4242 4242 4242 4242", "raw": VISA}, "n": 1}
    out = _scrub(answer, VISA)
    assert VISA not in json.dumps(out)
    assert "4242 4242 4242 4242" not in json.dumps(out)
    assert out["echo"]["raw"] == "424242******4242"
    assert _scrub({"ok": True}, VISA) == {"ok": True}


def test_hpke_key_rotates_after_its_cryptoperiod(svc: VaultService, clock: FrozenClock) -> None:
    svc.ensure_hpke_key()
    first = svc.encryption_keys()[0]["id"]
    svc.ensure_hpke_key()
    assert svc.encryption_keys()[0]["id"] == first
    clock.advance(svc.policy.hpke_cryptoperiod_seconds + 1)
    svc.ensure_hpke_key()
    assert svc.encryption_keys()[0]["id"] != first


def test_rotate_rewrap_retire(svc: VaultService) -> None:
    metas = [tokenize(svc, f"acct_{i % 3}") for i in range(7)]
    svc.ensure_hpke_key()
    v2 = svc.rotate_kek(actor="operator")
    with pytest.raises(VaultError) as exc:
        svc.retire_below(version=v2, actor="operator")
    assert exc.value.code == "rewrap_required"
    # Interrupted rewrap: small batches, each resumes where the last stopped.
    first = svc.rewrap_batch(actor="operator", limit=2)
    assert first["rewrapped"] >= 2 and first["remaining"] > 0
    while svc.rewrap_batch(actor="operator", limit=2)["remaining"]:
        pass
    assert svc.records_below(v2) == 0
    svc.retire_below(version=v2, actor="operator")
    status = svc.key_status()
    assert status["kek"]["current_version"] == v2
    assert status["kek"]["min_decryption_version"] == v2
    assert status["kek"]["versions"][-1]["protects"]["cards"] == 7
    for m in metas:
        out = svc.reveal(token=m.token, account_id=None, actor="operator", reason="rewrap check")
        assert out["number"] == VISA


def test_sweep_drops_expired_cvcs_and_shreds_long_expired_cards(
    svc: VaultService, clock: FrozenClock
) -> None:
    fresh = tokenize(svc)
    old = tokenize(svc, exp_month=10, exp_year=2026)
    clock.advance(601)
    assert svc.sweep()["cvcs_dropped"] == 2
    with svc.db.read() as s:
        assert s.get(VaultCvc, fresh.token) is None
    clock.advance(200 * 86400)  # well past Oct 2026 + 90 days
    assert svc.sweep()["cards_shredded"] == 1
    with svc.db.read() as s:
        shredded = s.scalar(select(VaultCard.shredded_at).where(VaultCard.token == old.token))
        kept = s.scalar(select(VaultCard.shredded_at).where(VaultCard.token == fresh.token))
    assert shredded is not None and kept is None


def test_every_card_operation_is_logged(svc: VaultService) -> None:
    meta = tokenize(svc)
    svc.shred(token=meta.token, account_id="acct_1", actor="gateway", reason="deleted")
    with svc.db.read() as s:
        actions = list(s.scalars(select(VaultAccessLog.action).order_by(VaultAccessLog.pk)))
    assert actions[-2:] == ["tokenize", "shred"]


def test_wrapped_key_of_another_record_does_not_open(svc: VaultService) -> None:
    a, b = tokenize(svc), tokenize(svc)
    with svc.db.read() as s:
        rb = s.scalar(select(VaultCard).where(VaultCard.token == b.token))
        assert rb is not None and rb.kek_version is not None and rb.wrapped_key is not None
        wrapped = WrappedKey(rb.kek_version, rb.wrapped_key)
    with pytest.raises(DecryptionError):
        svc.kms.unwrap(wrapped, context=f"card|{a.token}|acct_1".encode())
