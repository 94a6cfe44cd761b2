"""The gateway's audit trail through the API: what is recorded, that it
verifies, what never appears in it, and the auditor's read-only API."""

from __future__ import annotations

from typing import Any

import httpx

from paywarden.audit import verify_store
from paywarden.audit.verifier import VerificationError, check_head, cmd_consistency, cmd_inclusion
from paywarden.gateway.container import Gateway
from tests.conftest import Api, Merchant

CARD = "4242424242424242"


def _entries(gateway: Gateway) -> list[dict[str, Any]]:
    assert gateway.audit is not None
    return [e.to_json() for e in gateway.audit.entries()]


def _raw(gateway: Gateway) -> bytes:
    assert gateway.audit is not None
    return b"\n".join(body for _, body in gateway.audit.raw_entries())


def test_security_events_are_recorded_and_the_log_verifies(
    api: Api, gateway: Gateway, merchant: Merchant, client: httpx.Client
) -> None:
    bad = client.get("/v1/customers", headers={"Authorization": "Bearer pwsk_test_nope12345678"})
    assert bad.status_code == 401
    narrow = merchant.restricted({"customers": "read"})
    denied = api.post("/v1/webhook_endpoints", {"url": "https://x.example/h"}, key=narrow)
    assert denied.status_code == 403
    hook = api.post(
        "/v1/webhook_endpoints", {"url": "https://merchant.example/hook", "enabled_events": ["*"]}
    ).json()
    rule = api.post(
        "/v1/paywarden/fraud/rules", {"rule": "Review if :amount: > 999999", "reason": "audit"}
    ).json()
    api.delete(f"/v1/webhook_endpoints/{hook['id']}")
    pm = api.post(
        "/v1/payment_methods",
        {"type": "card", "card": {"number": CARD, "exp_month": 12, "exp_year": 2034}},
    )
    assert pm.status_code == 200
    entries = _entries(gateway)
    events = [e["event"] for e in entries]
    assert events[0] == "audit.started"
    for expected in (
        "auth.failed",
        "authz.denied",
        "webhook_endpoint.created",
        "fraud_rule.created",
        "webhook_endpoint.deleted",
    ):
        assert expected in events, expected
    created = next(e for e in entries if e["event"] == "webhook_endpoint.created")
    assert created["resource"] == {"type": "webhook_endpoint", "id": hook["id"]}
    assert created["account"] == merchant.account_id
    assert created["actor"]["type"] == "api_key" and created["origin"]["request_id"]
    assert (
        next(e for e in entries if e["event"] == "fraud_rule.created")["resource"]["id"]
        == (rule["id"])
    )
    failed = next(e for e in entries if e["event"] == "auth.failed")
    assert failed["outcome"] == "failure" and "key_hint" in failed["hmac"]
    # Nothing secret or personal in clear: no key, no webhook secret, no card.
    raw = _raw(gateway)
    for secret in (merchant.secret_key, narrow, hook["secret"], CARD, "pwsk_test_nope"):
        assert secret.encode() not in raw, secret[:8]
    assert gateway.audit is not None
    gateway.audit.sign_tree_head()
    assert verify_store(gateway.audit.store, service="gateway").ok


def test_the_auditor_api_is_read_only_verifiable_and_audited(
    api: Api, gateway: Gateway, merchant: Merchant
) -> None:
    api.post(
        "/v1/webhook_endpoints", {"url": "https://merchant.example/h2", "enabled_events": ["*"]}
    )
    auditor = merchant.restricted({"audit": "read"})
    head = api.get("/v1/paywarden/audit/tree_head", {"fresh": True}, key=auditor).json()
    keys = api.get("/v1/paywarden/audit/public_keys", key=auditor).json()["data"]
    public = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in keys}
    check_head(head, public)  # raises if the signature does not verify
    forged = {**head, "root_hash": "00" * 32}
    try:
        check_head(forged, public)
        raise AssertionError("a forged tree head verified")
    except VerificationError:
        pass
    listed = api.get("/v1/paywarden/audit/entries", {"start": 0}, key=auditor).json()
    mine = [d for d in listed["data"] if '"webhook_endpoint.created"' in d["entry"]]
    assert mine, listed
    seq = mine[0]["seq"]
    proof = api.get(
        "/v1/paywarden/audit/proofs/inclusion",
        {"seq": seq, "tree_size": head["tree_size"]},
        key=auditor,
    ).json()
    assert proof["entry"] == mine[0]["entry"]
    cmd_inclusion(proof, public)  # raises if the path does not reach the root
    cons = api.get(
        "/v1/paywarden/audit/proofs/consistency",
        {"old_size": 1, "new_size": head["tree_size"]},
        key=auditor,
    ).json()
    cmd_consistency(cons, public, None)
    # Sizes beyond the log are a clean 400, not a server error.
    for path, params in (
        ("/v1/paywarden/audit/proofs/inclusion", {"seq": 0, "tree_size": 10**9}),
        ("/v1/paywarden/audit/proofs/consistency", {"old_size": 0, "new_size": 10**9}),
    ):
        assert api.get(path, params, key=auditor).status_code == 400
    # Read-only: the auditor cannot change anything.
    assert (
        api.post("/v1/webhook_endpoints", {"url": "https://x.example"}, key=auditor).status_code
        == 403
    )
    # Every read is itself on the record.
    events = [e["event"] for e in _entries(gateway)]
    assert "audit.tree_head_read" in events and "audit.proof_read" in events
    assert "audit.entries_read" in events


def test_another_tenant_sees_neither_entries_nor_entry_bytes(
    api: Api, gateway: Gateway, merchant: Merchant
) -> None:
    from tests.conftest import make_merchant

    api.post(
        "/v1/webhook_endpoints", {"url": "https://merchant.example/h3", "enabled_events": ["*"]}
    )
    other = make_merchant(gateway, "Other")
    listed = api.get("/v1/paywarden/audit/entries", key=other.secret_key).json()
    assert all(merchant.account_id not in d["entry"] for d in listed["data"])
    seq = next(e["seq"] for e in _entries(gateway) if e["event"] == "webhook_endpoint.created")
    proof = api.get(
        "/v1/paywarden/audit/proofs/inclusion", {"seq": seq}, key=other.secret_key
    ).json()
    assert proof["entry"] is None and proof["proof"] is not None


def test_an_action_is_on_record_before_it_runs(
    api: Api, gateway: Gateway, merchant: Merchant
) -> None:
    hook = api.post(
        "/v1/webhook_endpoints", {"url": "https://merchant.example/h4", "enabled_events": ["*"]}
    ).json()
    entries = _entries(gateway)
    done = next(e for e in entries if e["event"] == "webhook_endpoint.created")
    started = [
        e
        for e in entries
        if e["event"] == "api.call_started"
        and e["origin"]["request_id"] == done["origin"]["request_id"]
    ]
    assert len(started) == 1 and started[0]["seq"] < done["seq"]
    assert started[0]["details"]["action"] == "webhook_endpoint.created"
    assert done["resource"]["id"] == hook["id"]


def test_no_audit_entry_no_action(
    api: Api, gateway: Gateway, merchant: Merchant, monkeypatch: Any
) -> None:
    """Failing to write the audit log fails the action it would record: 503,
    and nothing was created (an idempotent retry then runs it for real)."""
    from paywarden.audit import AuditWriteError

    assert gateway.audit is not None

    def refuse(**_: Any) -> int:
        raise AuditWriteError("disk full")

    monkeypatch.setattr(gateway.audit, "record", refuse)
    body = {"url": "https://merchant.example/h5", "enabled_events": ["*"]}
    refused = api.post("/v1/webhook_endpoints", body, idem="audit-down-1")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "audit_unavailable"
    assert "Traceback" not in refused.text
    monkeypatch.undo()
    assert api.get("/v1/webhook_endpoints").json()["data"] == []
    retried = api.post("/v1/webhook_endpoints", body, idem="audit-down-1")
    assert retried.status_code == 200
    assert [e["url"] for e in api.get("/v1/webhook_endpoints").json()["data"]] == [body["url"]]
