"""The gateway's ASGI application."""

from __future__ import annotations

import contextlib
import hashlib
import html
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from paywarden.clients import browser_helper_source
from paywarden.core.errors import StripeError
from paywarden.gateway import audit_routes, fraud_routes, webhook_routes
from paywarden.gateway.container import Gateway
from paywarden.gateway.routes import endpoints
from paywarden.http.api import RequestIdMiddleware, error_response, make_route, not_found

log = logging.getLogger("paywarden.gateway")


def create_app(gw: Gateway, *, background: bool = False) -> Starlette:
    """``background`` starts the reconciler and webhook dispatcher with the app."""

    async def three_ds_return(request: Request) -> Response:
        rid = request.scope.get("paywarden.request_id", "")
        attempt_id = request.path_params["attempt_id"]
        try:
            pi, return_url = await run_in_threadpool(gw.payments.three_d_secure_return, attempt_id)
        except StripeError as err:
            return error_response(err, rid)
        status = (
            "succeeded"
            if pi.status in ("succeeded", "requires_capture", "processing")
            else "failed"
        )
        if return_url and urlsplit(return_url).scheme in ("http", "https"):
            sep = "&" if "?" in return_url else "?"
            query = urlencode(
                {
                    "payment_intent": pi.id,
                    "payment_intent_client_secret": pi.client_secret,
                    "redirect_status": status,
                }
            )
            return RedirectResponse(f"{return_url}{sep}{query}", status_code=303)
        return HTMLResponse(
            "<!doctype html><title>Authentication complete</title>"
            f"<p>Authentication {html.escape(status)}. You can close this window.</p>"
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    helper_js = browser_helper_source()
    helper_etag = '"' + hashlib.sha256(helper_js.encode()).hexdigest()[:32] + '"'

    async def browser_helper(request: Request) -> Response:
        """The end-to-end card encryption helper for checkout pages."""
        return Response(
            helper_js,
            media_type="application/javascript",
            headers={
                "Cache-Control": "public, max-age=300",
                "ETag": helper_etag,
                "X-Content-Type-Options": "nosniff",
                "Cross-Origin-Resource-Policy": "cross-origin",
            },
        )

    routes = [
        make_route(gw, ep)
        for ep in [
            *endpoints(),
            *webhook_routes.endpoints(),
            *fraud_routes.endpoints(),
            *audit_routes.endpoints(),
        ]
    ]
    routes.append(Route("/v1/paywarden/3ds/return/{attempt_id}", three_ds_return, methods=["GET"]))
    routes.append(Route("/healthz", health, methods=["GET"]))
    routes.append(Route("/js/paywarden-e2e.js", browser_helper, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        workers = gw.extras.get("background_workers", []) if background else []
        for w in workers:
            w.start_background()
        try:
            yield
        finally:
            for w in workers:
                w.stop()

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found, HTTPException: not_found},
        lifespan=lifespan,
    )
    app.add_middleware(RequestIdMiddleware)
    # Browsers call the API with a publishable key (Stripe.js-style card intake).
    # Bearer keys, no cookies: allowing any origin adds no ambient authority.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version"],
        expose_headers=["Request-Id", "Idempotency-Key"],
        allow_credentials=False,
        max_age=600,
    )
    return app
