"""Export entries as OCSF-shaped events (Open Cybersecurity Schema Framework).

Mapping (class by event prefix, activity by the verb after the last dot):

- ``auth.*`` (``auth.failed``…): **Authentication (3002)**, activity 1 Logon
  (an API-key or certificate authentication attempt).
- ``api_key.*``, ``account.*``, ``operator.*``: **Account Change (3001)**;
  created 1 Create, enabled 2, disabled 5, deleted/revoked 6 Delete, locked 9,
  anything else (rolled…) 99 Other.
- ``audit.started`` / ``audit.stopped``: **Application Lifecycle (6002)**,
  3 Start / 4 Stop (PCI DSS 10.2.1.6).
- everything else (``card.*``, ``payment.*``, ``audit.*`` operations…):
  **API Activity (6003)**; created/tokenized 1 Create, read/revealed/exported/
  accessed/verified 2 Read, updated/rotated/rolled/rewrapped/archived 3 Update,
  deleted/shredded/revoked/expired 4 Delete, else 99 Other.

Every event carries ``category_uid`` (3 Identity & Access Management or 6
Application Activity), ``type_uid = class_uid * 100 + activity_id``, ``time``
(ms since the epoch), ``status_id`` (1 Success, 2 Failure), ``severity_id``
(1 Informational; 3 Medium for failures), ``metadata`` (product, version,
``uid`` = service:seq, the original RFC 3339 time), ``actor.user``
(``uid`` = actor id, ``type`` = actor type), ``src_endpoint.ip``,
``api.request.uid`` (request id), ``resources`` (type, uid), ``status_detail``
(the reason), and ``unmapped`` (our details and hmac pseudonyms, so nothing is lost).
"""

from __future__ import annotations

from typing import Any

from paywarden.audit.entry import Entry, parse_time, time_micros

OCSF_VERSION = "1.1.0"

_API_ACTIVITY = {
    "created": 1, "tokenized": 1, "issued": 1, "started": 1,
    "read": 2, "revealed": 2, "exported": 2, "accessed": 2, "listed": 2, "verified": 2,
    "updated": 3, "rotated": 3, "rolled": 3, "rewrapped": 3, "archived": 3,
    "deleted": 4, "shredded": 4, "revoked": 4, "expired": 4,
}  # fmt: skip
_ACCOUNT_CHANGE = {
    "created": 1, "enabled": 2, "disabled": 5, "deleted": 6, "revoked": 6, "locked": 9,
}  # fmt: skip
_CLASS_NAMES = {
    3001: ("Account Change", 3, "Identity & Access Management"),
    3002: ("Authentication", 3, "Identity & Access Management"),
    6002: ("Application Lifecycle", 6, "Application Activity"),
    6003: ("API Activity", 6, "Application Activity"),
}


def classify(event: str) -> tuple[int, int]:
    """``(class_uid, activity_id)`` for a Paywarden event name."""
    prefix, _, verb = event.partition(".")
    verb = event.rsplit(".", 1)[-1]
    if prefix == "auth":
        return 3002, 1
    if prefix in ("api_key", "account", "operator"):
        return 3001, _ACCOUNT_CHANGE.get(verb, 99)
    if event == "audit.started":
        return 6002, 3
    if event == "audit.stopped":
        return 6002, 4
    return 6003, _API_ACTIVITY.get(verb, 99)


def to_ocsf(entry: Entry) -> dict[str, Any]:
    class_uid, activity_id = classify(entry.event)
    class_name, category_uid, category_name = _CLASS_NAMES[class_uid]
    failed = entry.outcome == "failure"
    event: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_micros(parse_time(entry.time)) // 1000,
        "severity_id": 3 if failed else 1,
        "status_id": 2 if failed else 1,
        "status": "Failure" if failed else "Success",
        "message": entry.event,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "Paywarden", "vendor_name": "Paywarden"},
            "uid": f"{entry.service}:{entry.seq}",
            "log_name": f"paywarden-{entry.service}-audit",
            "original_time": entry.time,
        },
        "actor": {"user": {"uid": entry.actor.get("id"), "type": entry.actor.get("type")}},
        "unmapped": {"details": entry.details, "hmac": entry.hmac, "account": entry.account},
    }
    if entry.reason:
        event["status_detail"] = entry.reason
    origin = entry.origin or {}
    if origin.get("ip"):
        event["src_endpoint"] = {"ip": origin["ip"]}
    if origin.get("request_id"):
        event["api"] = {"operation": entry.event, "request": {"uid": origin["request_id"]}}
    if origin.get("client_cert"):
        event["unmapped"]["client_cert"] = origin["client_cert"]
    if entry.resource:
        event["resources"] = [{"type": entry.resource.get("type"), "uid": entry.resource.get("id")}]
    if class_uid == 3002:
        event["user"] = {"uid": entry.actor.get("id"), "type": entry.actor.get("type")}
    return event
