"""TransitKms against a real OpenBao dev server (see tests/vault/openbao.py)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import hvac
import pytest

from paywarden.core.secrets import Secret
from paywarden.vault.crypto import aead
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.kms import KeyManager, KmsError, TransitKms
from tests.vault.openbao import OpenBao, free_port
from tests.vault.test_kms_local import CTX, KmsBehaviour


def admin_transit(openbao: OpenBao) -> Any:
    # types-hvac leaves the Transit methods untyped.
    return hvac.Client(url=openbao.url, token=openbao.token).secrets.transit


def fresh_name() -> str:
    return "kek-" + uuid.uuid4().hex[:12]


def make(openbao: OpenBao, *, key_name: str, mount_point: str = "transit") -> TransitKms:
    return TransitKms(
        openbao.url, Secret(openbao.token, "bao token"), key_name=key_name, mount_point=mount_point
    )


class TestTransitBehaviour(KmsBehaviour):
    @pytest.fixture
    def kms(self, openbao: OpenBao) -> KeyManager:
        # A new key per test: the server lives for the whole session.
        return make(openbao, key_name=fresh_name())


def test_first_use_mounts_the_engine_and_creates_a_derived_key(openbao: OpenBao) -> None:
    mount = "pw-" + uuid.uuid4().hex[:8]
    name = fresh_name()
    kms = make(openbao, key_name=name, mount_point=mount)
    assert kms.backend == "transit"
    data_key = aead.generate_key()
    wrapped = kms.wrap(data_key, context=CTX)
    assert wrapped.blob.startswith(b"vault:v1:")
    key = admin_transit(openbao).read_key(name, mount_point=mount)["data"]
    assert key["type"] == "aes256-gcm96"
    assert key["derived"] is True
    assert key["exportable"] is False
    # A second client finds the key in place and agrees.
    assert make(openbao, key_name=name, mount_point=mount).unwrap(wrapped, context=CTX) == data_key


def test_a_key_without_derivation_is_refused(openbao: OpenBao) -> None:
    name = fresh_name()
    make(openbao, key_name=fresh_name()).current_version()  # mounts transit/
    admin_transit(openbao).create_key(name, key_type="aes256-gcm96")
    with pytest.raises(KmsError, match="derived=true"):
        make(openbao, key_name=name).wrap(aead.generate_key(), context=CTX)


def test_rewrap_returns_a_transit_ciphertext_of_the_new_version(openbao: OpenBao) -> None:
    kms = make(openbao, key_name=fresh_name())
    data_key = aead.generate_key()
    old = kms.wrap(data_key, context=CTX)
    kms.rotate()
    moved = kms.rewrap(old, context=CTX)
    assert moved.blob.startswith(b"vault:v2:")
    assert kms.unwrap(moved, context=CTX) == data_key


def test_server_unreachable_is_a_kms_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kms = TransitKms(url, Secret("pw-unreachable-token"), key_name="k", timeout=2.0)
    with pytest.raises(KmsError, match="unreachable") as info:
        kms.wrap(aead.generate_key(), context=CTX)
    assert "pw-unreachable-token" not in str(info.value)
    with pytest.raises(KmsError):
        kms.current_version()


def test_bad_token_is_a_kms_error(openbao: OpenBao) -> None:
    token = "pw-wrong-token-" + uuid.uuid4().hex
    kms = TransitKms(openbao.url, Secret(token), key_name=fresh_name())
    with pytest.raises(KmsError, match="permission denied") as info:
        kms.wrap(aead.generate_key(), context=CTX)
    assert token not in str(info.value)
    assert token not in repr(kms)


def test_errors_carry_no_key_material(openbao: OpenBao) -> None:
    kms = make(openbao, key_name=fresh_name())
    data_key = aead.generate_key()
    wrapped = kms.wrap(data_key, context=CTX)
    with pytest.raises(DecryptionError) as info:
        kms.unwrap(wrapped, context=b"card:tok_123:acct_other")
    assert str(info.value) == "decryption failed"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    for text in (data_key.hex(), base64.b64encode(data_key).decode(), openbao.token):
        assert text not in str(info.value)
    assert openbao.token not in repr(kms)
