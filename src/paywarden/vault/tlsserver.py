"""Mutual TLS for an ASGI app under uvicorn, with the client certificate in the scope.

uvicorn terminates TLS but does not tell the application who the client is.
This module fills that gap without a proxy and without trusting any HTTP
header: the TLS handshake itself (``CERT_REQUIRED`` against our CA bundle)
refuses clients without a valid certificate, and a thin subclass of uvicorn's
HTTP protocol copies the verified peer certificate of *its own connection* into
every request's ``scope["extensions"]["tls"]``, following the ASGI TLS
extension (asgiref ``specs/tls.rst``, version 0.2)::

    server_cert        PEM of our server certificate (None if unknown)
    client_cert_chain  [PEM of the client leaf]  (Python's ssl exposes only the leaf)
    client_cert_name   RFC 4514 subject of the leaf
    client_cert_error  None (unverified certificates never get this far)
    tls_version        0x0304 for TLS 1.3
    cipher_suite       IANA number, e.g. 0x1301 for TLS_AES_128_GCM_SHA256

Applications read it through :func:`tls_info`.

What this relies on in uvicorn (0.54), pinned by ``tests/vault/test_tlsserver.py``:

* ``Config(http=<protocol class>, ssl_context_factory=f)`` where ``f(config,
  default_factory)`` returns the ``ssl.SSLContext``;
* ``H11Protocol`` / ``HttpToolsProtocol`` have ``connection_made(transport)``,
  called once per connection after the TLS handshake, and read ``self.app``
  each time they start a request (``handle_events`` / ``on_headers_complete``);
* the transport answers ``get_extra_info("ssl_object")`` with an ``ssl.SSLObject``
  (true for asyncio's and uvloop's TLS transports).

WebSockets are switched off (``ws="none"``): uvicorn's WebSocket protocols take
the app from the config, not from the HTTP protocol, so they would bypass the
wrapper. ``proxy_headers`` is off: the vault sits behind no proxy.

TLS 1.3 only, on both sides. Both peers are ours, so nothing needs 1.2; 1.3
has only AEAD suites and encrypts the client certificate. One consequence: in
TLS 1.3 the client finishes its handshake before the server has checked the
client certificate, and asyncio closes the refused connection without flushing
the alert, so the client sees a bare disconnect on its first read (httpx
``RemoteProtocolError``) rather than a ``ConnectError`` naming the reason.
Either way the application is never called. Refused handshakes are not logged
(asyncio reports TLS handshake errors only in debug mode).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from paywarden.vault.crypto.pki import identity_from_der

__all__ = [
    "MtlsConfig",
    "MtlsH11Protocol",
    "MtlsHttpToolsProtocol",
    "TlsInfo",
    "client_ssl_context",
    "make_uvicorn_config",
    "run_mtls",
    "server_ssl_context",
    "tls_info",
]

log = logging.getLogger("paywarden.vault.tls")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# TLS protocol version numbers (RFC 8446 section 4.1.2 / RFC 5246 appendix A.1).
TLS_VERSIONS: dict[str, int] = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# TLS 1.3 cipher suites (RFC 8446 appendix B.4); OpenSSL reports their IANA names.
CIPHER_SUITES: dict[str, int] = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_AES_128_CCM_SHA256": 0x1304,
    "TLS_AES_128_CCM_8_SHA256": 0x1305,
}
ALPN = ["http/1.1"]


# -- contexts ---------------------------------------------------------------------


def server_ssl_context(*, cert: Path, key: Path, ca_bundle: Path) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate from ``ca_bundle``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.load_verify_locations(cafile=ca_bundle)
    # No session tickets: a resumed session skips certificate verification, so a
    # client whose certificate expired since its first handshake could still get in.
    ctx.num_tickets = 0
    ctx.set_alpn_protocols(ALPN)
    return ctx


def client_ssl_context(*, cert: Path | None, key: Path | None, ca_bundle: Path) -> ssl.SSLContext:
    """TLS 1.3 client context trusting only ``ca_bundle``; for ``httpx.Client(verify=ctx)``.

    ``cert``/``key`` are the client certificate; pass ``None`` for both to
    connect without one (the vault will refuse; useful in tests).
    """
    if cert is None and key is not None:
        raise ValueError("a client key needs its certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=ca_bundle)
    if cert is not None:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.set_alpn_protocols(ALPN)
    return ctx


# -- the scope extension ------------------------------------------------------------


def _tls_extension(ssl_object: ssl.SSLObject, server_cert: str | None) -> dict[str, Any] | None:
    """The ASGI ``tls`` extension for one connection, or None without a peer certificate."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": server_cert,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
        "client_cert_name": x509.load_der_x509_certificate(der).subject.rfc4514_string(),
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": CIPHER_SUITES.get(cipher[0]) if cipher else None,
    }


class _WithTls:
    """Wraps a connection's app: each request's scope gets this connection's TLS facts."""

    def __init__(self, app: AsgiApp, extension: dict[str, Any]) -> None:
        self.app = app
        self.extension = extension

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            tls = dict(self.extension)
            tls["client_cert_chain"] = list(tls["client_cert_chain"])  # each request its own
            scope = dict(scope)
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands in for the app on a connection without a verified client certificate."""
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 403, "headers": [(b"connection", b"close")]}
    )
    await send({"type": "http.response.body", "body": b""})


def _attach_tls(protocol: H11Protocol | HttpToolsProtocol, transport: Any) -> None:
    """Called right after uvicorn's ``connection_made``: wrap ``protocol.app`` or refuse."""
    ssl_object = transport.get_extra_info("ssl_object")
    extension = None
    if isinstance(ssl_object, ssl.SSLObject):
        server_cert = getattr(protocol.config, "server_cert_pem", None)
        extension = _tls_extension(ssl_object, server_cert)
    if extension is None:
        # Fail closed: the context should make this impossible (CERT_REQUIRED),
        # but a protocol class reused with a plain or lax context must not serve.
        log.warning("connection without a verified client certificate closed")
        protocol.app = _refuse
        transport.close()
        return
    protocol.app = _WithTls(protocol.app, extension)


class MtlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI TLS extension to every request."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _attach_tls(self, transport)


class MtlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, adding the ASGI TLS extension to every request."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _attach_tls(self, transport)


_PROTOCOLS: dict[str, type[H11Protocol] | type[HttpToolsProtocol]] = {
    "h11": MtlsH11Protocol,
    "httptools": MtlsHttpToolsProtocol,
}


# -- reading it back ------------------------------------------------------------------


@dataclass(frozen=True)
class TlsInfo:
    """What the application may rely on about the caller; ``identity`` None = unknown."""

    identity: str | None
    subject: str | None
    fingerprint_sha256: str | None
    tls_version: int | None
    cipher_suite: int | None


@lru_cache(maxsize=256)
def _leaf_facts(pem: str) -> tuple[str | None, str]:
    der = ssl.PEM_cert_to_DER_cert(pem)
    return identity_from_der(der), hashlib.sha256(der).hexdigest()


def tls_info(scope: MutableMapping[str, Any]) -> TlsInfo | None:
    """The TLS facts of a request, or None if it did not arrive over TLS (no extension).

    ``identity`` is None when there is no client certificate or the server
    reported it unverified (``client_cert_error``): never trust it then.
    """
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls")
    if not isinstance(tls, dict):
        return None
    chain = list(tls.get("client_cert_chain") or ())
    identity = fingerprint = None
    if chain and tls.get("client_cert_error") is None:
        try:
            identity, fingerprint = _leaf_facts(str(chain[0]))
        except ValueError:
            identity = fingerprint = None
    return TlsInfo(
        identity=identity,
        subject=tls.get("client_cert_name") if identity else None,
        fingerprint_sha256=fingerprint,
        tls_version=tls.get("tls_version"),
        cipher_suite=tls.get("cipher_suite"),
    )


# -- serving ----------------------------------------------------------------------------


class MtlsConfig(uvicorn.Config):
    """A ``uvicorn.Config`` that serves only mutual TLS with the TLS extension in scope.

    ``http`` picks the parser: ``"httptools"`` (default, C) or ``"h11"`` (pure Python).
    """

    def __init__(
        self,
        app: Any,
        *,
        cert: Path,
        key: Path,
        ca_bundle: Path,
        http: str = "httptools",
        **kwargs: Any,
    ) -> None:
        clashing = {
            "ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "ssl_cert_reqs",
            "ssl_context_factory", "ws", "proxy_headers",
        } & kwargs.keys()  # fmt: skip
        if clashing:
            raise TypeError(f"MtlsConfig sets these itself: {sorted(clashing)}")
        if http not in _PROTOCOLS:
            raise ValueError(f"http must be one of {sorted(_PROTOCOLS)}")
        self.tls_cert = Path(cert)
        self.tls_key = Path(key)
        self.tls_ca_bundle = Path(ca_bundle)
        self.server_cert_pem: str | None = None
        super().__init__(
            app,
            http=_PROTOCOLS[http],
            ws="none",
            proxy_headers=False,
            ssl_context_factory=self._ssl_context,
            **kwargs,
        )

    def _ssl_context(self, _config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        ctx = server_ssl_context(cert=self.tls_cert, key=self.tls_key, ca_bundle=self.tls_ca_bundle)
        # For the scope's server_cert; read right after the context loaded the file.
        self.server_cert_pem = self.tls_cert.read_text(encoding="ascii")
        return ctx


def make_uvicorn_config(
    app: Any, *, host: str, port: int, cert: Path, key: Path, ca_bundle: Path, **kwargs: Any
) -> uvicorn.Config:
    """A uvicorn config serving ``app`` over mutual TLS (see :class:`MtlsConfig`)."""
    kwargs.setdefault("server_header", False)
    return MtlsConfig(app, host=host, port=port, cert=cert, key=key, ca_bundle=ca_bundle, **kwargs)


def run_mtls(
    app: Any,
    *,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    ca_bundle: Path,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` over mutual TLS until interrupted (blocking)."""
    config = make_uvicorn_config(
        app, host=host, port=port, cert=cert, key=key, ca_bundle=ca_bundle, log_level=log_level
    )
    uvicorn.Server(config).run()
