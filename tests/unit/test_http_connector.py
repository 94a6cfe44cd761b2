"""HttpAcquirerConnector against the real sandbox acquirer (uvicorn in a thread), and
against small real HTTP/TCP servers that misbehave, for the error mapping."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paywarden.acquirer_sandbox.app import create_app
from paywarden.acquirers.base import (
    AcquirerError,
    AcquirerNotFound,
    AcquirerOutcomeUnknown,
    AcquirerUnavailable,
    AuthenticationStatus,
    AuthorizationRequest,
    AuthorizationResult,
    CaptureResult,
    CardRef,
    RefundResult,
)
from paywarden.acquirers.http_connector import HttpAcquirerConnector
from paywarden.core.secrets import Secret
from tests.support.servers import run_app_in_thread

TOKEN = "connector-unit-test-token-3f9a"
T = TypeVar("T")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(name="sandbox_c", db_path=None, token=TOKEN, public_url="")
    with run_app_in_thread(app) as url:
        yield url


@pytest.fixture
def control(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
    ) as client:
        client.post("/_control/reset")
        yield client
        client.post("/_control/reset")


@pytest.fixture
def make_connector(base_url: str) -> Iterator[Callable[..., HttpAcquirerConnector]]:
    made: list[HttpAcquirerConnector] = []

    def make(**kwargs: Any) -> HttpAcquirerConnector:
        # Generous: these only bound calls that succeed (a loaded CI machine is
        # slow); tests that need a timeout to fire pass their own.
        options: dict[str, Any] = {"timeout": 30.0, "connect_timeout": 10.0, **kwargs}
        url = options.pop("base_url", base_url)
        token = options.pop("token", Secret(TOKEN, "sandbox token"))
        connector = HttpAcquirerConnector("sandbox_c", url, token, **options)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


@pytest.fixture
def connector(make_connector: Callable[..., HttpAcquirerConnector]) -> HttpAcquirerConnector:
    return make_connector()


def request(
    ref: str = "visa", *, amount: int = 1000, capture: bool = True, **extra: Any
) -> AuthorizationRequest:
    return AuthorizationRequest(
        amount=amount,
        currency="usd",
        capture=capture,
        card=CardRef(test_ref=ref),
        merchant_reference=f"pi_{uuid.uuid4().hex[:12]}",
        **extra,
    )


def new_key() -> str:
    return f"pw-{uuid.uuid4()}"


def total_authorizations(control: httpx.Client) -> int:
    return int(control.get("/_control/stats").json()["authorizations"]["total"])


def set_fault(control: httpx.Client, **plan: Any) -> None:
    r = control.post("/_control/faults", json=plan)
    assert r.status_code == 200, r.text


def eventually(lookup: Callable[[], T], timeout: float = 30.0) -> T:
    """``lookup()`` once the acquirer has acted (it acts on its own schedule)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return lookup()
        except AcquirerNotFound:
            assert time.monotonic() < deadline, "the acquirer never acted"
            time.sleep(0.05)


# ------------------------------------------------------------- happy paths


def test_authorize_capture_refund_void(connector: HttpAcquirerConnector) -> None:
    key = new_key()
    auth = connector.authorize(request(capture=False, amount=5000), idempotency_key=key)
    assert isinstance(auth, AuthorizationResult)
    assert auth.reference.startswith("auth_")
    assert (auth.status, auth.amount, auth.amount_captured, auth.currency) == (
        "authorized",
        5000,
        0,
        "usd",
    )
    assert auth.network_status == "approved_by_network"
    assert auth.decline_code is None
    assert auth.raw["idempotency_key"] == key

    cap = connector.capture(auth.reference, 4000, idempotency_key=new_key())
    assert cap == CaptureResult(
        reference=auth.reference, status="captured", amount_captured=4000, raw=cap.raw
    )

    rkey = new_key()
    refund = connector.refund(auth.reference, 1500, idempotency_key=rkey)
    assert isinstance(refund, RefundResult)
    assert (refund.status, refund.amount, refund.failure_reason) == ("succeeded", 1500, None)
    assert connector.lookup_refund(rkey) == refund

    found = connector.lookup_authorization(key)
    assert (found.reference, found.status, found.amount_captured) == (
        auth.reference,
        "captured",
        4000,
    )

    other = connector.authorize(request(capture=False), idempotency_key=new_key())
    voided = connector.void(other.reference, idempotency_key=new_key())
    assert voided.status == "voided"


def test_declines_come_back_as_results(connector: HttpAcquirerConnector) -> None:
    result = connector.authorize(
        request("chargeDeclinedInsufficientFunds"), idempotency_key=new_key()
    )
    assert (result.status, result.decline_code) == ("declined", "insufficient_funds")
    assert result.network_status == "declined_by_network"
    assert result.message


def test_refund_failure_card(connector: HttpAcquirerConnector) -> None:
    auth = connector.authorize(request("refundFail"), idempotency_key=new_key())
    refund = connector.refund(auth.reference, 100, idempotency_key=new_key())
    assert (refund.status, refund.failure_reason) == ("failed", "expired_or_canceled_card")


def test_3ds_through_the_connector(connector: HttpAcquirerConnector) -> None:
    first = connector.authorize(
        request("authenticationRequired", return_url="https://shop.example/back"),
        idempotency_key=new_key(),
    )
    assert first.status == "requires_authentication"
    assert first.authentication_id is not None
    assert first.authentication_url is not None
    assert connector.authentication_status(first.authentication_id) == AuthenticationStatus(
        id=first.authentication_id, status="pending"
    )
    done = httpx.post(f"{first.authentication_url}/complete", data={"result": "authenticated"})
    assert done.status_code == 303
    assert connector.authentication_status(first.authentication_id).status == "authenticated"
    paid = connector.authorize(
        request("authenticationRequired", authentication_id=first.authentication_id),
        idempotency_key=new_key(),
    )
    assert paid.status == "captured"


def test_replay_returns_the_same_authorization(connector: HttpAcquirerConnector) -> None:
    req, key = request(), new_key()
    first = connector.authorize(req, idempotency_key=key)
    again = connector.authorize(req, idempotency_key=key)
    assert again.reference == first.reference
    assert again.raw == first.raw


# -------------------------------------------------------- 4xx and lookups


def test_lookups_of_unknown_keys_are_not_found(connector: HttpAcquirerConnector) -> None:
    with pytest.raises(AcquirerNotFound):
        connector.lookup_authorization("never-used")
    with pytest.raises(AcquirerNotFound):
        connector.lookup_refund("never-used")
    with pytest.raises(AcquirerNotFound):
        connector.authentication_status("3ds_unknown")


def test_refused_requests_are_plain_acquirer_errors(connector: HttpAcquirerConnector) -> None:
    auth = connector.authorize(request(capture=False, amount=100), idempotency_key=new_key())
    with pytest.raises(AcquirerError) as exc_info:
        connector.capture(auth.reference, 101, idempotency_key=new_key())
    assert type(exc_info.value) is AcquirerError
    assert "only 100 was authorized" in str(exc_info.value)
    # An unknown reference on an action is a refusal, not a lookup miss.
    with pytest.raises(AcquirerError) as missing:
        connector.capture("auth_nope", 1, idempotency_key=new_key())
    assert type(missing.value) is AcquirerError
    # Same key, another request.
    key = new_key()
    connector.authorize(request(amount=100), idempotency_key=key)
    with pytest.raises(AcquirerError, match="idempotency_error"):
        connector.authorize(request(amount=200), idempotency_key=key)


def test_vaulted_card_without_a_vault_is_refused(connector: HttpAcquirerConnector) -> None:
    req = AuthorizationRequest(
        amount=100,
        currency="usd",
        capture=True,
        card=CardRef(vault_token="vtok_abc", vault_account="acct_1", exp_month=12, exp_year=2034),
        merchant_reference="pi_nt",
    )
    with pytest.raises(AcquirerError, match="no card vault") as exc_info:
        connector.authorize(req, idempotency_key=new_key())
    assert type(exc_info.value) is AcquirerError


def test_bad_token_never_leaks(make_connector: Callable[..., HttpAcquirerConnector]) -> None:
    wrong = "wrong-token-should-not-leak-7c1d"
    connector = make_connector(token=Secret(wrong, "acquirer token"))
    with pytest.raises(AcquirerError) as exc_info:
        connector.authorize(request(), idempotency_key=new_key())
    err = exc_info.value
    assert type(err) is AcquirerError
    assert "401" in str(err)
    for text in (str(err), repr(err), repr(connector), str(err.args)):
        assert wrong not in text
        assert TOKEN not in text
    assert err.__cause__ is None


def test_token_must_be_a_secret(base_url: str) -> None:
    with pytest.raises(TypeError):
        HttpAcquirerConnector("x", base_url, TOKEN)  # type: ignore[arg-type]


def test_repr_hides_the_token(connector: HttpAcquirerConnector) -> None:
    assert TOKEN not in repr(connector)
    assert "sandbox_c" in repr(connector)


def test_shared_client_is_not_closed(base_url: str) -> None:
    with httpx.Client() as client:
        connector = HttpAcquirerConnector("shared", base_url, Secret(TOKEN), client=client)
        connector.authorize(request(), idempotency_key=new_key())
        connector.close()
        assert not client.is_closed


# ------------------------------------------------------ injected faults


def test_503_is_unavailable_and_nothing_happened(
    connector: HttpAcquirerConnector, control: httpx.Client
) -> None:
    before = total_authorizations(control)
    set_fault(control, mode="error_503")
    key = new_key()
    with pytest.raises(AcquirerUnavailable, match="503"):
        connector.authorize(request(), idempotency_key=key)
    with pytest.raises(AcquirerNotFound):
        connector.lookup_authorization(key)
    assert total_authorizations(control) == before


def test_500_is_outcome_unknown(connector: HttpAcquirerConnector, control: httpx.Client) -> None:
    set_fault(control, mode="error_500", count=1)
    key = new_key()
    with pytest.raises(AcquirerOutcomeUnknown):
        connector.authorize(request(), idempotency_key=key)
    # Reconciling with the same acquirer tells the truth: it never processed it.
    with pytest.raises(AcquirerNotFound):
        connector.lookup_authorization(key)


def test_count_applies_to_the_next_n_requests(
    connector: HttpAcquirerConnector, control: httpx.Client
) -> None:
    set_fault(control, mode="error_503", count=2)
    key = new_key()
    for _ in range(2):
        with pytest.raises(AcquirerUnavailable):
            connector.authorize(request(), idempotency_key=key)
    assert control.get("/_control/faults").json()["mode"] == "none"
    assert connector.authorize(request(), idempotency_key=key).status == "captured"


def test_count_null_lasts_until_reset(
    connector: HttpAcquirerConnector, control: httpx.Client
) -> None:
    set_fault(control, mode="error_503", count=None)
    for _ in range(3):
        with pytest.raises(AcquirerUnavailable):
            connector.authorize(request(), idempotency_key=new_key())
    control.post("/_control/reset")
    assert connector.authorize(request(), idempotency_key=new_key()).status == "captured"


def test_faults_only_hit_the_listed_operations(
    connector: HttpAcquirerConnector, control: httpx.Client
) -> None:
    set_fault(control, mode="error_503", operations=["refund", "void"])
    auth = connector.authorize(request(capture=False), idempotency_key=new_key())
    connector.capture(auth.reference, 1000, idempotency_key=new_key())
    with pytest.raises(AcquirerUnavailable):
        connector.refund(auth.reference, 10, idempotency_key=new_key())
    # Lookups are never faulted.
    with pytest.raises(AcquirerNotFound):
        connector.lookup_refund("never-used")


def test_latency_then_normal_service(
    connector: HttpAcquirerConnector, control: httpx.Client
) -> None:
    set_fault(control, mode="latency", latency_ms=150, count=1)
    started = time.monotonic()
    result = connector.authorize(request(), idempotency_key=new_key())
    assert time.monotonic() - started >= 0.14
    assert result.status == "captured"


def test_timeout_is_outcome_unknown_and_the_charge_lands_later(
    make_connector: Callable[..., HttpAcquirerConnector], control: httpx.Client
) -> None:
    # The acquirer waits 4 s before acting: ample time, even on a loaded
    # machine, for the impatient call to give up and for the first lookup.
    connector = make_connector()
    impatient = make_connector(timeout=0.5)
    before = total_authorizations(control)
    set_fault(control, mode="timeout", latency_ms=4000, count=1)
    req, key = request(), new_key()
    with pytest.raises(AcquirerOutcomeUnknown, match="ReadTimeout"):
        impatient.authorize(req, idempotency_key=key)
    # The slow acquirer has not acted yet...
    with pytest.raises(AcquirerNotFound):
        connector.lookup_authorization(key)
    # ...but it does, and reconciliation finds it.
    found = eventually(lambda: connector.lookup_authorization(key))
    assert found.status == "captured"
    assert connector.authorize(req, idempotency_key=key).reference == found.reference
    assert total_authorizations(control) == before + 1


def test_lost_response_is_outcome_unknown_and_charged_exactly_once(
    make_connector: Callable[..., HttpAcquirerConnector], control: httpx.Client
) -> None:
    connector = make_connector()
    impatient = make_connector(timeout=1.0)
    before = total_authorizations(control)
    # The acquirer holds the answer for 30 s (or until the caller hangs up).
    set_fault(control, mode="lost_response", latency_ms=30_000, count=1)
    req, key = request(amount=4321), new_key()
    started = time.monotonic()
    with pytest.raises(AcquirerOutcomeUnknown):
        impatient.authorize(req, idempotency_key=key)
    assert time.monotonic() - started < 20  # gave up after its timeout, not the hold
    # The charge was made before the response got lost (the acquirer may still
    # be committing it when a very slow client has already given up).
    found = eventually(lambda: connector.lookup_authorization(key))
    assert (found.status, found.amount_captured) == ("captured", 4321)
    # Retrying with the same key replays; it does not charge again.
    retried = connector.authorize(req, idempotency_key=key)
    assert retried.reference == found.reference
    assert total_authorizations(control) == before + 1
    stats = control.get("/_control/stats").json()
    assert stats["authorizations"]["total"] == before + 1


def test_lost_refund_response_is_found_by_lookup(
    make_connector: Callable[..., HttpAcquirerConnector], control: httpx.Client
) -> None:
    connector = make_connector()
    impatient = make_connector(timeout=1.0)
    auth = connector.authorize(request(amount=900), idempotency_key=new_key())
    set_fault(control, mode="lost_response", latency_ms=30_000, operations=["refund"])
    key = new_key()
    with pytest.raises(AcquirerOutcomeUnknown):
        impatient.refund(auth.reference, 900, idempotency_key=key)
    refund = eventually(lambda: connector.lookup_refund(key))
    assert (refund.status, refund.amount) == ("succeeded", 900)
    # With the fault gone, the same key replays the recorded refund.
    control.post("/_control/reset")
    assert connector.refund(auth.reference, 900, idempotency_key=key) == refund


# ------------------------------------------------ transport-level failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_connection_refused_is_unavailable(
    make_connector: Callable[..., HttpAcquirerConnector],
) -> None:
    connector = make_connector(base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(AcquirerUnavailable, match="ConnectError"):
        connector.authorize(request(), idempotency_key=new_key())
    with pytest.raises(AcquirerUnavailable):
        connector.lookup_authorization("k")


def run_tcp_server(handler: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    """A raw TCP server on loopback answering each connection with ``handler``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                handler(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(2)
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", close


def read_request(conn: socket.socket) -> None:
    conn.settimeout(30)  # the client sends at once; this only guards against a hang
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def hang_up(conn: socket.socket) -> None:
    read_request(conn)


def half_response(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
    )


@pytest.mark.parametrize("handler", [hang_up, half_response])
def test_dropped_connection_is_outcome_unknown(
    make_connector: Callable[..., HttpAcquirerConnector], handler: Callable[[socket.socket], None]
) -> None:
    url, close = run_tcp_server(handler)
    try:
        connector = make_connector(base_url=url)
        with pytest.raises(AcquirerOutcomeUnknown, match=r"RemoteProtocolError|ReadError"):
            connector.authorize(request(), idempotency_key=new_key())
    finally:
        close()


def fixed_answer_app(status: int, body: bytes, content_type: str = "application/json") -> Starlette:
    async def answer(request: Request) -> Response:
        return Response(body, status_code=status, media_type=content_type)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b'{"error": {"type": "api_error", "message": "boom"}}', AcquirerOutcomeUnknown),
        (502, b"bad gateway", AcquirerOutcomeUnknown),
        (504, b"", AcquirerOutcomeUnknown),
        (503, b"", AcquirerUnavailable),
        (400, b'{"error": {"type": "invalid_request_error", "message": "nope"}}', AcquirerError),
        (409, b"{}", AcquirerError),
        (422, b"[]", AcquirerError),
        (404, b"{}", AcquirerError),
        (200, b"not json", AcquirerOutcomeUnknown),
        (200, b'{"id": 5}', AcquirerOutcomeUnknown),
        (200, b"[1, 2]", AcquirerOutcomeUnknown),
    ],
)
def test_status_mapping_for_actions(
    make_connector: Callable[..., HttpAcquirerConnector],
    status: int,
    body: bytes,
    expected: type[Exception],
) -> None:
    with run_app_in_thread(fixed_answer_app(status, body)) as url:
        connector = make_connector(base_url=url)
        with pytest.raises(expected) as exc_info:
            connector.capture("auth_x", 1, idempotency_key=new_key())
        assert type(exc_info.value) is expected
        if status == 400:
            assert "nope" in str(exc_info.value)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, AcquirerNotFound), (503, AcquirerUnavailable), (500, AcquirerOutcomeUnknown)],
)
def test_status_mapping_for_lookups(
    make_connector: Callable[..., HttpAcquirerConnector],
    status: int,
    expected: type[Exception],
) -> None:
    with run_app_in_thread(fixed_answer_app(status, b"{}")) as url:
        connector = make_connector(base_url=url)
        with pytest.raises(expected):
            connector.lookup_authorization("k")
        with pytest.raises(expected):
            connector.lookup_refund("k")
        with pytest.raises(expected):
            connector.authentication_status("3ds_x")
