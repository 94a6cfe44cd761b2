"""LocalKeyring, and the behaviour every KeyManager shares (:class:`KmsBehaviour`)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from datetime import UTC
from pathlib import Path

import pytest

from paywarden.core.secrets import Secret
from paywarden.vault.crypto import aead
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.kms import (
    KeyManager,
    KmsError,
    LocalKeyring,
    WrappedKey,
    load_or_create_master_secret,
)

MASTER = bytes(range(32))
CTX = b"card:tok_123:acct_abc"


def tamper(blob: bytes) -> bytes:
    """Change one byte near the end (inside the tag for local, the base64 for Transit)."""
    out = bytearray(blob)
    out[-3] = ord("A") if out[-3] != ord("A") else ord("B")
    return bytes(out)


class KmsBehaviour:
    """What every KeyManager does; subclasses provide a fresh ``kms`` fixture."""

    def test_wrap_unwrap_round_trip(self, kms: KeyManager) -> None:
        data_key = aead.generate_key()
        wrapped = kms.wrap(data_key, context=CTX)
        assert wrapped.kek_version == kms.current_version() == 1
        assert data_key not in wrapped.blob
        assert kms.unwrap(wrapped, context=CTX) == data_key

    def test_wrong_context_fails(self, kms: KeyManager) -> None:
        wrapped = kms.wrap(aead.generate_key(), context=CTX)
        for other in (b"card:tok_123:acct_other", b"card:tok_999:acct_abc", CTX + b"\x00"):
            with pytest.raises(DecryptionError):
                kms.unwrap(wrapped, context=other)
        with pytest.raises(ValueError, match="context"):
            kms.unwrap(wrapped, context=b"")
        with pytest.raises(ValueError, match="context"):
            kms.wrap(aead.generate_key(), context=b"")

    def test_tampered_blob_or_version_fails(self, kms: KeyManager) -> None:
        wrapped = kms.wrap(aead.generate_key(), context=CTX)
        with pytest.raises(DecryptionError):
            kms.unwrap(WrappedKey(wrapped.kek_version, tamper(wrapped.blob)), context=CTX)
        with pytest.raises(DecryptionError):
            kms.unwrap(WrappedKey(wrapped.kek_version, wrapped.blob[:10]), context=CTX)
        kms.rotate()
        with pytest.raises(DecryptionError):
            kms.unwrap(WrappedKey(2, wrapped.blob), context=CTX)
        with pytest.raises(DecryptionError):
            kms.unwrap(WrappedKey(7, wrapped.blob), context=CTX)

    def test_rotate_keeps_old_versions_readable(self, kms: KeyManager) -> None:
        data_key = aead.generate_key()
        old = kms.wrap(data_key, context=CTX)
        assert kms.rotate() == 2
        assert kms.current_version() == 2
        new = kms.wrap(data_key, context=CTX)
        assert new.kek_version == 2
        assert kms.unwrap(old, context=CTX) == data_key
        assert kms.unwrap(new, context=CTX) == data_key
        assert kms.rotate() == 3

    def test_rewrap_moves_to_current_version(self, kms: KeyManager) -> None:
        data_key = aead.generate_key()
        old = kms.wrap(data_key, context=CTX)
        kms.rotate()
        kms.rotate()
        moved = kms.rewrap(old, context=CTX)
        assert moved.kek_version == 3
        assert moved.blob != old.blob
        assert kms.unwrap(moved, context=CTX) == data_key
        # Already current: an unchanged copy.
        assert kms.rewrap(moved, context=CTX) == moved

    def test_rewrap_checks_the_context(self, kms: KeyManager) -> None:
        old = kms.wrap(aead.generate_key(), context=CTX)
        with pytest.raises(DecryptionError):
            kms.rewrap(old, context=b"card:tok_123:acct_other")
        kms.rotate()
        with pytest.raises(DecryptionError):
            kms.rewrap(old, context=b"card:tok_123:acct_other")
        with pytest.raises(DecryptionError):
            kms.rewrap(WrappedKey(old.kek_version, tamper(old.blob)), context=CTX)

    def test_min_decryption_version_retires_old_versions(self, kms: KeyManager) -> None:
        data_key = aead.generate_key()
        v1 = kms.wrap(data_key, context=CTX)
        kms.rotate()
        v2 = kms.rewrap(v1, context=CTX)
        assert kms.min_decryption_version() == 1
        kms.set_min_decryption_version(2)
        assert kms.min_decryption_version() == 2
        with pytest.raises(DecryptionError):
            kms.unwrap(v1, context=CTX)
        with pytest.raises(DecryptionError):
            kms.rewrap(v1, context=CTX)
        assert kms.unwrap(v2, context=CTX) == data_key
        for version in kms.versions():
            assert version.retired == (version.version < 2)
        assert [v.version for v in kms.versions() if not v.retired] == [2]

    def test_set_min_decryption_version_bounds(self, kms: KeyManager) -> None:
        kms.rotate()
        with pytest.raises(ValueError, match="does not exist"):
            kms.set_min_decryption_version(3)
        kms.set_min_decryption_version(2)
        kms.set_min_decryption_version(2)  # unchanged is fine
        with pytest.raises(ValueError, match="cannot be lowered"):
            kms.set_min_decryption_version(1)
        assert kms.min_decryption_version() == 2

    def test_versions_have_utc_creation_times(self, kms: KeyManager) -> None:
        kms.rotate()
        versions = kms.versions()
        assert [v.version for v in versions] == [1, 2]
        assert all(v.created_at.tzinfo is not None for v in versions)
        assert all(v.created_at.utcoffset() == UTC.utcoffset(None) for v in versions)
        assert versions[0].created_at <= versions[1].created_at
        assert not any(v.retired for v in versions)

    def test_concurrent_wraps_and_unwraps(self, kms: KeyManager) -> None:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    key = aead.generate_key()
                    assert kms.unwrap(kms.wrap(key, context=CTX), context=CTX) == key
            except BaseException as exc:  # collected and re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "vault" / "keyring.json"


class TestLocalBehaviour(KmsBehaviour):
    @pytest.fixture
    def kms(self, keyring_path: Path) -> KeyManager:
        return LocalKeyring.open(keyring_path, MASTER)


# ---------------------------------------------------------------- local only


def test_create_and_reopen(keyring_path: Path) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    assert ring.backend == "local"
    data_key = aead.generate_key()
    w1 = ring.wrap(data_key, context=CTX)
    ring.rotate()
    ring.set_min_decryption_version(2)
    w2 = ring.wrap(data_key, context=CTX)

    again = LocalKeyring.open(keyring_path, MASTER, create=False)
    assert again.current_version() == 2
    assert again.min_decryption_version() == 2
    assert again.versions() == ring.versions()
    assert again.unwrap(w2, context=CTX) == data_key
    with pytest.raises(DecryptionError):
        again.unwrap(w1, context=CTX)


def test_master_secret_as_base64_secret(keyring_path: Path) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    wrapped = ring.wrap(b"k" * 32, context=CTX)
    secret = Secret(base64.b64encode(MASTER).decode(), "master")
    assert LocalKeyring.open(keyring_path, secret).unwrap(wrapped, context=CTX) == b"k" * 32


@pytest.mark.parametrize("bad", [b"short", b"\x00" * 33])
def test_master_secret_must_be_32_bytes(keyring_path: Path, bad: bytes) -> None:
    with pytest.raises(KmsError, match="32 bytes"):
        LocalKeyring.open(keyring_path, bad)
    with pytest.raises(KmsError, match="32 bytes") as info:
        LocalKeyring.open(keyring_path, Secret(base64.b64encode(bad).decode()))
    assert base64.b64encode(bad).decode() not in str(info.value)
    with pytest.raises(KmsError, match="base64"):
        LocalKeyring.open(keyring_path, Secret("not base64 at all!"))
    assert not keyring_path.exists()


def test_missing_keyring_without_create(keyring_path: Path) -> None:
    with pytest.raises(KmsError, match="does not exist"):
        LocalKeyring.open(keyring_path, MASTER, create=False)
    assert not keyring_path.exists()


def test_wrong_master_secret(keyring_path: Path) -> None:
    LocalKeyring.open(keyring_path, MASTER)
    wrong = bytes(reversed(MASTER))
    with pytest.raises(KmsError) as info:
        LocalKeyring.open(keyring_path, wrong)
    assert str(info.value) == "cannot unseal keyring: wrong master secret or damaged file"
    # Nothing from inside (a library error, a parse position) rides along.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_file_is_private_and_written_atomically(keyring_path: Path) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    ring.rotate()
    ring.set_min_decryption_version(2)
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    leftovers = [p.name for p in keyring_path.parent.iterdir()]
    assert sorted(leftovers) == ["keyring.json", "keyring.json.lock"]
    text = keyring_path.read_text()
    body = json.loads(text)
    assert body["min_decryption_version"] == 2
    assert [v["version"] for v in body["versions"]] == [1, 2]
    # The KEKs are sealed: no version's key appears in the file, in any encoding.
    for kek in ring._keyring.keks.values():
        assert kek.hex() not in text
        assert base64.b64encode(kek).decode() not in text


def _edit(path: Path, change: str) -> None:
    body = json.loads(path.read_text())
    if change == "lower_min":
        body["min_decryption_version"] = 1
    elif change == "drop_version":
        body["versions"].pop()
    elif change == "drop_mac":
        del body["mac"]
    elif change == "created_at":
        body["versions"][0]["created_at"] = "2001-01-01T00:00:00+00:00"
    elif change == "swap_keks":
        a, b = body["versions"]
        a["sealed_kek"], b["sealed_kek"] = b["sealed_kek"], a["sealed_kek"]
    path.write_text(json.dumps(body))


@pytest.mark.parametrize(
    "change", ["lower_min", "drop_version", "drop_mac", "created_at", "swap_keks"]
)
def test_hand_edited_file_is_detected(keyring_path: Path, change: str) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    ring.rotate()
    ring.set_min_decryption_version(2)
    _edit(keyring_path, change)
    with pytest.raises(KmsError, match="wrong master secret or damaged file"):
        LocalKeyring.open(keyring_path, MASTER)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"mac": "AAAA"}', b"\xff\xfe"])
def test_damaged_file_is_detected(keyring_path: Path, content: bytes) -> None:
    LocalKeyring.open(keyring_path, MASTER)
    keyring_path.write_bytes(content)
    with pytest.raises(KmsError, match="wrong master secret or damaged file"):
        LocalKeyring.open(keyring_path, MASTER)


def test_rotation_by_another_instance_is_picked_up(keyring_path: Path) -> None:
    # Two processes sharing a keyring: one rotates, the other meets a v2 blob.
    first = LocalKeyring.open(keyring_path, MASTER)
    second = LocalKeyring.open(keyring_path, MASTER)
    first.rotate()
    wrapped = first.wrap(b"d" * 32, context=CTX)
    assert wrapped.kek_version == 2
    assert second.unwrap(wrapped, context=CTX) == b"d" * 32
    assert second.current_version() == 2
    # And a rotation through the second builds on the first's, not on a stale copy.
    assert second.rotate() == 3


def test_concurrent_rotate_leaves_a_consistent_file(keyring_path: Path) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(3):
                v = ring.rotate()
                with lock:
                    results.append(v)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(2, 26))
    reopened = LocalKeyring.open(keyring_path, MASTER)
    assert reopened.current_version() == 25
    assert [v.version for v in reopened.versions()] == list(range(1, 26))


def test_repr_and_errors_hold_no_key_material(keyring_path: Path) -> None:
    ring = LocalKeyring.open(keyring_path, MASTER)
    assert MASTER.hex() not in repr(ring)
    wrapped = ring.wrap(b"x" * 32, context=CTX)
    with pytest.raises(DecryptionError) as info:
        ring.unwrap(wrapped, context=b"other")
    assert str(info.value) == "decryption failed"


# ------------------------------------------------------ dev master secret file


def test_load_or_create_master_secret(tmp_path: Path) -> None:
    path = tmp_path / "home" / "master.key"
    secret = load_or_create_master_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left
    assert len(base64.b64decode(secret.reveal())) == 32
    assert secret.reveal() not in repr(secret)
    assert load_or_create_master_secret(path) == secret
    ring = LocalKeyring.open(tmp_path / "keyring.json", secret)
    assert ring.current_version() == 1


def test_master_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_or_create_master_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(KmsError, match="chmod 600"):
        load_or_create_master_secret(path)


def test_damaged_master_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("c2hvcnQ=\n")  # base64 of b"short"
    os.chmod(path, 0o600)
    with pytest.raises(KmsError, match="32 bytes") as info:
        load_or_create_master_secret(path)
    assert "c2hvcnQ" not in str(info.value)
