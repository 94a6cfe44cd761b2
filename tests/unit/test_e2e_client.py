"""The Python end-to-end card encryption helper (paywarden.clients.e2e).

Payloads are opened with the vault's own HPKE recipe, so these tests pin the
wire format both sides share. The key endpoint is faked with httpx's
MockTransport: only the client's parsing is under test here.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

import paywarden.clients
from paywarden.clients import e2e
from paywarden.clients.e2e import (
    EncryptionKey,
    EncryptionKeyError,
    encrypt_card,
    encrypt_card_params,
    fetch_encryption_key,
)
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.crypto.hpke import generate_keypair, info_for, open_from

PAN = "4242424242424242"
SUITE = "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def keypair() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture
def key(keypair: tuple[bytes, bytes]) -> EncryptionKey:
    return EncryptionKey(id="ek_test_1", public_key=keypair[1], expires_at=None)


def open_payload(private: bytes, key_id: str, payload: str) -> dict[str, Any]:
    """The sealed card, minus its ``iat`` (checked to be the current time)."""
    opened: dict[str, Any] = json.loads(
        open_from(private, unb64url(payload), info=info_for(key_id))
    )
    iat = opened.pop("iat")
    assert isinstance(iat, int) and abs(iat - time.time()) < 60
    return opened


def test_public_api_is_pinned() -> None:
    assert set(e2e.__all__) == {
        "SUITE",
        "EncryptionKey",
        "EncryptionKeyError",
        "encrypt_card",
        "encrypt_card_params",
        "fetch_encryption_key",
    }
    assert set(e2e.__all__) <= set(paywarden.clients.__all__)
    assert e2e.SUITE == SUITE


def test_encrypt_card_round_trips_through_the_vault_recipe(
    keypair: tuple[bytes, bytes], key: EncryptionKey
) -> None:
    fields = encrypt_card(key, number=PAN, exp_month=12, exp_year=2030, cvc="123")
    assert set(fields) == {"card[encrypted][key_id]", "card[encrypted][payload]"}
    assert fields["card[encrypted][key_id]"] == "ek_test_1"
    card = open_payload(keypair[0], "ek_test_1", fields["card[encrypted][payload]"])
    assert card == {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def test_cvc_is_optional(keypair: tuple[bytes, bytes], key: EncryptionKey) -> None:
    fields = encrypt_card(key, number="4242 4242-4242 4242", exp_month=1, exp_year=2031)
    card = open_payload(keypair[0], key.id, fields["card[encrypted][payload]"])
    assert card == {"number": "4242 4242-4242 4242", "exp_month": 1, "exp_year": 2031}


def test_payload_layout_is_enc_then_ciphertext_and_tag(key: EncryptionKey) -> None:
    fields = encrypt_card(key, number=PAN, exp_month=12, exp_year=2030, cvc="123")
    raw = unb64url(fields["card[encrypted][payload]"])
    sealed_at = int(time.time())
    plaintext_len = len(
        b'{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"123","iat":'
        + str(sealed_at).encode()
        + b"}"
    )
    assert len(raw) == 32 + plaintext_len + 16


def test_params_form_for_the_stripe_sdk(keypair: tuple[bytes, bytes], key: EncryptionKey) -> None:
    params = encrypt_card_params(key, number=PAN, exp_month=12, exp_year=2030)
    assert set(params) == {"card"}
    encrypted = params["card"]["encrypted"]
    assert encrypted["key_id"] == key.id
    assert open_payload(keypair[0], key.id, encrypted["payload"])["number"] == PAN


def test_fresh_ephemeral_key_per_call(key: EncryptionKey) -> None:
    payloads = [
        unb64url(
            encrypt_card(key, number=PAN, exp_month=12, exp_year=2030)["card[encrypted][payload]"]
        )
        for _ in range(10)
    ]
    assert len(set(payloads)) == 10
    assert len({p[:32] for p in payloads}) == 10  # the enc prefix differs too


def test_payload_does_not_open_under_another_key_id(
    keypair: tuple[bytes, bytes], key: EncryptionKey
) -> None:
    payload = unb64url(
        encrypt_card(key, number=PAN, exp_month=12, exp_year=2030)["card[encrypted][payload]"]
    )
    with pytest.raises(DecryptionError):
        open_from(keypair[0], payload, info=info_for("ek_test_2"))


def test_payload_does_not_open_under_another_private_key(key: EncryptionKey) -> None:
    other_private, _ = generate_keypair()
    payload = unb64url(
        encrypt_card(key, number=PAN, exp_month=12, exp_year=2030)["card[encrypted][payload]"]
    )
    with pytest.raises(DecryptionError):
        open_from(other_private, payload, info=info_for(key.id))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"number": 4242424242424242}, "number"),
        ({"number": ""}, "number"),
        ({"exp_month": "12"}, "exp_month"),
        ({"exp_year": True}, "exp_year"),
        ({"cvc": 123}, "cvc"),
    ],
)
def test_bad_input_is_refused_without_echoing_it(
    key: EncryptionKey, overrides: dict[str, Any], field: str
) -> None:
    card: dict[str, Any] = {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": "987"}
    card.update(overrides)
    with pytest.raises(TypeError) as info:
        encrypt_card(key, **card)
    message = str(info.value)
    assert field in message
    for value in (PAN, "4242", "987", "2030"):
        assert value not in message


def test_card_number_is_not_kept_on_any_object(key: EncryptionKey) -> None:
    fields = encrypt_card(key, number=PAN, exp_month=12, exp_year=2030, cvc="123")
    params = encrypt_card_params(key, number=PAN, exp_month=12, exp_year=2030)
    everything = repr(fields) + repr(params) + repr(key) + json.dumps(params)
    assert PAN not in everything
    assert "4242" not in everything.replace(key.id, "")


def test_encryption_key_refuses_a_wrong_length_public_key() -> None:
    with pytest.raises(ValueError, match="32 raw bytes"):
        EncryptionKey(id="ek_x", public_key=b"\x01" * 31, expires_at=None)
    with pytest.raises(ValueError, match="needs an id"):
        EncryptionKey(id="", public_key=b"\x01" * 32, expires_at=None)


# --- fetch_encryption_key ------------------------------------------------------


def key_list(public_keys: list[tuple[str, bytes]], **overrides: Any) -> dict[str, Any]:
    data = [
        {
            "id": key_id,
            "object": "encryption_key",
            "suite": SUITE,
            "public_key": b64url(public),
            "created": 1732400000,
            "expires_at": 1735000000,
        }
        for key_id, public in public_keys
    ]
    if data:
        data[0].update(overrides)
    return {"object": "list", "data": data, "has_more": False}


def mock_client(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_fetch_takes_the_first_key_and_sends_the_publishable_key(
    keypair: tuple[bytes, bytes],
) -> None:
    seen: list[httpx.Request] = []
    _, older = generate_keypair()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=key_list([("ek_new", keypair[1]), ("ek_old", older)]))

    with mock_client(handler) as client:
        key = fetch_encryption_key("https://gw.test/", "pwp_test_abc", client=client)
    assert key == EncryptionKey(id="ek_new", public_key=keypair[1], expires_at=1735000000)
    assert len(seen) == 1
    assert seen[0].method == "GET"
    assert str(seen[0].url) == "https://gw.test/v1/paywarden/encryption_keys"
    assert seen[0].headers["authorization"] == "Bearer pwp_test_abc"


def test_fetched_key_encrypts_for_the_vault(keypair: tuple[bytes, bytes]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=key_list([("ek_live", keypair[1])], expires_at=None))

    with mock_client(handler) as client:
        key = fetch_encryption_key("https://gw.test", "pwp_test_abc", client=client)
    assert key.expires_at is None
    fields = encrypt_card(key, number=PAN, exp_month=12, exp_year=2030, cvc="123")
    assert open_payload(keypair[0], "ek_live", fields["card[encrypted][payload]"])["cvc"] == "123"


def test_fetch_reports_stripes_error_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}}
        return httpx.Response(401, json=body)

    with mock_client(handler) as client, pytest.raises(EncryptionKeyError) as info:
        fetch_encryption_key("https://gw.test", "pwp_test_bad", client=client)
    assert info.value.status == 401
    assert str(info.value) == "Invalid API Key provided."


def test_fetch_reports_a_non_json_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with mock_client(handler) as client, pytest.raises(EncryptionKeyError) as info:
        fetch_encryption_key("https://gw.test", "pwp_test_abc", client=client)
    assert info.value.status == 502
    assert "502" in str(info.value)


def test_fetch_reports_an_unreachable_gateway() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with mock_client(handler) as client, pytest.raises(EncryptionKeyError, match="ConnectError"):
        fetch_encryption_key("https://gw.test", "pwp_test_abc", client=client)


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": [], "has_more": False},
        {"object": "list"},
        [],
        key_list(
            [("ek_1", b"\x09" * 32)], suite="DHKEM(P-256, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"
        ),
        key_list([("ek_1", b"\x09" * 32)], public_key=b64url(b"\x09" * 31)),
        key_list([("ek_1", b"\x09" * 32)], public_key="not base64url!"),
        key_list([("ek_1", b"\x09" * 32)], public_key=None),
        key_list([("ek_1", b"\x09" * 32)], id=""),
        key_list([("ek_1", b"\x09" * 32)], expires_at="soon"),
    ],
)
def test_fetch_refuses_an_unusable_answer(body: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    with mock_client(handler) as client, pytest.raises(EncryptionKeyError) as info:
        fetch_encryption_key("https://gw.test", "pwp_test_abc", client=client)
    assert info.value.status is None


def test_browser_helper_ships_as_package_data() -> None:
    source = paywarden.clients.browser_helper_source()
    assert "PaywardenE2E" in source
    assert "paywarden card v1 " in source


def test_the_payload_names_the_account_it_was_sealed_for(keypair: tuple[bytes, bytes]) -> None:
    key = EncryptionKey(id="ek_test_1", public_key=keypair[1], expires_at=None, account="acct_9")
    fields = encrypt_card(key, number=PAN, exp_month=12, exp_year=2030)
    opened = open_payload(keypair[0], key.id, fields["card[encrypted][payload]"])
    assert opened["account"] == "acct_9"
