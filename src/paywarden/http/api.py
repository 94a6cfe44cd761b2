"""Turns declarative endpoints into Starlette routes with Stripe's semantics.

Per request, in this order: body size cap, decoding, failed-auth throttle,
authentication, authorization (scopes / publishable allow-list), parameter
validation, idempotency, then the handler. Errors at any step come back as
Stripe's error envelope; unexpected exceptions become a generic 500 whose
details go only to the server log (by request id), never to the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paywarden.audit.errors import AuditError
from paywarden.core.errors import (
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    ParameterError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StripeError,
)
from paywarden.core.ids import new_id
from paywarden.http import auditing
from paywarden.http.cardguard import card_fingerprint, refuse_card_data_in_url, take_card_data
from paywarden.http.forms import build_nested, decode_form, decode_json
from paywarden.http.params import Param, validate
from paywarden.idempotency.service import IdempotencyStore, Reservation, fingerprint
from paywarden.tenancy.keys import hint
from paywarden.tenancy.scopes import allows
from paywarden.tenancy.service import AuthContext, authenticate, record_security_event
from paywarden.vault.client import CardData

if TYPE_CHECKING:
    from paywarden.gateway.container import Gateway

log = logging.getLogger("paywarden.http")
_PATH_ID_RE = re.compile(r"[A-Za-z0-9_]{1,128}")


@dataclass(frozen=True)
class Call:
    """Everything a handler may know about the request."""

    auth: AuthContext
    request_id: str
    idempotency_key: str | None
    source_ip: str
    # Set when this request took over an idempotency key whose first holder
    # died after creating this object: resume it, do not create another.
    recovered_id: str | None = None
    idempotent: bool = False
    # Card data lifted out of the parameters on intake endpoints (masked).
    card: CardData | None = None
    # The caller's User-Agent and Accept-Language: the customer's own when a
    # browser calls with a publishable key (fraud signals).
    user_agent: str | None = None
    accept_language: str | None = None

    def remember(self, session: Session, object_id: str) -> None:
        """Tie a newly created object to this request's idempotency key, in the
        same transaction that creates it."""
        if self.idempotent and self.idempotency_key:
            IdempotencyStore.remember(
                session,
                account_id=self.auth.account_id,
                livemode=self.auth.livemode,
                key=self.idempotency_key,
                object_id=object_id,
            )

    @property
    def account_id(self) -> str:
        return self.auth.account_id

    @property
    def livemode(self) -> bool:
        return self.auth.livemode


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    spec: Mapping[str, Param]
    resource: str
    write: bool
    publishable: bool = False
    # Accepts card data (relayed to the vault, never kept).
    card_intake: bool = False


class _TooLarge(Exception):
    pass


def json_response(
    status: int, body: str, request_id: str, extra: Mapping[str, str] | None = None
) -> Response:
    headers = {"Request-Id": request_id, "Cache-Control": "no-cache, no-store"}
    if extra:
        headers.update(extra)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_response(err: StripeError, request_id: str) -> Response:
    return json_response(err.status, dumps(err.to_dict()), request_id, err.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("Invalid Content-Length header.")
        if int(declared) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_params(request: Request, limit: int) -> dict[str, Any]:
    query = request.url.query
    params: dict[str, Any] = {}
    if query:
        if len(query) > limit:
            raise _TooLarge
        params = decode_form(query)
        refuse_card_data_in_url(params)
    if request.method in ("POST", "PUT", "PATCH"):
        body = await _read_body(request, limit)
        if body.strip():
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/json":
                data = decode_json(body)
            elif ctype in ("application/x-www-form-urlencoded", ""):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidRequestError("The request body is not valid UTF-8.") from exc
                data = decode_form(text)
            else:
                raise InvalidRequestError(
                    f"Unsupported Content-Type {ctype[:60]!r}; send "
                    "application/x-www-form-urlencoded or application/json."
                )
            for k in data:
                if k in params:
                    raise InvalidRequestError(
                        f"Parameter {k!r} was given in both the query and the body.", param=k
                    )
            params.update(data)
    return params


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value
    if scheme == "basic":
        # curl -u KEY: (Stripe accepts the key as the basic-auth user name)
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.split(":", 1)[0]
    return ""


def source_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def make_route(gw: Gateway, ep: Endpoint) -> Route:
    async def endpoint(request: Request) -> Response:
        rid: str = request.scope.get("paywarden.request_id") or new_id("req", 14)
        started = time.perf_counter()
        try:
            params = await read_params(request, gw.settings.max_body_bytes)
            raw_key = bearer_key(request)
            status, body, extra = await run_in_threadpool(
                _process,
                gw,
                ep,
                raw_key,
                params,
                dict(request.path_params),
                source_of(request),
                rid,
                request.headers.get("idempotency-key"),
                (request.headers.get("user-agent"), request.headers.get("accept-language")),
            )
            resp = json_response(status, body, rid, extra)
        except _TooLarge:
            resp = error_response(
                InvalidRequestError(
                    f"Request body too large (limit {gw.settings.max_body_bytes} bytes).",
                    code="request_too_large",
                ),
                rid,
            )
            resp.status_code = 413
        except StripeError as err:
            resp = error_response(err, rid)
        except Exception:
            log.exception("unhandled error request_id=%s route=%s %s", rid, ep.method, ep.path)
            resp = error_response(
                ApiError(
                    "An unexpected error occurred. Quote the Request-Id if you contact support."
                ),
                rid,
            )
        log.info(
            "request_id=%s method=%s route=%s status=%s ms=%.1f",
            rid,
            ep.method,
            ep.path,
            resp.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return resp

    return Route(ep.path, endpoint, methods=[ep.method])


def _process(
    gw: Gateway,
    ep: Endpoint,
    raw_key: str | None,
    params: dict[str, Any],
    path_params: dict[str, str],
    source: str,
    rid: str,
    idem_key: str | None,
    client: tuple[str | None, str | None] = (None, None),
) -> tuple[int, str, dict[str, str]]:
    auth = _authenticate(gw, raw_key, source, rid)
    _authorize(gw, ep, auth, source, rid)
    card = take_card_data(params, intake=ep.card_intake, vault_enabled=gw.vault is not None)
    for name, value in path_params.items():
        if not _PATH_ID_RE.fullmatch(value):
            raise InvalidRequestError(
                f"Invalid {name}: must be an object id.", code="resource_missing", param=name
            )
    values = validate(params, ep.spec)
    call = Call(
        auth=auth,
        request_id=rid,
        idempotency_key=idem_key,
        source_ip=source,
        card=card,
        user_agent=(client[0] or "")[:512] or None,
        accept_language=(client[1] or "")[:256] or None,
    )
    if ep.method != "POST" or not idem_key:
        return _execute(gw, ep, call, values, path_params)
    # The key kind is part of the request's identity: a publishable key must
    # not replay what a secret key's request returned.
    identity: dict[str, Any] = {"~key": auth.kind, **params}
    if card is not None:
        identity["~card"] = card_fingerprint(card, gw.secrets.api_key_pepper)
    fp = fingerprint(ep.method, ep.path.format(**path_params), identity)
    now = gw.clock.now()
    stored = gw.idempotency.begin(
        account_id=auth.account_id,
        livemode=auth.livemode,
        key=idem_key,
        method=ep.method,
        path=ep.path.format(**path_params),
        fp=fp,
        now=now,
    )
    if isinstance(stored, Reservation):
        call = dataclasses.replace(call, recovered_id=stored.recovery_point, idempotent=True)
    else:
        return (
            stored.status,
            stored.body,
            {"Idempotent-Replayed": "true", "Idempotency-Key": idem_key},
        )
    try:
        status, body, extra = _execute(gw, ep, call, values, path_params)
    except (ParameterError, ServiceUnavailableError):
        # Parameters judged invalid by the handler, or a dependency down:
        # nothing ran, nothing is stored, a retry may succeed.
        gw.idempotency.release(account_id=auth.account_id, livemode=auth.livemode, key=idem_key)
        raise
    except StripeError as err:
        status, body, extra = err.status, dumps(err.to_dict()), dict(err.headers)
    # Any other exception leaves the reservation in flight: after its lock
    # expires a retry takes it over and resumes what was created (Reservation).
    gw.idempotency.complete(
        account_id=auth.account_id, livemode=auth.livemode, key=idem_key, status=status, body=body
    )
    extra = {**extra, "Idempotency-Key": idem_key}
    return status, body, extra


def _execute(
    gw: Gateway, ep: Endpoint, call: Call, values: dict[str, Any], path_params: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    what = auditing.audited(ep.method, ep.path)
    if what is None or gw.audit is None:
        result = ep.handler(gw, call, values, **path_params)
        return 200, dumps(result), {}
    object_id = path_params.get("id")
    # On the record before it runs: if the log cannot take the entry, the
    # action does not happen (PCI DSS 10.2: no unaudited action). The outcome
    # follows as a second entry with the same request id.
    try:
        auditing.record_call(
            gw, call, ("api.call_started", what[1]), outcome="success",
            object_id=object_id, details={"action": what[0]},
        )  # fmt: skip
    except AuditError:
        log.exception("audit log unavailable before %s %s", ep.method, ep.path)
        raise ServiceUnavailableError(
            "The audit log could not record this action, so it was not carried out. Try again.",
            code="audit_unavailable",
        ) from None
    try:
        result = ep.handler(gw, call, values, **path_params)
    except StripeError as err:
        try:
            auditing.record_call(
                gw,
                call,
                what,
                outcome="failure",
                object_id=object_id,
                details={"status": err.status, "code": err.code},
            )
        except AuditError:
            log.exception("audit log unavailable after a failed %s %s", ep.method, ep.path)
        raise
    created = result.get("id") if isinstance(result, dict) else None
    try:
        auditing.record_call(
            gw,
            call,
            what,
            outcome="success",
            object_id=object_id or (str(created) if created else None),
        )
    except AuditError:
        # It happened, and its start is on the record: answer truthfully.
        log.exception("audit log unavailable after %s %s", ep.method, ep.path)
    return 200, dumps(result), {}


def _authenticate(gw: Gateway, raw_key: str | None, source: str, rid: str) -> AuthContext:
    if gw.failures.count(source) >= gw.settings.auth_failure_limit:
        raise RateLimitError(
            "Too many failed authentication attempts from this address. Try again later.",
            headers={"Retry-After": str(gw.settings.auth_failure_window_seconds)},
        )
    if not raw_key:
        err = AuthenticationError(
            "You did not provide an API key. Provide it in the Authorization header "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
        _fail(gw, "auth_missing", source, rid, None, err)
    assert raw_key is not None
    now = int(gw.clock.now())
    try:
        with gw.db.read_engine.connect() as conn:
            return authenticate(conn, raw_key=raw_key, pepper=gw.secrets.api_key_pepper, now=now)
    except AuthenticationError as err:
        _fail(gw, "auth_failed", source, rid, hint(raw_key), err)
        raise  # unreachable: _fail raises


def _fail(
    gw: Gateway, kind: str, source: str, rid: str, key_hint: str | None, err: StripeError
) -> None:
    gw.failures.record(source)
    with gw.db.write() as s:
        record_security_event(
            s,
            kind=kind,
            source=source,
            now=int(gw.clock.now()),
            request_id=rid,
            key_hint=key_hint,
            detail=err.code,
        )
    auditing.record_auth_failure(
        gw, kind=kind, source=source, request_id=rid, code=err.code, key_hint=key_hint
    )
    raise err


def _authorize(gw: Gateway, ep: Endpoint, auth: AuthContext, source: str, rid: str) -> None:
    if auth.kind == "secret":
        return
    if auth.kind == "publishable":
        if ep.publishable:
            return
        msg = (
            "This API call cannot be made with a publishable API key. Please use a secret API key."
        )
    elif allows(auth.scopes, ep.resource, ep.write):
        return
    else:
        level = "write" if ep.write else "read"
        msg = (
            f"The provided key does not have the required permissions for this endpoint: "
            f"it needs '{ep.resource}' {level} access."
        )
    err = PermissionDeniedError(
        msg, code="secret_key_required" if auth.kind == "publishable" else None
    )
    # Denials count against the source like failed authentications: a public
    # publishable key must not buy unlimited writes to the security log.
    gw.failures.record(source)
    with gw.db.write() as s:
        record_security_event(
            s,
            kind="authz_denied",
            source=source,
            now=int(gw.clock.now()),
            request_id=rid,
            account_id=auth.account_id,
            detail=f"{ep.method} {ep.path}",
        )
    auditing.record_auth_failure(
        gw,
        kind="authz_denied",
        source=source,
        request_id=rid,
        code=err.code,
        account_id=auth.account_id,
        key_id=auth.key_id,
        target=f"{ep.method} {ep.path}",
    )
    raise err


class RequestIdMiddleware:
    """Every response carries a Request-Id, including 404s and framework errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_id("req", 14)
        scope["paywarden.request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"request-id" for k, _ in headers):
                    headers.append((b"request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


async def not_found(request: Request, exc: Exception) -> Response:
    rid = request.scope.get("paywarden.request_id", "")
    status = getattr(exc, "status_code", 404)
    if status == 405:
        err: StripeError = InvalidRequestError(
            f"Unrecognized request URL ({request.method}: {request.url.path[:200]}).",
        )
        err.status = 405
    else:
        err = InvalidRequestError(
            f"Unrecognized request URL ({request.method}: {request.url.path[:200]}). "
            "Please see the API reference.",
        )
        err.status = 404
    return error_response(err, rid)


AsyncHandler = Callable[[Request], Awaitable[Response]]

__all__ = ["Call", "Endpoint", "RequestIdMiddleware", "build_nested", "make_route", "not_found"]
