"""The vault's HTTP API, served only over mutual TLS (see :mod:`paywarden.vault.tlsserver`).

The caller's identity is the verified client certificate, taken from the ASGI
TLS extension; never from a header. Each identity has a fixed set of permitted
actions:

* ``gateway`` — tokenize, fingerprint, forward, delete (shred), encryption keys;
* ``operator`` — reveal (with a stated reason), key rotation, rewrap, retire,
  sweep, key status and the access log.

Anything else gets 403, and the refusal is logged. Bodies are JSON, at most
16 KiB. Error bodies never contain card data or internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywarden.core.ids import new_id
from paywarden.vault.cards import CardValidationError
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.kms import KmsError
from paywarden.vault.service import VaultError, VaultService
from paywarden.vault.tlsserver import tls_info

log = logging.getLogger("paywarden.vault.http")

MAX_BODY = 16 * 1024

PERMISSIONS: dict[str, frozenset[str]] = {
    "gateway": frozenset(
        {"tokenize", "fingerprint", "forward", "delete", "encryption_keys", "status"}
    ),
    "operator": frozenset({"reveal", "admin", "status", "access_log"}),
}

Handler = Callable[[VaultService, Request, dict[str, Any], str, str], Any]


def _error(
    status: int,
    code: str,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
) -> JSONResponse:
    err: dict[str, Any] = {"type": type_, "code": code, "message": message}
    if param:
        err["param"] = param
    return JSONResponse({"error": err}, status_code=status)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > 128:
        raise VaultError(f"{key} is required.", code="parameter_missing")
    return value


Revoked = Callable[[], frozenset[str]]


def _no_revocations() -> frozenset[str]:
    return frozenset()


def _route(
    service: VaultService, path: str, method: str, action: str, fn: Handler, revoked: Revoked
) -> Route:
    async def endpoint(request: Request) -> Response:
        rid = request.headers.get("x-request-id", "")[:64] or new_id("vreq", 14)
        info = tls_info(request.scope)
        actor = info.identity if info is not None and info.identity else "unknown"
        if info is not None and info.fingerprint_sha256 in revoked():
            # A revoked certificate still passes the handshake (no CRL in the
            # TLS layer); it is refused here, before any action.
            await run_in_threadpool(
                service.log_refusal,
                actor=actor,
                action=action,
                request_id=rid,
                detail="revoked certificate",
            )
            return _error(403, "certificate_revoked", "This client certificate is revoked.")
        if action not in PERMISSIONS.get(actor, frozenset()):
            await run_in_threadpool(
                service.log_refusal,
                actor=actor,
                action=action,
                request_id=rid,
                detail=f"{method} {path}",
            )
            return _error(403, "forbidden", f"Identity {actor!r} may not {action}.")
        body: dict[str, Any] = {}
        if method in ("POST", "DELETE"):
            raw = await request.body()
            if len(raw) > MAX_BODY:
                return _error(413, "request_too_large", "Request body too large.")
            if raw.strip():
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    return _error(400, "invalid_json", "The body is not valid JSON.")
                if not isinstance(parsed, dict):
                    return _error(400, "invalid_json", "The body must be a JSON object.")
                body = parsed
        try:
            result = await run_in_threadpool(fn, service, request, body, actor, rid)
        except CardValidationError as exc:
            return _error(402, exc.code, exc.message, type_="card_error", param=exc.param)
        except VaultError as exc:
            return _error(exc.status, exc.code, str(exc))
        except KmsError:
            log.exception("kms failure request_id=%s", rid)
            return _error(
                503, "kms_unavailable", "The key service is unavailable.", type_="api_error"
            )
        except DecryptionError:
            log.error("decryption failed request_id=%s action=%s", rid, action)
            return _error(
                500, "decryption_failed", "The record could not be decrypted.", type_="api_error"
            )
        except Exception:
            log.exception("unhandled vault error request_id=%s action=%s", rid, action)
            return _error(500, "internal", "Internal vault error.", type_="api_error")
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    return Route(path, endpoint, methods=[method])


def _tokenize(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, rid: str) -> Any:
    account = _str(b, "account_id")
    enc = b.get("encrypted")
    if isinstance(enc, dict):
        meta = svc.tokenize_encrypted(
            account_id=account,
            key_id=str(enc.get("key_id", "")),
            payload=str(enc.get("payload", "")),
            actor=actor,
            request_id=rid,
        )
    else:
        card = b.get("card")
        if not isinstance(card, dict):
            raise VaultError("card or encrypted is required.", code="parameter_missing")
        meta = svc.tokenize(
            account_id=account,
            number=card.get("number"),  # type: ignore[arg-type]  # validated inside
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
            cvc=card.get("cvc"),
            actor=actor,
            request_id=rid,
        )
    return meta.to_dict()


def _fingerprint(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, rid: str) -> Any:
    number = b.get("number")
    if not isinstance(number, str):
        raise CardValidationError(
            code="invalid_number",
            param="card[number]",
        )
    return {
        "fingerprint": svc.fingerprint(
            account_id=_str(b, "account_id"), number=number, actor=actor, request_id=rid
        )
    }


def _forward(svc: VaultService, r: Request, b: dict[str, Any], actor: str, rid: str) -> Any:
    inner = b.get("body")
    headers = b.get("headers") or {}
    if not isinstance(inner, dict) or not isinstance(headers, dict):
        raise VaultError("body and headers must be objects.")
    result = svc.forward(
        token=r.path_params["token"],
        account_id=_str(b, "account_id"),
        destination=_str(b, "destination"),
        body=inner,
        headers={str(k): str(v) for k, v in headers.items()},
        actor=actor,
        request_id=rid,
    )
    return {"status_code": result.status_code, "body": result.body}


def _delete(svc: VaultService, r: Request, b: dict[str, Any], actor: str, rid: str) -> Any:
    reason = b.get("reason") if isinstance(b.get("reason"), str) else "deleted"
    shredded = svc.shred(
        token=r.path_params["token"],
        account_id=_str(b, "account_id"),
        actor=actor,
        reason=str(reason),
        request_id=rid,
    )
    return {"token": r.path_params["token"], "shredded": True, "already": not shredded}


def _reveal(svc: VaultService, r: Request, b: dict[str, Any], actor: str, rid: str) -> Any:
    account = b.get("account_id")
    return svc.reveal(
        token=r.path_params["token"],
        account_id=account if isinstance(account, str) else None,
        actor=actor,
        reason=str(b.get("reason") or ""),
        request_id=rid,
    )


def _keys(svc: VaultService, _r: Request, _b: dict[str, Any], _a: str, _rid: str) -> Any:
    return {"object": "list", "data": svc.encryption_keys(), "has_more": False}


def _status(svc: VaultService, _r: Request, _b: dict[str, Any], _a: str, _rid: str) -> Any:
    return svc.key_status()


def _access_log(svc: VaultService, r: Request, _b: dict[str, Any], _a: str, _rid: str) -> Any:
    q = r.query_params
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        limit = 100
    return {
        "object": "list",
        "data": svc.access_log(action=q.get("action"), token=q.get("token"), limit=limit),
    }


def _rotate_kek(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, _rid: str) -> Any:
    return {"version": svc.rotate_kek(actor=actor, reason=_opt(b, "reason"))}


def _rewrap(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, _rid: str) -> Any:
    limit = b.get("limit", 500)
    if not isinstance(limit, int) or not 1 <= limit <= 5000:
        raise VaultError("limit must be an integer from 1 to 5000.")
    return svc.rewrap_batch(actor=actor, limit=limit)


def _retire(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, _rid: str) -> Any:
    version = b.get("min_decryption_version")
    if not isinstance(version, int) or version < 1:
        raise VaultError("min_decryption_version must be a positive integer.")
    svc.retire_below(version=version, actor=actor)
    return {"min_decryption_version": version}


def _rotate_hpke(svc: VaultService, _r: Request, b: dict[str, Any], actor: str, _rid: str) -> Any:
    return {"id": svc.rotate_hpke(actor=actor, reason=_opt(b, "reason"))}


def _sweep(svc: VaultService, _r: Request, _b: dict[str, Any], actor: str, _rid: str) -> Any:
    return svc.sweep(actor=actor)


def _opt(b: dict[str, Any], key: str) -> str | None:
    value = b.get(key)
    return value[:500] if isinstance(value, str) else None


async def _health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_vault_app(service: VaultService, *, revoked: Revoked = _no_revocations) -> Starlette:
    """``revoked`` returns the SHA-256 fingerprints of revoked client certificates."""
    table: list[tuple[str, str, str, Handler]] = [
        ("/v1/cards", "POST", "tokenize", _tokenize),
        ("/v1/fingerprints", "POST", "fingerprint", _fingerprint),
        ("/v1/cards/{token}/forward", "POST", "forward", _forward),
        ("/v1/cards/{token}", "DELETE", "delete", _delete),
        ("/v1/cards/{token}/reveal", "POST", "reveal", _reveal),
        ("/v1/encryption_keys", "GET", "encryption_keys", _keys),
        ("/v1/admin/keys", "GET", "status", _status),
        ("/v1/admin/access_log", "GET", "access_log", _access_log),
        ("/v1/admin/kek/rotate", "POST", "admin", _rotate_kek),
        ("/v1/admin/kek/rewrap", "POST", "admin", _rewrap),
        ("/v1/admin/kek/retire", "POST", "admin", _retire),
        ("/v1/admin/hpke/rotate", "POST", "admin", _rotate_hpke),
        ("/v1/admin/sweep", "POST", "admin", _sweep),
    ]
    routes = [_route(service, p, m, a, f, revoked) for p, m, a, f in table]
    routes.append(Route("/healthz", _health, methods=["GET"]))

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return _error(404, "not_found", "Unknown vault route.")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
