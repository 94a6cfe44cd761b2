"""The browser helper ``paywarden-e2e.js`` in real headless Chromium.

The page seals cards with WebCrypto; Python opens them with the vault's own
recipe (:func:`paywarden.vault.crypto.hpke.open_from`) and compares the bytes
with the test-only RFC 9180 reference (``tests/vault/hpke_reference.py``) and the
RFC's Appendix A.1.1 vector. ``createPaymentMethod`` is driven against a fake
gateway on another loopback origin, so the cross-origin fetch is real too.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.crypto.hpke import generate_keypair, info_for, open_from
from tests.support.servers import run_app_in_thread
from tests.vault.hpke_reference import seal_with_ephemeral

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PAN = "4242424242424242"
CVC = "987"
SUITE = "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"
PUBLISHABLE_KEY = "pwp_test_" + "a" * 38
CARD = {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": CVC}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def open_card(private: bytes, key_id: str, payload: str) -> dict[str, Any]:
    """The sealed card, minus its ``iat`` (checked to be the current time)."""
    opened: dict[str, Any] = json.loads(
        open_from(private, unb64url(payload), info=info_for(key_id))
    )
    iat = opened.pop("iat")
    assert isinstance(iat, int) and abs(iat - time.time()) < 60
    return opened


def assert_no_card_data(text: str) -> None:
    assert PAN not in text
    assert "4242 4242" not in text
    assert f'"{CVC}"' not in text


@pytest.fixture
def page(browser_page: Page, serve_static_page: Callable[[str], str]) -> Page:
    browser_page.goto(serve_static_page("<p>paywarden e2e</p>"))
    browser_page.wait_for_function("() => window.PaywardenE2E !== undefined")
    return browser_page


@pytest.fixture
def keypair() -> tuple[bytes, bytes]:
    return generate_keypair()


def js_encrypt(page: Page, key_id: str, public_key: bytes, card: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = page.evaluate(
        "([key, card]) => PaywardenE2E.encryptCard(key, card)",
        [{"id": key_id, "public_key": b64url(public_key)}, card],
    )
    return result


def js_error(page: Page, script: str, arg: Any = None) -> str:
    """Run an async ``script(arg)`` that should reject; returns the error's message."""
    message: str = page.evaluate(
        f"async (arg) => {{ try {{ await ({script})(arg); return 'NO ERROR'; }}"
        " catch (e) { return String(e && e.message); } }",
        arg,
    )
    assert message != "NO ERROR"
    return message


# --- sealing ------------------------------------------------------------------


def test_js_payload_opens_with_the_vault_recipe(
    page: Page, keypair: tuple[bytes, bytes], browser_console: list[str]
) -> None:
    result = js_encrypt(page, "ek_test_1", keypair[1], CARD)
    assert set(result) == {"key_id", "payload"}
    assert result["key_id"] == "ek_test_1"
    assert open_card(keypair[0], "ek_test_1", result["payload"]) == CARD
    assert_no_card_data("\n".join(browser_console))


def test_form_strings_become_integers_and_cvc_is_optional(
    page: Page, keypair: tuple[bytes, bytes]
) -> None:
    card = {"number": "4242 4242-4242 4242", "exp_month": "07", "exp_year": "2031"}
    result = js_encrypt(page, "ek_test_1", keypair[1], card)
    opened = open_card(keypair[0], "ek_test_1", result["payload"])
    assert opened == {"number": "4242 4242-4242 4242", "exp_month": 7, "exp_year": 2031}


def test_twenty_encryptions_all_open_and_never_reuse_an_ephemeral_key(
    page: Page, keypair: tuple[bytes, bytes]
) -> None:
    results: list[dict[str, str]] = page.evaluate(
        """async ([key, card]) => {
            const out = [];
            for (let i = 0; i < 20; i++) out.push(await PaywardenE2E.encryptCard(key, card));
            return out;
        }""",
        [{"id": "ek_test_1", "public_key": b64url(keypair[1])}, CARD],
    )
    payloads = [unb64url(r["payload"]) for r in results]
    assert len(payloads) == 20
    assert len({p[:32] for p in payloads}) == 20  # a fresh enc (ephemeral public key) each time
    for result in results:
        assert open_card(keypair[0], "ek_test_1", result["payload"]) == CARD


def test_js_payload_does_not_open_under_another_key_id(
    page: Page, keypair: tuple[bytes, bytes]
) -> None:
    payload = unb64url(js_encrypt(page, "ek_test_1", keypair[1], CARD)["payload"])
    with pytest.raises(DecryptionError):
        open_from(keypair[0], payload, info=info_for("ek_test_2"))
    assert open_card(keypair[0], "ek_test_1", b64url(payload)) == CARD


def js_seal_with_ephemeral(
    page: Page, pk_r: bytes, sk_e: bytes, info: bytes, pt: bytes, aad: bytes | None
) -> bytes:
    args = [b64url(pk_r), b64url(sk_e), b64url(info), b64url(pt)]
    if aad is not None:
        args.append(b64url(aad))
    sealed: str = page.evaluate(
        """async (args) => {
            const i = PaywardenE2E._internal;
            return i.b64urlEncode(await i.sealWithEphemeral(...args));
        }""",
        args,
    )
    return unb64url(sealed)


def test_js_seal_matches_the_reference_byte_for_byte(
    page: Page, keypair: tuple[bytes, bytes]
) -> None:
    sk_e, _ = generate_keypair()
    info = info_for("ek_ref_1")
    pt = json.dumps(CARD).encode()
    expected = seal_with_ephemeral(keypair[1], sk_e, info, b"", pt)
    assert js_seal_with_ephemeral(page, keypair[1], sk_e, info, pt, None) == expected
    assert json.loads(open_from(keypair[0], expected, info=info)) == CARD


def test_js_seal_reproduces_rfc9180_appendix_a11(page: Page) -> None:
    # RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM,
    # base mode, first encryption (sequence number 0, aad "Count-0").
    sk_em = bytes.fromhex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    pk_rm = bytes.fromhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")  # "Ode on a Grecian Urn"
    pt = b"Beauty is truth, truth beauty"
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    ct = bytes.fromhex(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    assert js_seal_with_ephemeral(page, pk_rm, sk_em, info, pt, b"Count-0") == enc + ct


@pytest.mark.parametrize(
    ("card", "field_name"),
    [
        ({"number": 4242424242424242, "exp_month": 12, "exp_year": 2030}, "number"),
        ({"number": PAN, "exp_month": "twelve", "exp_year": 2030}, "exp_month"),
        ({"number": PAN, "exp_month": 12, "exp_year": 20.5}, "exp_year"),
        ({"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": 987}, "cvc"),
    ],
)
def test_bad_card_input_errors_carry_no_card_data(
    page: Page,
    keypair: tuple[bytes, bytes],
    browser_console: list[str],
    card: dict[str, Any],
    field_name: str,
) -> None:
    message = js_error(
        page,
        "([key, card]) => PaywardenE2E.encryptCard(key, card)",
        [{"id": "ek_test_1", "public_key": b64url(keypair[1])}, card],
    )
    assert field_name in message
    assert_no_card_data(message)
    assert "2030" not in message
    assert_no_card_data("\n".join(browser_console))


def test_a_wrong_length_public_key_is_refused(page: Page) -> None:
    message = js_error(
        page,
        "([key, card]) => PaywardenE2E.encryptCard(key, card)",
        [{"id": "ek_test_1", "public_key": b64url(b"\x09" * 31)}, CARD],
    )
    assert "32 bytes" in message
    assert_no_card_data(message)


def test_the_api_surface(page: Page) -> None:
    names = page.evaluate("() => Object.keys(PaywardenE2E).sort()")
    assert names == [
        "SUITE",
        "_internal",
        "createPaymentMethod",
        "deviceSignals",
        "deviceToken",
        "encryptCard",
        "fetchEncryptionKey",
    ]
    assert page.evaluate("() => PaywardenE2E.SUITE") == SUITE
    assert page.evaluate("() => Object.isFrozen(PaywardenE2E)") is True


# --- talking to a (fake) gateway on another origin ------------------------------


@dataclass
class FakeGateway:
    """The two gateway endpoints the helper calls, opening payloads like the vault."""

    keys: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (id, private, public)
    requests: list[dict[str, Any]] = field(default_factory=list)
    decline: bool = False
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.keys = [(f"ek_{n}", *generate_keypair()) for n in ("current", "previous")]
            self.requests.clear()
            self.decline = False

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/paywarden/encryption_keys", self.list_keys, methods=["GET"]),
                Route("/v1/payment_methods", self.create_payment_method, methods=["POST"]),
            ],
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origins=["*"],
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type"],
                )
            ],
        )

    async def list_keys(self, request: Request) -> JSONResponse:
        self.requests.append(
            {"path": request.url.path, "authorization": request.headers.get("authorization")}
        )
        data = [
            {
                "id": key_id,
                "object": "encryption_key",
                "suite": SUITE,
                "public_key": b64url(public),
                "created": 1732400000,
                "expires_at": 1735000000,
            }
            for key_id, _, public in self.keys
        ]
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def create_payment_method(self, request: Request) -> JSONResponse:
        raw = (await request.body()).decode()
        form = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
        self.requests.append(
            {
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "content_type": request.headers.get("content-type"),
                "raw": raw,
                "form": form,
            }
        )
        if self.decline:
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            }
            return JSONResponse({"error": error}, status_code=402)
        private = {key_id: priv for key_id, priv, _ in self.keys}[form["card[encrypted][key_id]"]]
        card = open_card(private, form["card[encrypted][key_id]"], form["card[encrypted][payload]"])
        return JSONResponse(
            {
                "id": "pm_test_1",
                "object": "payment_method",
                "type": "card",
                "card": {
                    "last4": card["number"][-4:],
                    "exp_month": card["exp_month"],
                    "exp_year": card["exp_year"],
                },
                "billing_details": {"name": form.get("billing_details[name]")},
            }
        )


@pytest.fixture(scope="module")
def fake_gateway_server() -> Iterator[FakeGateway]:
    gateway = FakeGateway()
    with run_app_in_thread(gateway.app()) as url:
        gateway.url = url
        yield gateway


@pytest.fixture
def fake_gateway(fake_gateway_server: FakeGateway) -> FakeGateway:
    fake_gateway_server.reset()
    return fake_gateway_server


def test_fetch_encryption_key_takes_the_current_key(page: Page, fake_gateway: FakeGateway) -> None:
    key = page.evaluate(
        """async ([url, pk]) => {
            const key = await PaywardenE2E.fetchEncryptionKey(url, pk);
            return {id: key.id, public_key: PaywardenE2E._internal.b64urlEncode(key.public_key),
                    expires_at: key.expires_at};
        }""",
        [fake_gateway.url + "/", PUBLISHABLE_KEY],
    )
    current_id, _, current_public = fake_gateway.keys[0]
    assert key == {"id": current_id, "public_key": b64url(current_public), "expires_at": 1735000000}
    assert fake_gateway.requests == [
        {"path": "/v1/paywarden/encryption_keys", "authorization": f"Bearer {PUBLISHABLE_KEY}"}
    ]


def test_create_payment_method_sends_only_ciphertext(
    page: Page, fake_gateway: FakeGateway, browser_console: list[str]
) -> None:
    result = page.evaluate(
        "([url, pk, card, extra]) => PaywardenE2E.createPaymentMethod(url, pk, card, extra)",
        [fake_gateway.url, PUBLISHABLE_KEY, CARD, {"billing_details": {"name": "Jenny Rosen"}}],
    )
    assert result["id"] == "pm_test_1"
    assert result["card"] == {"last4": "4242", "exp_month": 12, "exp_year": 2030}
    assert result["billing_details"] == {"name": "Jenny Rosen"}

    post = fake_gateway.requests[-1]
    assert post["path"] == "/v1/payment_methods"
    assert post["authorization"] == f"Bearer {PUBLISHABLE_KEY}"
    assert post["content_type"].startswith("application/x-www-form-urlencoded")
    assert set(post["form"]) == {
        "type",
        "card[encrypted][key_id]",
        "card[encrypted][payload]",
        "billing_details[name]",
    }
    assert post["form"]["type"] == "card"
    assert post["form"]["card[encrypted][key_id]"] == "ek_current"
    assert_no_card_data(post["raw"])
    assert_no_card_data("\n".join(browser_console))


def test_create_payment_method_throws_stripes_error_message(
    page: Page, fake_gateway: FakeGateway, browser_console: list[str]
) -> None:
    fake_gateway.decline = True
    error = page.evaluate(
        """async ([url, pk, card]) => {
            try { await PaywardenE2E.createPaymentMethod(url, pk, card); return null; }
            catch (e) {
                return {message: e.message, type: e.type, code: e.code,
                        decline_code: e.decline_code, status: e.status, stack: String(e.stack)};
            }
        }""",
        [fake_gateway.url, PUBLISHABLE_KEY, CARD],
    )
    assert error is not None
    assert error["message"] == "Your card was declined."
    assert (error["type"], error["code"], error["status"]) == ("card_error", "card_declined", 402)
    assert error["decline_code"] == "generic_decline"
    assert_no_card_data(json.dumps(error))
    assert_no_card_data("\n".join(browser_console))


@pytest.mark.parametrize("name", ["card[number]", "card", "type"])
def test_create_payment_method_refuses_extra_card_fields(
    page: Page, fake_gateway: FakeGateway, name: str
) -> None:
    message = js_error(
        page,
        "([url, pk, card, extra]) => PaywardenE2E.createPaymentMethod(url, pk, card, extra)",
        [fake_gateway.url, PUBLISHABLE_KEY, CARD, {name: PAN}],
    )
    assert "extra may not set" in message
    assert_no_card_data(message)
    assert fake_gateway.requests == []  # refused before anything was sent


@pytest.mark.parametrize("secret_key", ["pws_test_" + "b" * 38, "sk_test_123"])
def test_secret_keys_are_refused_in_the_browser(
    page: Page, fake_gateway: FakeGateway, secret_key: str
) -> None:
    message = js_error(
        page,
        "([url, pk]) => PaywardenE2E.fetchEncryptionKey(url, pk)",
        [fake_gateway.url, secret_key],
    )
    assert "publishable key" in message
    assert secret_key not in message
    assert fake_gateway.requests == []
