"""Which API calls the gateway writes to its audit log, and how (PCI DSS 10.2.1).

Audited here: failed authentications and authorizations (10.2.1.4), the
creation, change and deletion of system objects (webhook endpoints and their
secrets, rules, lists and their items: 10.2.1.7, 10.2.1.5 for the webhook
signing secret), analysts' decisions (reviews, fraud reports) and every call to
the auditor's API (10.2.1.3). Card data access is audited by the vault, which is
where it happens (tokenize, forward, reveal). API keys are created, rolled and
revoked by the CLI, which records them itself.

Each audited call is on the record before it runs (``api.call_started``, with
the action it is about to perform): if that entry cannot be written the call is
refused with 503 and nothing happens. Its outcome follows as a second entry
with the same request id. An entry names the API key (never the key itself),
the source IP, the request id, the account and the object. Only the HTTP
status and Stripe error code of a failure are kept, never the request's
parameters.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from paywarden.audit import Actor, AuditError, Origin, Resource

if TYPE_CHECKING:
    from paywarden.gateway.container import Gateway
    from paywarden.http.api import Call

log = logging.getLogger("paywarden.audit")

# (method, path template) -> (event, resource type)
AUDITED: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/v1/webhook_endpoints"): ("webhook_endpoint.created", "webhook_endpoint"),
    ("POST", "/v1/webhook_endpoints/{id}"): ("webhook_endpoint.updated", "webhook_endpoint"),
    ("DELETE", "/v1/webhook_endpoints/{id}"): ("webhook_endpoint.deleted", "webhook_endpoint"),
    ("POST", "/v1/webhook_endpoints/{id}/roll_secret"): (
        "webhook_endpoint.secret_rolled",
        "webhook_endpoint",
    ),
    ("POST", "/v1/radar/value_lists"): ("value_list.created", "value_list"),
    ("POST", "/v1/radar/value_lists/{id}"): ("value_list.updated", "value_list"),
    ("DELETE", "/v1/radar/value_lists/{id}"): ("value_list.deleted", "value_list"),
    ("POST", "/v1/radar/value_list_items"): ("value_list_item.created", "value_list_item"),
    ("DELETE", "/v1/radar/value_list_items/{id}"): ("value_list_item.deleted", "value_list_item"),
    ("POST", "/v1/paywarden/fraud/rules"): ("fraud_rule.created", "fraud_rule"),
    ("POST", "/v1/paywarden/fraud/rules/{id}"): ("fraud_rule.updated", "fraud_rule"),
    ("DELETE", "/v1/paywarden/fraud/rules/{id}"): ("fraud_rule.deleted", "fraud_rule"),
    ("POST", "/v1/reviews/{id}/approve"): ("review.approved", "review"),
    ("POST", "/v1/paywarden/fraud/reports"): ("fraud_report.created", "fraud_report"),
    ("DELETE", "/v1/customers/{id}"): ("customer.deleted", "customer"),
    ("GET", "/v1/paywarden/audit/tree_head"): ("audit.tree_head_read", "audit_log"),
    ("GET", "/v1/paywarden/audit/entries"): ("audit.entries_read", "audit_log"),
    ("GET", "/v1/paywarden/audit/public_keys"): ("audit.public_keys_read", "audit_log"),
    ("GET", "/v1/paywarden/audit/proofs/inclusion"): ("audit.proof_read", "audit_log"),
    ("GET", "/v1/paywarden/audit/proofs/consistency"): ("audit.proof_read", "audit_log"),
}


def audited(method: str, path: str) -> tuple[str, str] | None:
    return AUDITED.get((method, path))


def record_call(
    gw: Gateway,
    call: Call,
    what: tuple[str, str],
    *,
    outcome: str,
    object_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """One audited API call. Raises :class:`AuditError` when it cannot be
    written: the caller then answers 503 rather than pretend all is well."""
    if gw.audit is None:
        return
    event, resource_type = what
    gw.audit.record(
        event=event,
        outcome=outcome,
        actor=Actor.api_key(call.auth.key_id),
        origin=Origin(ip=call.source_ip[:64] or None, request_id=call.request_id),
        resource=Resource(resource_type, object_id[:128] if object_id else None),
        account=call.auth.account_id,
        details={"livemode": call.auth.livemode, "key_kind": call.auth.kind, **(details or {})},
    )


def record_auth_failure(
    gw: Gateway,
    *,
    kind: str,
    source: str,
    request_id: str,
    code: str | None,
    account_id: str | None = None,
    key_id: str | None = None,
    key_hint: str | None = None,
    target: str | None = None,
) -> None:
    """A failed authentication or authorization. The key hint (a masked prefix
    and suffix) is kept only as an HMAC: enough to correlate, nothing to reuse."""
    if gw.audit is None:
        return
    try:
        gw.audit.record(
            event="auth.failed" if kind.startswith("auth_") else "authz.denied",
            outcome="failure",
            actor=Actor.api_key(key_id) if key_id else Actor.anonymous(),
            origin=Origin(ip=source[:64] or None, request_id=request_id),
            resource=Resource("endpoint", target[:128]) if target else None,
            account=account_id,
            details={"kind": kind, "code": code},
            sensitive={"key_hint": key_hint} if key_hint else None,
        )
    except AuditError:
        # The request is refused either way; the failure is in the log's own
        # health (and the security event table still has it).
        log.exception("could not audit a failed authentication")
