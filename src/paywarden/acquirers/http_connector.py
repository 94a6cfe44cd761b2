"""An :class:`~paywarden.acquirers.base.AcquirerConnector` over HTTP (httpx, sync,
pooled), speaking the sandbox acquirer's JSON API.

Error mapping — what a failure tells the caller about money movement:

============================================  ===========================  ==================
What happened                                  Raised                       Did it act?
============================================  ===========================  ==================
connect error, connect timeout, pool timeout   AcquirerUnavailable          no: failover safe
HTTP 503                                       AcquirerUnavailable          no: failover safe
read/write timeout, RemoteProtocolError,       AcquirerOutcomeUnknown       maybe: reconcile
ReadError/WriteError, any other transport
error once the request may have been sent
HTTP 500, 502, 504 (and any other 5xx)         AcquirerOutcomeUnknown       maybe: reconcile
2xx with a body that is not what we expect     AcquirerOutcomeUnknown       maybe: reconcile
HTTP 404 on a lookup (by idempotency key or    AcquirerNotFound             no record
authentication id)
any other 4xx (400, 401, 404 on an action...)  AcquirerError(message)       no (request refused)
the card vault unreachable (vaulted cards)     CardVaultUnavailable         no
============================================  ===========================  ==================

An authorization on a vaulted card (``card.vault_token``) does not go to the
acquirer directly: the vault's forward endpoint sends it, with the card number
filled in, to the acquirer of the same name on its own allow-list, and relays
the acquirer's status and body, which are then read exactly as above.

Every mutating call sends the caller's ``Idempotency-Key``, so a retry or a
reconciliation lookup with the same key never moves money twice.

The bearer token is a :class:`~paywarden.core.secrets.Secret`, revealed only while
building a request's headers. Exceptions carry the acquirer name, the operation and
the acquirer's own error message, never the token; they are raised ``from None`` so
the httpx exception (whose request holds the Authorization header) is not chained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from paywarden.acquirers.base import (
    AcquirerConnector,
    AcquirerError,
    AcquirerNotFound,
    AcquirerOutcomeUnknown,
    AcquirerUnavailable,
    AuthenticationStatus,
    AuthorizationRequest,
    AuthorizationResult,
    CaptureResult,
    CardVaultUnavailable,
    RefundResult,
)
from paywarden.core.secrets import Secret
from paywarden.vault.client import (
    VaultClient,
    VaultFailure,
    VaultOutcomeUnknown,
    VaultUnavailable,
)

_UNAVAILABLE_STATUSES: Final = frozenset({503})
_MAX_MESSAGE: Final = 300


class HttpAcquirerConnector:
    """Connector for one acquirer at ``base_url`` (e.g. ``http://127.0.0.1:8431``).

    ``timeout`` bounds reads, writes and pool waits; ``connect_timeout`` bounds
    establishing the TCP connection. Pass ``client`` to share a pool; otherwise the
    connector owns one and :meth:`close` closes it.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        token: Secret,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        client: httpx.Client | None = None,
        vault: VaultClient | None = None,
    ) -> None:
        if not isinstance(token, Secret):
            raise TypeError("token must be a Secret")
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._owns_client = client is None
        self._vault = vault
        self._client = client or httpx.Client(
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
            follow_redirects=False,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"HttpAcquirerConnector(name={self.name!r}, base_url={self._base_url!r})"

    # ------------------------------------------------------------ operations

    def authorize(self, req: AuthorizationRequest, *, idempotency_key: str) -> AuthorizationResult:
        card: dict[str, Any] = {}
        if req.card.test_ref is not None:
            card["test_ref"] = req.card.test_ref
        if req.card.exp_month is not None:
            card["exp_month"] = req.card.exp_month
        if req.card.exp_year is not None:
            card["exp_year"] = req.card.exp_year
        body: dict[str, Any] = {
            "amount": req.amount,
            "currency": req.currency,
            "capture": req.capture,
            "card": card,
            "merchant_reference": req.merchant_reference,
        }
        for field_name in ("description", "authentication_id", "return_url"):
            value = getattr(req, field_name)
            if value is not None:
                body[field_name] = value
        if req.request_three_d_secure:
            body["three_d_secure"] = "required"
        if req.card.vault_token is not None:
            data = self._forward(req, body, idempotency_key)
        else:
            data = self._call(
                "POST",
                "/v1/authorizations",
                "authorize",
                json=body,
                idempotency_key=idempotency_key,
            )
        return self._authorization(data, "authorize")

    def _forward(
        self, req: AuthorizationRequest, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        prefix = f"acquirer {self.name}: authorize via vault"
        if self._vault is None or req.card.vault_account is None:
            raise AcquirerError(f"{prefix}: no card vault is configured")
        try:
            status, data = self._vault.forward_authorization(
                token=req.card.vault_token or "",
                account_id=req.card.vault_account,
                destination=self.name,
                body=body,
                headers=self._headers(idempotency_key),
            )
        except VaultUnavailable:
            raise CardVaultUnavailable(f"{prefix}: the card vault is unavailable") from None
        except VaultOutcomeUnknown:
            raise AcquirerOutcomeUnknown(f"{prefix}: no answer, outcome unknown") from None
        except VaultFailure as exc:
            if exc.code == "destination_unavailable":
                raise AcquirerUnavailable(f"{prefix}: cannot connect") from None
            if exc.code == "destination_outcome_unknown":
                raise AcquirerOutcomeUnknown(f"{prefix}: no answer, outcome unknown") from None
            raise AcquirerError(f"{prefix}: vault refused ({exc.code})") from None
        message = "" if 200 <= status < 300 else (_message_from(data) or "no detail")
        return self._interpret(status, data, message, prefix, "authorize", lookup=False)

    def capture(self, reference: str, amount: int, *, idempotency_key: str) -> CaptureResult:
        data = self._call(
            "POST",
            f"/v1/authorizations/{_seg(reference)}/capture",
            "capture",
            json={"amount": amount},
            idempotency_key=idempotency_key,
        )
        auth = self._authorization(data, "capture")
        return CaptureResult(
            reference=auth.reference,
            status="captured" if auth.status == "captured" else "failed",
            amount_captured=auth.amount_captured,
            raw=data,
        )

    def void(self, reference: str, *, idempotency_key: str) -> AuthorizationResult:
        data = self._call(
            "POST",
            f"/v1/authorizations/{_seg(reference)}/void",
            "void",
            json={},
            idempotency_key=idempotency_key,
        )
        return self._authorization(data, "void")

    def refund(self, reference: str, amount: int, *, idempotency_key: str) -> RefundResult:
        data = self._call(
            "POST",
            f"/v1/authorizations/{_seg(reference)}/refunds",
            "refund",
            json={"amount": amount},
            idempotency_key=idempotency_key,
        )
        return self._refund(data, "refund")

    def lookup_authorization(self, idempotency_key: str) -> AuthorizationResult:
        data = self._call(
            "GET",
            "/v1/authorizations",
            "lookup_authorization",
            params={"idempotency_key": idempotency_key},
            lookup=True,
        )
        return self._authorization(data, "lookup_authorization")

    def lookup_refund(self, idempotency_key: str) -> RefundResult:
        data = self._call(
            "GET",
            "/v1/refunds",
            "lookup_refund",
            params={"idempotency_key": idempotency_key},
            lookup=True,
        )
        return self._refund(data, "lookup_refund")

    def authentication_status(self, authentication_id: str) -> AuthenticationStatus:
        data = self._call(
            "GET",
            f"/v1/authentications/{_seg(authentication_id)}",
            "authentication_status",
            lookup=True,
        )
        try:
            return AuthenticationStatus(id=_str(data, "id"), status=_str(data, "status"))
        except (KeyError, TypeError, ValueError):
            raise self._malformed("authentication_status") from None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # ------------------------------------------------------------- transport

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._token.reveal()}",
            "Accept": "application/json",
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        lookup: bool = False,
    ) -> dict[str, Any]:
        prefix = f"acquirer {self.name}: {operation}"
        try:
            response = self._client.request(
                method,
                self._base_url + path,
                json=json,
                params=params,
                headers=self._headers(idempotency_key),
                timeout=self._timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the acquirer.
            raise AcquirerUnavailable(f"{prefix}: cannot connect ({_describe(exc)})") from None
        except httpx.UnsupportedProtocol as exc:
            raise AcquirerUnavailable(f"{prefix}: bad acquirer URL ({_describe(exc)})") from None
        except httpx.TransportError as exc:
            # ReadTimeout, WriteTimeout, RemoteProtocolError, ReadError, WriteError...:
            # the request may have been sent and acted on.
            raise AcquirerOutcomeUnknown(
                f"{prefix}: no answer, outcome unknown ({_describe(exc)})"
            ) from None

        status = response.status_code
        parsed: Any = None
        if 200 <= status < 300:
            try:
                parsed = response.json()
            except ValueError:
                raise self._malformed(operation) from None
        message = "" if 200 <= status < 300 else _error_message(response)
        return self._interpret(status, parsed, message, prefix, operation, lookup=lookup)

    def _interpret(
        self, status: int, data: Any, message: str, prefix: str, operation: str, *, lookup: bool
    ) -> dict[str, Any]:
        if 200 <= status < 300:
            if not isinstance(data, dict):
                raise self._malformed(operation)
            return data
        if status in _UNAVAILABLE_STATUSES:
            raise AcquirerUnavailable(f"{prefix}: HTTP {status} ({message})")
        if status >= 500:
            raise AcquirerOutcomeUnknown(f"{prefix}: HTTP {status}, outcome unknown ({message})")
        if status == 404 and lookup:
            raise AcquirerNotFound(f"{prefix}: not found ({message})")
        raise AcquirerError(f"{prefix}: HTTP {status}: {message}")

    def _malformed(self, operation: str) -> AcquirerOutcomeUnknown:
        return AcquirerOutcomeUnknown(
            f"acquirer {self.name}: {operation}: unexpected response body, outcome unknown"
        )

    # ------------------------------------------------------------- decoding

    def _authorization(self, data: dict[str, Any], operation: str) -> AuthorizationResult:
        try:
            authentication = data.get("authentication")
            auth_id = auth_url = None
            if authentication is not None:
                if not isinstance(authentication, dict):
                    raise TypeError("authentication")
                auth_id = _opt_str(authentication, "id")
                auth_url = _opt_str(authentication, "url")
            return AuthorizationResult(
                reference=_str(data, "id"),
                status=_str(data, "status"),
                amount=_int(data, "amount"),
                amount_captured=_int(data, "amount_captured"),
                currency=_str(data, "currency"),
                decline_code=_opt_str(data, "decline_code"),
                network_status=_str(data, "network_status"),
                message=_opt_str(data, "message"),
                authentication_id=auth_id,
                authentication_url=auth_url,
                raw=data,
            )
        except (KeyError, TypeError, ValueError):
            raise self._malformed(operation) from None

    def _refund(self, data: dict[str, Any], operation: str) -> RefundResult:
        try:
            return RefundResult(
                reference=_str(data, "id"),
                status=_str(data, "status"),
                amount=_int(data, "amount"),
                failure_reason=_opt_str(data, "failure_reason"),
                raw=data,
            )
        except (KeyError, TypeError, ValueError):
            raise self._malformed(operation) from None


def _seg(value: str) -> str:
    """One URL path segment, whatever the id holds."""
    return quote(value, safe="")


def _describe(exc: httpx.HTTPError) -> str:
    # httpx messages name the host and the OS error, never request headers.
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text[:_MAX_MESSAGE]}"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    return _message_from(body) or response.reason_phrase or "no detail"


def _message_from(body: Any) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type")
            if isinstance(message, str):
                text = f"{kind}: {message}" if isinstance(kind, str) else message
                return text[:_MAX_MESSAGE]
    return None


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(key)
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(key)
    return value


if TYPE_CHECKING:  # the class satisfies the protocol (checked by mypy)
    _PROTOCOL_CHECK: type[AcquirerConnector] = HttpAcquirerConnector
