"""The auditor's API: signed tree heads, entries and proofs of the gateway's
audit log, read-only (restricted keys with ``audit: read``), every call itself
audited (see ``http/auditing.py``).

Tree heads, public keys and proofs are hashes and signatures: anyone allowed
may fetch them for any position. Entries are a tenant's own: a caller sees the
entries of its account (and an inclusion proof shows the entry's bytes only to
their owner); a platform-wide audit reads the store with ``paywarden audit``.
Everything here verifies offline with ``python -m paywarden.audit.verifier``
and the public key.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from paywarden.audit.errors import AuditError
from paywarden.audit.signing import load_public_keys
from paywarden.core.errors import InvalidRequestError, ServiceUnavailableError
from paywarden.http.api import Call, Endpoint
from paywarden.http.params import Param

if TYPE_CHECKING:
    from paywarden.audit.log import AuditLog
    from paywarden.gateway.container import Gateway

RESOURCE = "audit"
MAX_SCAN = 1000


def _log(gw: Gateway) -> AuditLog:
    if gw.audit is None:
        raise ServiceUnavailableError("The audit log is not enabled.", code="audit_unavailable")
    return gw.audit


def tree_head(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    log = _log(gw)
    # `fresh` signs only when the log has grown: callers cannot grow the heads
    # table at will.
    head = (log.sign_if_changed() if v.get("fresh") else None) or log.latest_tree_head()
    if head is None:
        head = log.sign_tree_head()
    return {"object": "paywarden.audit_tree_head", **head.to_json()}


def public_keys(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    log = _log(gw)
    with log.store.reading() as conn:
        keys = load_public_keys(conn)
    return {
        "object": "list",
        "data": [
            {
                "object": "paywarden.audit_public_key",
                "key_id": k.key_id,
                "algorithm": "ed25519",
                "public_key": k.public_key.hex(),
                "created_ms": k.created_ms,
                "retired_ms": k.retired_ms,
            }
            for k in keys.values()
        ],
        "has_more": False,
        "url": "/v1/paywarden/audit/public_keys",
    }


def entries(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """The caller's entries among ``[start, start + scan)``; ``next_start`` continues."""
    from paywarden.audit.store import entries as entries_table

    log = _log(gw)
    start = int(v.get("start") or 0)
    scan = int(v.get("scan") or MAX_SCAN)
    with log.store.reading() as conn:
        rows = conn.execute(
            select(entries_table.c.seq, entries_table.c.body)
            .where(entries_table.c.seq >= start, entries_table.c.seq < start + scan)
            .order_by(entries_table.c.seq)
        ).all()
    data = []
    for seq, body in rows:
        doc = json.loads(bytes(body))
        mode = (doc.get("details") or {}).get("livemode")
        if doc.get("account") == call.account_id and mode in (None, call.livemode):
            data.append({"seq": int(seq), "entry": bytes(body).decode("utf-8")})
    size = log.size()
    next_start = max(start, min(start + scan, size))
    return {
        "object": "list",
        "data": data,
        "next_start": next_start,
        "has_more": next_start < size,
        "url": "/v1/paywarden/audit/entries",
    }


def inclusion(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    log = _log(gw)
    try:
        proof = log.inclusion_proof(v["seq"], v.get("tree_size")).to_json()
    except (ValueError, AuditError) as e:
        raise InvalidRequestError(str(e), param="seq") from None
    entry = proof.get("entry")
    if entry is not None and json.loads(entry).get("account") != call.account_id:
        proof["entry"] = None  # another tenant's entry: the hashes prove, the bytes stay
    return {"object": "paywarden.audit_inclusion_proof", **proof}


def consistency(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    log = _log(gw)
    try:
        proof = log.consistency_proof(v["old_size"], v.get("new_size"))
    except (ValueError, AuditError) as e:
        raise InvalidRequestError(str(e), param="old_size") from None
    return {"object": "paywarden.audit_consistency_proof", **proof.to_json()}


_SIZE = Param("int", min=0, max=2**62)


def endpoints() -> list[Endpoint]:
    r = False
    base = "/v1/paywarden/audit"
    return [
        Endpoint("GET", f"{base}/tree_head", tree_head, {"fresh": Param("bool")}, RESOURCE, r),
        Endpoint("GET", f"{base}/public_keys", public_keys, {}, RESOURCE, r),
        Endpoint(
            "GET",
            f"{base}/entries",
            entries,
            {"start": _SIZE, "scan": Param("int", min=1, max=MAX_SCAN)},
            RESOURCE,
            r,
        ),
        Endpoint(
            "GET",
            f"{base}/proofs/inclusion",
            inclusion,
            {"seq": Param("int", min=0, max=2**62, required=True), "tree_size": _SIZE},
            RESOURCE,
            r,
        ),
        Endpoint(
            "GET",
            f"{base}/proofs/consistency",
            consistency,
            {"old_size": Param("int", min=0, max=2**62, required=True), "new_size": _SIZE},
            RESOURCE,
            r,
        ),
    ]
