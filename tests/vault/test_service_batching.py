"""Tokenization's group commit on the vault's real database and audit log:
concurrent calls share a transaction, each item succeeds or fails alone, and
a call returns only once its card and its audit entry are durable."""

from __future__ import annotations

import base64
import hmac
import json
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from paywarden.audit import AuditLog
from paywarden.core.clock import FrozenClock
from paywarden.db import Database
from paywarden.vault.bins import BinTable
from paywarden.vault.crypto import hpke
from paywarden.vault.kms import LocalKeyring
from paywarden.vault.models import VaultAccessLog, VaultCard, VaultCvc, VaultHpkeSeen
from paywarden.vault.server import vault_database
from paywarden.vault.service import (
    CardMetadata,
    VaultError,
    VaultPolicy,
    VaultService,
    _card_record,
)
from tests.vault.conftest import vault_audit_log
from tests.vault.test_service import START, VISA, seal

MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
WAIT = 10.0


def _service(tmp_path: Path, clock: FrozenClock, *, audit: AuditLog | None) -> VaultService:
    kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
    return VaultService(
        db=vault_database(f"sqlite:///{tmp_path / 'vault.db'}"),
        kms=kms,
        bins=BinTable.load_default(),
        clock=clock,
        policy=VaultPolicy(cvc_ttl_seconds=600, hpke_overlap_seconds=3600),
        destinations={},
        audit=audit,
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def svc(tmp_path: Path, clock: FrozenClock) -> Iterator[VaultService]:
    kms = LocalKeyring.open(tmp_path / "keyring.json", b"m" * 32)
    audit = vault_audit_log(tmp_path, kms)
    service = _service(tmp_path, clock, audit=audit)
    yield service
    service.close()
    service.db.dispose()


class Held:
    """Holds the vault's next batch commit open until released, so the calls
    made meanwhile queue up and form the following batch."""

    def __init__(self, svc: VaultService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        original = svc._write_tokenizations

        def write(batch: Any, outcomes: Any) -> None:
            self.batches.append(len(batch))
            if len(self.batches) == 1:
                self.entered.set()
                assert self.release.wait(WAIT)
            original(batch, outcomes)

        monkeypatch.setattr(svc, "_write_tokenizations", write)
        self.svc = svc

    def run(self, first: Callable[[], Any], calls: list[Callable[[], Any]]) -> list[Any]:
        """``first`` opens the held batch; ``calls`` queue behind it, in order."""
        results: list[Any] = [None] * (len(calls) + 1)

        def call(k: int, fn: Callable[[], Any]) -> None:
            try:
                results[k] = fn()
            except Exception as exc:
                results[k] = exc

        threads = [threading.Thread(target=call, args=(0, first))]
        threads[0].start()
        assert self.entered.wait(WAIT)
        for k, fn in enumerate(calls, start=1):
            t = threading.Thread(target=call, args=(k, fn))
            t.start()
            threads.append(t)
            deadline = time.monotonic() + WAIT
            while len(self.svc._tokenizations._queue) < k:
                assert time.monotonic() < deadline
                time.sleep(0.001)
        self.release.set()
        for t in threads:
            t.join(WAIT)
        return results


def card(svc: VaultService, number: str = VISA, **kw: Any) -> Callable[[], CardMetadata]:
    args: dict[str, Any] = {"exp_month": 12, "exp_year": 2034, "cvc": "123", **kw}
    if number == AMEX:
        args["cvc"] = "1234"
    return lambda: svc.tokenize(account_id="acct_1", number=number, actor="gateway", **args)


def encrypted(svc: VaultService, key: dict[str, Any], payload: str) -> Callable[[], CardMetadata]:
    return lambda: svc.tokenize_encrypted(
        account_id="acct_1", key_id=key["id"], payload=payload, actor="gateway"
    )


def _tokens_in_audit(svc: VaultService) -> list[str]:
    assert svc.audit is not None
    return [
        e.resource["id"]
        for e in svc.audit.entries()
        if e.event == "vault.tokenize" and e.resource is not None
    ]


def test_one_batch_fails_only_its_bad_items_and_keeps_their_order(
    svc: VaultService, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc.ensure_hpke_key()
    key = svc.encryption_keys()[0]
    payload = seal(key, iat=int(clock.now()))
    held = Held(svc, monkeypatch)
    results = held.run(
        card(svc),
        [
            card(svc, MASTERCARD),
            encrypted(svc, key, payload),
            encrypted(svc, key, payload),  # the same payload again, in the same batch
            # An audit entry the log refuses (a card number in it): only this call fails.
            card(svc, request_id="req_" + VISA),
            card(svc, AMEX),
        ],
    )
    assert held.batches[:2] == [1, 5]
    first, master, hpke_ok, replay, refused, amex = results
    assert isinstance(replay, VaultError) and replay.code == "encrypted_card_reused"
    assert isinstance(refused, VaultError) and refused.code == "audit_unavailable"
    ok = [first, master, hpke_ok, amex]
    assert all(isinstance(r, CardMetadata) for r in ok)
    assert [r.brand for r in ok] == ["visa", "mastercard", "visa", "amex"]
    with svc.db.read() as s:
        stored = s.scalars(select(VaultCard.token).order_by(VaultCard.pk)).all()
        logged = s.scalars(
            select(VaultAccessLog.token)
            .where(VaultAccessLog.action == "tokenize")
            .order_by(VaultAccessLog.pk)
        ).all()
        assert s.scalar(select(func.count()).select_from(VaultHpkeSeen)) == 1
        assert s.scalar(select(func.count()).select_from(VaultCvc)) == 4
    # Stored, logged and audited: exactly the successes, in the order of the calls.
    tokens = [r.token for r in ok]
    assert list(stored) == list(logged) == _tokens_in_audit(svc) == tokens


def test_an_unavailable_audit_log_fails_the_whole_batch(
    svc: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(svc, monkeypatch)
    assert svc.audit is not None
    audit = svc.audit

    def closing() -> CardMetadata:
        audit.close()  # before the batch behind the held one commits
        return card(svc)()

    results = held.run(closing, [card(svc, MASTERCARD), card(svc, AMEX)])
    assert held.batches[1] == 2
    for r in results:
        assert isinstance(r, VaultError) and r.code == "audit_unavailable"
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VaultCard)) == 0


def test_concurrent_tokenizations_are_durable_when_they_return(
    svc: VaultService, tmp_path: Path
) -> None:
    tokens: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(10):
                meta = card(svc)()
                # Seen at once by a connection of its own: committed, not just flushed.
                other = Database(f"sqlite:///{tmp_path / 'vault.db'}", sqlite_journal_mode="DELETE")
                try:
                    with other.read() as s:
                        assert s.scalar(select(VaultCard.pk).where(VaultCard.token == meta.token))
                finally:
                    other.dispose()
                with lock:
                    tokens.append(meta.token)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(tokens)) == 80
    assert sorted(_tokens_in_audit(svc)) == sorted(tokens)


def test_hpke_path_reads_no_key_row_once_the_key_is_cached(
    svc: VaultService, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc.ensure_hpke_key()
    key = svc.encryption_keys()[0]
    encrypted(svc, key, seal(key, iat=int(clock.now())))()

    def no_reads() -> Any:
        raise AssertionError("a read transaction on the HPKE path")

    monkeypatch.setattr(svc.db, "read", no_reads)
    meta = encrypted(svc, key, seal(key, iat=int(clock.now())))()
    assert meta.last4 == "4242"


def test_a_rotation_elsewhere_ends_the_overlap_despite_the_cache(
    tmp_path: Path, clock: FrozenClock
) -> None:
    """Another vault process on the same database rotates the key: this one's
    cache still says "accepted", but the write transaction reads the row."""
    here = _service(tmp_path, clock, audit=None)
    there = _service(tmp_path, clock, audit=None)
    try:
        here.ensure_hpke_key()
        key = here.encryption_keys()[0]
        encrypted(here, key, seal(key, iat=int(clock.now())))()  # cached: no end yet
        there.rotate_hpke(actor="operator")
        clock.advance(3601)
        with pytest.raises(VaultError) as exc:
            encrypted(here, key, seal(key, iat=int(clock.now())))()
        assert exc.value.code == "encrypted_card_invalid"
        with here.db.read() as s:
            assert s.scalar(select(func.count()).select_from(VaultCard)) == 1
    finally:
        for service in (here, there):
            service.close()
            service.db.dispose()


def test_the_fingerprint_format_is_unchanged(svc: VaultService) -> None:
    meta = card(svc)()
    mac = hmac.new(svc._tenant_key("acct_1"), VISA.encode(), "sha256").digest()
    assert meta.fingerprint == base64.b32encode(mac).decode().lower()[:16]
    assert svc.fingerprint(account_id="acct_1", number=VISA, actor="gateway") == meta.fingerprint


@given(st.binary(min_size=32, max_size=32))
def test_sixteen_base32_characters_are_the_first_ten_bytes(mac: bytes) -> None:
    assert base64.b32encode(mac[:10]) == base64.b32encode(mac)[:16]


@given(
    st.text(alphabet="0123456789", min_size=8, max_size=19),
    st.integers(1, 12),
    st.integers(2000, 2099),
)
def test_the_card_record_is_what_json_dumps_made(digits: str, month: int, year: int) -> None:
    expected = json.dumps({"number": digits, "exp_month": month, "exp_year": year}).encode()
    assert _card_record(digits, month, year) == expected


def test_tokens_keep_their_format(svc: VaultService) -> None:
    for _ in range(50):
        assert re.fullmatch(r"vtok_[0-9A-Za-z]{24}", card(svc)().token)


def test_loaded_hpke_keys_are_masked_and_open_like_raw_ones() -> None:
    private, public = hpke.generate_keypair()
    info = hpke.info_for("ek_test")
    payload = hpke.seal_to(public, b"card", info=info)
    loaded = hpke.PrivateKey(private)
    assert hpke.open_from(loaded, payload, info=info) == b"card"
    assert private.hex() not in repr(loaded) and repr(loaded) == str(loaded)
    with pytest.raises(TypeError):
        pickle.dumps(loaded)
    with pytest.raises(ValueError, match="32 bytes"):
        hpke.PrivateKey(private[:16])


def test_a_unique_key_clash_fails_only_the_item_that_caused_it(
    svc: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two items of one batch with the same token (forced here): the batch is
    rolled back and retried item by item; only the second one fails."""
    from paywarden.vault import service as service_mod

    real_new_id = service_mod.new_id  # type: ignore[attr-defined]
    tokens = iter([None, "vtok_" + "D" * 24, "vtok_" + "D" * 24, None])

    def new_id(prefix: str, length: int = 24) -> str:
        forced = next(tokens, None)
        return forced if forced is not None else real_new_id(prefix, length)

    monkeypatch.setattr(service_mod, "new_id", new_id)
    held = Held(svc, monkeypatch)
    results = held.run(card(svc), [card(svc, MASTERCARD), card(svc, AMEX), card(svc)])
    assert held.batches[:2] == [1, 3]
    first, master, clash, last = results
    assert isinstance(clash, IntegrityError)
    ok = [first, master, last]
    assert all(isinstance(r, CardMetadata) for r in ok)
    with svc.db.read() as s:
        stored = s.scalars(select(VaultCard.token).order_by(VaultCard.pk)).all()
    assert list(stored) == [r.token for r in ok]
    # The clash surfaced at the insert, before the batch's audit entries: each
    # stored card is audited exactly once, the failed one not at all.
    assert _tokens_in_audit(svc) == [r.token for r in ok]


def test_a_key_destroyed_by_another_vault_process_stops_decrypting_here(tmp_path: Path) -> None:
    """The cached private key is read again after a minute: once another
    process has rotated and swept, this one refuses the key before opening
    anything (not only when writing)."""
    clock = FrozenClock(START)
    here = _service(tmp_path, clock, audit=None)
    there = _service(tmp_path, clock, audit=None)
    here.ensure_hpke_key()
    key = here.encryption_keys()[0]
    encrypted(here, key, seal(key, iat=int(clock.now())))()  # cached here
    there.rotate_hpke(actor="operator")
    clock.advance(7 * 86400)
    assert there.sweep()["hpke_keys_destroyed"] == 1
    bad_number = seal(key, iat=int(clock.now()), number="4242424242424241")
    with pytest.raises(VaultError) as refused:  # not a card error: nothing was decrypted
        encrypted(here, key, bad_number)()
    assert refused.value.code == "encrypted_card_invalid"
    assert key["id"] not in here._caches.hpke_private


def test_a_key_read_before_a_rotation_is_not_cached_after_it(tmp_path: Path) -> None:
    clock = FrozenClock(START)
    svc = _service(tmp_path, clock, audit=None)
    svc.ensure_hpke_key()
    key = svc.encryption_keys()[0]
    real_unwrap = svc.kms.unwrap
    rotated: list[str] = []

    def unwrap(*a: Any, **kw: Any) -> bytes:
        if not rotated:  # between this request's row read and its cache insert
            rotated.append(svc.rotate_hpke(actor="operator"))
        return real_unwrap(*a, **kw)

    svc.kms.unwrap = unwrap  # type: ignore[method-assign]
    encrypted(svc, key, seal(key, iat=int(clock.now())))()
    assert key["id"] not in svc._caches.hpke_private  # its acceptance window changed meanwhile
    clock.advance(2 * 3600)  # past this policy's one-hour overlap
    with pytest.raises(VaultError) as refused:
        encrypted(svc, key, seal(key, iat=int(clock.now()), number="4242424242424241"))()
    assert refused.value.code == "encrypted_card_invalid"


def test_a_card_audited_but_not_stored_is_recorded_as_such(
    svc: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit entry is durable before the vault's transaction; when that
    transaction then fails, the log says the card was not stored."""
    import paywarden.vault.service as service_mod

    real = service_mod._insert_stmt

    def failing(model: type) -> Any:
        if model is VaultAccessLog:
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real(model)

    monkeypatch.setattr(service_mod, "_insert_stmt", failing)
    with pytest.raises(Exception, match="not committed"):
        card(svc)()
    monkeypatch.undo()
    assert svc.audit is not None
    tokenize_entries = [e for e in svc.audit.entries() if e.event == "vault.tokenize"]
    assert [e.outcome for e in tokenize_entries] == ["success", "failure"]
    assert tokenize_entries[1].reason is not None and "not stored" in tokenize_entries[1].reason
    assert tokenize_entries[0].resource == tokenize_entries[1].resource
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VaultCard)) == 0
    assert card(svc)().token  # and the vault works again
