"""Mutual TLS under a real uvicorn: who may connect, and what the app learns about them.

Each server runs in a thread on a free loopback port with a tiny Starlette app
that echoes ``tls_info(scope)`` and the raw ASGI ``tls`` extension. Both of our
protocol classes are exercised, one on asyncio's event loop and one on uvloop's.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.config import WS_PROTOCOLS
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from paywarden.core.clock import FrozenClock
from paywarden.vault import tlsserver
from paywarden.vault.crypto.pki import Pki
from paywarden.vault.tlsserver import (
    MtlsConfig,
    MtlsH11Protocol,
    TlsInfo,
    client_ssl_context,
    make_uvicorn_config,
    tls_info,
)

DAY = 86400.0
# A refused handshake surfaces as ConnectError (TLS 1.2, or a server the client
# rejects) or, in TLS 1.3, on the first read after the client's handshake finished.
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)


@dataclass
class Certs:
    pki: Pki
    other: Pki  # a different CA with its own "gateway"
    expired: Path  # cert, key of an expired client cert from our CA
    expired_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("mtls")
    # The CA and certificates date from a month ago, so the CA predates the stale cert below.
    pki = Pki(root / "pki", clock=FrozenClock(time.time() - 30 * DAY))
    pki.ensure()
    other = Pki(root / "other")
    other.ensure()
    # Same CA, issued "ten days ago" for one day.
    past = Pki(root / "pki", clock=FrozenClock(time.time() - 10 * DAY))
    stale = past.issue_client("stale", days=1)
    return Certs(pki=pki, other=other, expired=stale.cert_path, expired_key=stale.key_path)


@dataclass
class Served:
    url: str
    calls: list[str]
    certs: Certs

    def client(self, name: str | None, *, pki: Pki | None = None) -> httpx.Client:
        source = pki or self.certs.pki
        if name is None:
            ctx = client_ssl_context(cert=None, key=None, ca_bundle=source.ca_bundle_path())
        else:
            issued = source.cert_for(name)
            ctx = client_ssl_context(
                cert=issued.cert_path,
                key=issued.key_path,
                ca_bundle=self.certs.pki.ca_bundle_path(),
            )
        return httpx.Client(base_url=self.url, verify=ctx, timeout=5)


def echo_app(calls: list[str]) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        info = tls_info(request.scope)
        calls.append(info.identity if info and info.identity else "")
        client = request.scope.get("client")
        return JSONResponse(
            {
                "identity": info.identity if info else None,
                "subject": info.subject if info else None,
                "fingerprint": info.fingerprint_sha256 if info else None,
                "port": client[1] if client else None,
                "scheme": request.url.scheme,
            }
        )

    async def extension(request: Request) -> JSONResponse:
        calls.append("ext")
        return JSONResponse(request.scope.get("extensions", {}).get("tls"))

    return Starlette(routes=[Route("/whoami", whoami), Route("/ext", extension)])


@contextmanager
def serve(app: Any, certs: Certs, *, http: str, loop: str) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    vault = certs.pki.cert_for("vault")
    config = make_uvicorn_config(
        app,
        host="127.0.0.1",
        port=port,
        cert=vault.cert_path,
        key=vault.key_path,
        ca_bundle=certs.pki.ca_bundle_path(),
        http=http,
        loop=loop,
        log_level="critical",  # refused handshakes are expected here
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"mtls-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"server failed to start: {errors!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()


@pytest.fixture(
    scope="module",
    params=[("h11", "asyncio"), ("httptools", "uvloop")],
    ids=["h11-asyncio", "httptools-uvloop"],
)
def served(request: pytest.FixtureRequest, certs: Certs) -> Iterator[Served]:
    http, loop = request.param
    calls: list[str] = []
    with serve(echo_app(calls), certs, http=http, loop=loop) as url:
        yield Served(url=url, calls=calls, certs=certs)


# -- who gets in, and as whom ----------------------------------------------------------


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_client_certificate_is_the_identity(served: Served, name: str) -> None:
    with served.client(name) as client:
        body = client.get("/whoami").json()
    assert body["identity"] == name
    assert body["subject"] == f"OU={name},O=Paywarden,CN={name}"
    assert body["fingerprint"] == served.certs.pki.cert_for(name).fingerprint_sha256
    assert body["scheme"] == "https"


def test_scope_extension_follows_the_asgi_tls_spec(served: Served) -> None:
    with served.client("gateway") as client:
        tls = client.get("/ext").json()
    pki = served.certs.pki
    assert set(tls) == {
        "server_cert",
        "client_cert_chain",
        "client_cert_name",
        "client_cert_error",
        "tls_version",
        "cipher_suite",
    }
    assert tls["server_cert"] == pki.cert_for("vault").cert_path.read_text()
    assert len(tls["client_cert_chain"]) == 1
    assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == ssl.PEM_cert_to_DER_cert(
        pki.cert_for("gateway").cert_path.read_text()
    )
    assert tls["client_cert_name"] == "OU=gateway,O=Paywarden,CN=gateway"
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in {0x1301, 0x1302, 0x1303}


def test_identity_is_per_connection_on_keep_alive(served: Served) -> None:
    with served.client("gateway") as gateway, served.client("operator") as operator:
        seen = [
            (who, client.get("/whoami").json())
            for _ in range(3)
            for who, client in (("gateway", gateway), ("operator", operator))
        ]
    for who, body in seen:
        assert body["identity"] == who
    gateway_ports = {body["port"] for who, body in seen if who == "gateway"}
    operator_ports = {body["port"] for who, body in seen if who == "operator"}
    # One kept-alive connection per client, each with its own certificate.
    assert len(gateway_ports) == 1
    assert len(operator_ports) == 1
    assert gateway_ports != operator_ports


def test_headers_cannot_claim_an_identity(served: Served) -> None:
    spoof = {
        "x-forwarded-client-cert": "URI=spiffe://paywarden.local/operator",
        "x-ssl-client-s-dn": "CN=operator",
        "x-client-cert": "operator",
    }
    with served.client("gateway") as client:
        assert client.get("/whoami", headers=spoof).json()["identity"] == "gateway"


@pytest.mark.parametrize("kind", ["none", "other-ca", "expired"])
def test_bad_client_certificates_are_refused_at_the_handshake(served: Served, kind: str) -> None:
    certs = served.certs
    bundle = certs.pki.ca_bundle_path()
    if kind == "none":
        ctx = client_ssl_context(cert=None, key=None, ca_bundle=bundle)
    elif kind == "other-ca":
        other = certs.other.cert_for("gateway")
        ctx = client_ssl_context(cert=other.cert_path, key=other.key_path, ca_bundle=bundle)
    else:
        ctx = client_ssl_context(cert=certs.expired, key=certs.expired_key, ca_bundle=bundle)
    before = len(served.calls)
    with (
        httpx.Client(base_url=served.url, verify=ctx, timeout=5) as client,
        pytest.raises(REFUSED),
    ):
        client.get("/whoami")
    assert len(served.calls) == before  # the application never saw the request


def test_expired_certificate_was_otherwise_good(certs: Certs) -> None:
    # Guards the test above: the stale certificate differs from a good one only in time.
    stale = x509.load_pem_x509_certificate(certs.expired.read_bytes())
    store = Store(x509.load_pem_x509_certificates(certs.pki.ca_bundle_path().read_bytes()))
    then = stale.not_valid_before_utc + timedelta(hours=1)
    PolicyBuilder().store(store).time(then).build_client_verifier().verify(stale, [])


def test_client_refuses_a_server_from_another_ca(served: Served) -> None:
    gateway = served.certs.pki.cert_for("gateway")
    ctx = client_ssl_context(
        cert=gateway.cert_path,
        key=gateway.key_path,
        ca_bundle=served.certs.other.ca_bundle_path(),
    )
    with (
        httpx.Client(base_url=served.url, verify=ctx, timeout=5) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/whoami")


def test_plain_http_to_the_tls_port_fails(served: Served) -> None:
    before = len(served.calls)
    with pytest.raises(REFUSED):
        httpx.get(served.url.replace("https://", "http://") + "/whoami", timeout=5)
    assert len(served.calls) == before


# -- reading the extension ------------------------------------------------------------------


def test_tls_info_without_extension_is_none() -> None:
    assert tls_info({"type": "http"}) is None
    assert tls_info({"type": "http", "extensions": {}}) is None


def test_tls_info_trusts_no_unverified_or_missing_certificate(certs: Certs) -> None:
    pem = certs.pki.cert_for("gateway").cert_path.read_text()
    base = {"server_cert": None, "client_cert_name": "CN=gateway", "tls_version": 0x0304}
    cases = [
        {**base, "client_cert_chain": [pem], "client_cert_error": "certificate has expired"},
        {**base, "client_cert_chain": [], "client_cert_error": None},
        {**base, "client_cert_chain": ["-----BEGIN CERTIFICATE-----\nAAAA\n"]},
    ]
    for tls in cases:
        info = tls_info({"type": "http", "extensions": {"tls": tls}})
        assert info == TlsInfo(
            identity=None,
            subject=None,
            fingerprint_sha256=None,
            tls_version=0x0304,
            cipher_suite=None,
        )


# -- the uvicorn surface this relies on ------------------------------------------------------


def test_uvicorn_surface_we_rely_on() -> None:
    """Fails loudly if uvicorn renames what tlsserver hooks into (see its docstring)."""
    params = inspect.signature(uvicorn.Config).parameters
    assert {"http", "ws", "ssl_context_factory", "proxy_headers"} <= params.keys()
    factory = inspect.signature(uvicorn.Config).parameters["ssl_context_factory"]
    assert "Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]" in str(
        factory.annotation
    )
    assert WS_PROTOCOLS["none"] is None
    for cls, request_start in (
        (H11Protocol, "handle_events"),
        (HttpToolsProtocol, "on_headers_complete"),
    ):
        assert "connection_made" in vars(cls)
        assert "self.app = config.loaded_app" in inspect.getsource(cls.__init__)
        assert "app = self.app" in inspect.getsource(getattr(cls, request_start))
    assert issubclass(tlsserver.MtlsH11Protocol, H11Protocol)
    assert issubclass(tlsserver.MtlsHttpToolsProtocol, HttpToolsProtocol)


class FakeTransport:
    """A plain (non-TLS) transport, as uvicorn's connection_made sees it."""

    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8443)}.get(
            name, default
        )

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_connection_without_client_certificate_is_closed_not_served(certs: Certs) -> None:
    calls: list[str] = []
    vault = certs.pki.cert_for("vault")
    config = MtlsConfig(
        echo_app(calls),
        cert=vault.cert_path,
        key=vault.key_path,
        ca_bundle=certs.pki.ca_bundle_path(),
        http="h11",
        lifespan="off",
    )
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = MtlsH11Protocol(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        transport = FakeTransport()
        protocol.connection_made(transport)
        assert transport.closed
        assert protocol.app is tlsserver._refuse
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        loop.run_until_complete(protocol.app({"type": "http"}, receive, send))
        assert sent[0]["status"] == 403
        assert calls == []
    finally:
        loop.close()


def test_config_refuses_settings_it_owns(certs: Certs) -> None:
    vault = certs.pki.cert_for("vault")
    with pytest.raises(TypeError, match="ssl_certfile"):
        make_uvicorn_config(
            echo_app([]),
            host="127.0.0.1",
            port=0,
            cert=vault.cert_path,
            key=vault.key_path,
            ca_bundle=certs.pki.ca_bundle_path(),
            ssl_certfile=str(vault.cert_path),
        )


def test_server_context_is_tls13_and_requires_client_certs(certs: Certs) -> None:
    vault = certs.pki.cert_for("vault")
    ctx = tlsserver.server_ssl_context(
        cert=vault.cert_path, key=vault.key_path, ca_bundle=certs.pki.ca_bundle_path()
    )
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.num_tickets == 0
    client = client_ssl_context(cert=None, key=None, ca_bundle=certs.pki.ca_bundle_path())
    assert client.check_hostname
    assert client.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError):
        client_ssl_context(cert=None, key=vault.key_path, ca_bundle=certs.pki.ca_bundle_path())
