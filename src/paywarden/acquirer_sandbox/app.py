"""The sandbox acquirer: a real HTTP service the gateway's connectors talk to.

JSON API (every ``/v1`` and ``/_control`` route needs ``Authorization: Bearer <token>``):

* ``POST /v1/authorizations`` (``Idempotency-Key`` required) — authorize, maybe capture.
* ``POST /v1/authorizations/{id}/capture`` (key required) ``{amount?}`` — once, partial ok.
* ``POST /v1/authorizations/{id}/void`` (key optional) — uncaptured authorizations only.
* ``POST /v1/authorizations/{id}/refunds`` (key required) ``{amount?}``.
* ``GET /v1/authorizations/{id}``, ``GET /v1/authorizations?idempotency_key=K``,
  ``GET /v1/refunds?idempotency_key=K``, ``GET /v1/authentications/{id}``.
* ``POST|GET /_control/faults``, ``POST /_control/reset``, ``GET /_control/stats``.

Customer-facing (no auth): ``GET /3ds/{id}`` (the ACS simulator page) and
``POST /3ds/{id}/complete`` (form ``result=authenticated|failed``); ``GET /healthz``.

A repeated ``Idempotency-Key`` with the same request replays the first answer
byte for byte (header ``Idempotent-Replayed: true``); with another request it is
a 400 ``idempotency_error``. All amounts are integer minor units.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from paywarden.acquirer_sandbox.cards import MAX_PAN_LENGTH, card_for_pan, card_for_ref
from paywarden.acquirer_sandbox.faults import FaultController, FaultPlan
from paywarden.acquirer_sandbox.store import (
    ApiError,
    AuthorizeInput,
    JsonObject,
    Reply,
    SandboxStore,
    dump,
    invalid,
)
from paywarden.core.money import CURRENCY_EXPONENTS, MAX_AMOUNT, CurrencyError, normalize_currency

MAX_JSON_BODY: Final = 64 * 1024
MAX_FORM_BODY: Final = 4 * 1024
MAX_KEY_LENGTH: Final = 255
MAX_REFERENCE_LENGTH: Final = 255
MAX_DESCRIPTION_LENGTH: Final = 1000
MAX_URL_LENGTH: Final = 2048
HOLD_POLL_SECONDS: Final = 0.02

_HTML_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _BodyTooLargeError(Exception):
    pass


Job = Callable[[], tuple[Reply, bool]]


class _Sandbox:
    def __init__(
        self,
        *,
        name: str,
        store: SandboxStore,
        faults: FaultController,
        token: str,
        public_url: str,
        fingerprint_key: bytes,
    ) -> None:
        self.name = name
        self.store = store
        self.faults = faults
        self._token = token.encode()
        # Idempotency scope: per bearer token, without keeping the token itself.
        self.scope = hashlib.sha256(b"scope:" + self._token).hexdigest()[:32]
        self.public_url = public_url.rstrip("/")
        self._fp_key = fingerprint_key

    # ------------------------------------------------------------- helpers

    def authorized(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self._token)

    def public_url_for(self, request: Request) -> str:
        return self.public_url or str(request.base_url).rstrip("/")

    def fingerprint(self, request: Request, payload: JsonObject) -> str:
        # Keyed: the body may carry a card number, and this digest is stored.
        text = f"{request.method} {request.url.path}\n{dump(payload)}"
        return hmac.new(self._fp_key, text.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------- mutating routes

    async def mutate(
        self,
        request: Request,
        operation: str,
        prepare: Callable[[Request, JsonObject], Job],
    ) -> Response:
        if not self.authorized(request):
            return _unauthorized()
        plan = self.faults.claim(operation)
        if plan is not None and plan.mode in ("error_503", "error_500"):
            status = 503 if plan.mode == "error_503" else 500
            return _error_response(
                ApiError(status, "api_error", f"Injected fault: {plan.mode} ({operation}).")
            )
        try:
            raw = await _read_body(request, MAX_JSON_BODY)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        except _BodyTooLargeError:
            return _error_response(ApiError(413, "invalid_request_error", "Body too large."))
        if plan is not None and plan.mode in ("latency", "timeout"):
            await asyncio.sleep(plan.latency_ms / 1000)
        try:
            job = prepare(request, _parse_json(raw))
            reply, replayed = await run_in_threadpool(job)
        except ApiError as err:
            reply, replayed = Reply(err.status, dump(err.body())), False
        if plan is not None and plan.mode == "lost_response":
            await _hold(request, plan.latency_ms / 1000)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(
            reply.body, status_code=reply.status, media_type="application/json", headers=headers
        )

    def prepare_authorize(self, request: Request, payload: JsonObject) -> Job:
        key = _idempotency_key(request, required=True)
        assert key is not None
        inp = self.authorize_input(payload)
        action = self.store.authorize_action(
            inp, scope=self.scope, key=key, public_url=self.public_url_for(request)
        )
        fp = self.fingerprint(request, payload)
        return lambda: self.store.run(action, scope=self.scope, key=key, fingerprint=fp)

    def prepare_capture(self, request: Request, payload: JsonObject) -> Job:
        key = _idempotency_key(request, required=True)
        amount = _optional_amount(payload)
        action = self.store.capture_action(_path_id(request), amount, scope=self.scope)
        fp = self.fingerprint(request, payload)
        return lambda: self.store.run(action, scope=self.scope, key=key, fingerprint=fp)

    def prepare_void(self, request: Request, payload: JsonObject) -> Job:
        key = _idempotency_key(request, required=False)
        action = self.store.void_action(_path_id(request), scope=self.scope)
        fp = self.fingerprint(request, payload)
        return lambda: self.store.run(action, scope=self.scope, key=key, fingerprint=fp)

    def prepare_refund(self, request: Request, payload: JsonObject) -> Job:
        key = _idempotency_key(request, required=True)
        assert key is not None
        amount = _optional_amount(payload)
        action = self.store.refund_action(_path_id(request), amount, scope=self.scope, key=key)
        fp = self.fingerprint(request, payload)
        return lambda: self.store.run(action, scope=self.scope, key=key, fingerprint=fp)

    def authorize_input(self, payload: JsonObject) -> AuthorizeInput:
        amount = _amount(payload.get("amount"), "amount")
        currency_raw = payload.get("currency")
        if not isinstance(currency_raw, str):
            raise invalid("currency is required (ISO 4217 code)", param="currency")
        try:
            currency = normalize_currency(currency_raw)
        except CurrencyError:
            raise invalid("currency is not a supported ISO 4217 code", param="currency") from None
        capture = payload.get("capture")
        if not isinstance(capture, bool):
            raise invalid("capture must be true or false", param="capture")
        card_obj = payload.get("card")
        if not isinstance(card_obj, dict):
            raise invalid("card is required", param="card")
        if card_obj.get("network_token") is not None:
            raise invalid(
                "This acquirer cannot use network tokens.",
                param="card.network_token",
                code="network_token_unsupported",
            )
        test_ref, pan = card_obj.get("test_ref"), card_obj.get("pan")
        if (test_ref is None) == (pan is None):
            raise invalid("card needs exactly one of test_ref or pan", param="card")
        if test_ref is not None:
            known = card_for_ref(test_ref) if isinstance(test_ref, str) else None
            if known is None:
                raise invalid("Unknown test card.", param="card.test_ref", code="unknown_test_card")
            card = known
        else:
            if not isinstance(pan, str) or len(pan) > MAX_PAN_LENGTH + 8:
                raise invalid("card.pan must be a string of digits", param="card.pan")
            card = card_for_pan(pan.replace(" ", "").replace("-", ""))
        exp_month = _optional_int(card_obj.get("exp_month"), "card.exp_month", 1, 12)
        exp_year = _optional_int(card_obj.get("exp_year"), "card.exp_year", 2000, 2199)
        cvc = card_obj.get("cvc")
        if cvc is not None and not (
            isinstance(cvc, str) and cvc.isascii() and cvc.isdigit() and len(cvc) in (3, 4)
        ):
            raise invalid("card.cvc must be 3 or 4 digits", param="card.cvc", code="invalid_cvc")
        merchant_reference = payload.get("merchant_reference")
        if (
            not isinstance(merchant_reference, str)
            or not merchant_reference
            or len(merchant_reference) > MAX_REFERENCE_LENGTH
        ):
            raise invalid("merchant_reference is required", param="merchant_reference")
        description = payload.get("description")
        if description is not None and (
            not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH
        ):
            raise invalid("description must be a string", param="description")
        authentication_id = payload.get("authentication_id")
        if authentication_id is not None and (
            not isinstance(authentication_id, str) or len(authentication_id) > MAX_KEY_LENGTH
        ):
            raise invalid("authentication_id must be a string", param="authentication_id")
        three_d_secure = payload.get("three_d_secure")
        if three_d_secure not in (None, "required", "automatic"):
            raise invalid("three_d_secure must be required or automatic", param="three_d_secure")
        return_url = payload.get("return_url")
        if return_url is not None and not _is_http_url(return_url):
            raise invalid("return_url must be an http(s) URL", param="return_url")
        return AuthorizeInput(
            amount=amount,
            currency=currency,
            capture=capture,
            card=card,
            card_fingerprint=self.store.card_fingerprint(card),
            exp_month=exp_month,
            exp_year=exp_year,
            cvc_supplied=cvc is not None,
            merchant_reference=merchant_reference,
            description=description,
            authentication_id=authentication_id,
            return_url=return_url,
            three_d_secure_required=three_d_secure == "required",
        )

    # ------------------------------------------------------------ read routes

    async def read(self, request: Request, query: Callable[[], JsonObject]) -> Response:
        if not self.authorized(request):
            return _unauthorized()
        try:
            return JSONResponse(await run_in_threadpool(query))
        except ApiError as err:
            return _error_response(err)


# ---------------------------------------------------------------- app factory


def create_app(*, name: str, db_path: str | None, token: str, public_url: str) -> Starlette:
    """The sandbox acquirer ``name``. ``db_path`` None keeps the ledger in memory.
    ``public_url`` prefixes the 3-D Secure page URLs it hands out; an empty string
    derives it from each request's base URL (handy when the port is not known yet).
    The app closes its store on shutdown: serve it once."""
    if not token:
        raise ValueError("the sandbox needs a non-empty bearer token")
    fingerprint_key = hmac.new(token.encode(), b"paywarden-sandbox-fingerprint", "sha256").digest()
    store = SandboxStore(db_path, fingerprint_key=fingerprint_key)
    faults = FaultController()
    sb = _Sandbox(
        name=name,
        store=store,
        faults=faults,
        token=token,
        public_url=public_url,
        fingerprint_key=fingerprint_key,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "name": sb.name})

    async def authorize(request: Request) -> Response:
        return await sb.mutate(request, "authorize", sb.prepare_authorize)

    async def capture(request: Request) -> Response:
        return await sb.mutate(request, "capture", sb.prepare_capture)

    async def void(request: Request) -> Response:
        return await sb.mutate(request, "void", sb.prepare_void)

    async def refund(request: Request) -> Response:
        return await sb.mutate(request, "refund", sb.prepare_refund)

    async def get_authorization(request: Request) -> Response:
        auth_id = _path_id(request)
        return await sb.read(request, lambda: store.get_authorization(auth_id, scope=sb.scope))

    async def find_authorization(request: Request) -> Response:
        key = request.query_params.get("idempotency_key")
        if not key:
            return _error_response(invalid("idempotency_key is required", param="idempotency_key"))
        return await sb.read(request, lambda: store.authorization_by_key(key, scope=sb.scope))

    async def find_refund(request: Request) -> Response:
        key = request.query_params.get("idempotency_key")
        if not key:
            return _error_response(invalid("idempotency_key is required", param="idempotency_key"))
        return await sb.read(request, lambda: store.refund_by_key(key, scope=sb.scope))

    async def get_authentication(request: Request) -> Response:
        session_id = _path_id(request)

        def query() -> JsonObject:
            session = store.authentication(session_id, scope=sb.scope)
            return {"id": session["id"], "object": "authentication", "status": session["status"]}

        return await sb.read(request, query)

    async def faults_route(request: Request) -> Response:
        if not sb.authorized(request):
            return _unauthorized()
        if request.method == "POST":
            try:
                body = _parse_json(await _read_body(request, MAX_JSON_BODY))
                faults.set(FaultPlan.from_json(body))
            except ApiError as err:
                return _error_response(err)
            except (_BodyTooLargeError, ClientDisconnect):
                return _error_response(invalid("unreadable body"))
        return JSONResponse(faults.get().to_json())

    async def reset(request: Request) -> Response:
        if not sb.authorized(request):
            return _unauthorized()
        faults.reset()
        return JSONResponse(faults.get().to_json())

    async def stats(request: Request) -> Response:
        return await sb.read(request, store.stats)

    async def acs_page(request: Request) -> Response:
        session_id = _path_id(request)
        try:
            session = await run_in_threadpool(store.authentication, session_id)
        except ApiError as err:
            return _page(err.status, "Authentication not found", _para(err.message))
        return _page(200, "3-D Secure authentication", _acs_body(sb.name, session))

    async def acs_complete(request: Request) -> Response:
        session_id = _path_id(request)
        try:
            raw = await _read_body(request, MAX_FORM_BODY)
            form = parse_qs(raw.decode("utf-8", errors="replace"), max_num_fields=10)
            result = (form.get("result") or [""])[0]
            session = await run_in_threadpool(store.complete_authentication, session_id, result)
        except ApiError as err:
            return _page(err.status, "Authentication not completed", _para(err.message))
        except (_BodyTooLargeError, ClientDisconnect, ValueError):
            return _page(400, "Authentication not completed", "<p>Unreadable form.</p>")
        return_url = session.get("return_url")
        if isinstance(return_url, str):
            return RedirectResponse(
                _with_query(return_url, authentication_id=session_id), status_code=303
            )
        outcome = "completed" if session["status"] == "authenticated" else "failed"
        return _page(
            200,
            "Authentication done",
            f"<p>Authentication {outcome}. You can close this window.</p>",
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/authorizations", authorize, methods=["POST"]),
        Route("/v1/authorizations", find_authorization, methods=["GET"]),
        Route("/v1/authorizations/{id}", get_authorization, methods=["GET"]),
        Route("/v1/authorizations/{id}/capture", capture, methods=["POST"]),
        Route("/v1/authorizations/{id}/void", void, methods=["POST"]),
        Route("/v1/authorizations/{id}/refunds", refund, methods=["POST"]),
        Route("/v1/refunds", find_refund, methods=["GET"]),
        Route("/v1/authentications/{id}", get_authentication, methods=["GET"]),
        Route("/_control/faults", faults_route, methods=["GET", "POST"]),
        Route("/_control/reset", reset, methods=["POST"]),
        Route("/_control/stats", stats, methods=["GET"]),
        Route("/3ds/{id}", acs_page, methods=["GET"]),
        Route("/3ds/{id}/complete", acs_complete, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store = store
    app.state.faults = faults
    return app


# ------------------------------------------------------------------- helpers


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": {"type": "authentication_error", "message": "Invalid or missing bearer token."}},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="acquirer-sandbox"'},
    )


def _error_response(err: ApiError) -> Response:
    return Response(dump(err.body()), status_code=err.status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> JsonObject:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise invalid("The body must be a JSON object.") from None
    if not isinstance(value, dict):
        raise invalid("The body must be a JSON object.")
    return value


def _idempotency_key(request: Request, *, required: bool) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None or key == "":
        if required:
            raise invalid("The Idempotency-Key header is required.", param="Idempotency-Key")
        return None
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise invalid("Idempotency-Key must be 1-255 printable ASCII characters.")
    return key


def _path_id(request: Request) -> str:
    return str(request.path_params["id"])


def _amount(value: object, param: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_AMOUNT:
        return value
    raise invalid(f"{param} must be an integer of minor units in 1..{MAX_AMOUNT}", param=param)


def _optional_amount(payload: JsonObject) -> int | None:
    value = payload.get("amount")
    return None if value is None else _amount(value, "amount")


def _optional_int(value: object, param: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        code = "invalid_expiry_month" if param.endswith("month") else "invalid_expiry_year"
        raise invalid(f"{param} must be an integer in {low}..{high}", param=param, code=code)
    return value


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


async def _hold(request: Request, seconds: float) -> None:
    """Keep the connection open without answering, until the client gives up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(HOLD_POLL_SECONDS, max(0.0, deadline - loop.time())))


def _format_amount(amount: int, currency: str) -> str:
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{amount} {currency.upper()}"
    major, minor = divmod(amount, 10**exponent)
    return f"{major}.{minor:0{exponent}d} {currency.upper()}"


def _acs_body(acquirer: str, session: JsonObject) -> str:
    session_id = html.escape(str(session["id"]))
    amount = html.escape(_format_amount(int(session["amount"]), str(session["currency"])))
    intro = (
        f"<p>Test issuer for <strong>{html.escape(acquirer)}</strong>: "
        f"confirm a payment of <strong>{amount}</strong>.</p>"
    )
    if session["status"] != "pending":
        return intro + _para(f"This authentication is already {session['status']}.")
    action = f"./{session_id}/complete"
    buttons = "".join(
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="result" value="{value}">'
        f'<button type="submit">{label}</button></form>'
        for value, label in (
            ("authenticated", "Complete authentication"),
            ("failed", "Fail authentication"),
        )
    )
    return intro + buttons


def _para(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _page(status: int, title: str, body: str) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;"
        "padding:0 1rem}form{display:inline-block;margin:.5rem .5rem 0 0}"
        "button{font-size:1rem;padding:.6rem 1rem}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HTML_HEADERS)
