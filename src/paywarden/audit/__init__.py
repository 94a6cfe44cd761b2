"""Paywarden's tamper-evident audit log: an append-only RFC 9162 Merkle log per
service (gateway, vault), with signed tree heads, proofs, full verification and
retention. See ``docs/architecture.md`` ("Audit log") for the design.

Public surface (pinned by ``tests/audit/test_public_api.py``)::

    log = open_gateway_audit(settings, secrets)        # or open_vault_audit(settings, kms)
    seq = log.record(event="api_key.created", outcome="success",
                     actor=Actor.api_key("key_…"), origin=Origin(ip=…, request_id=…),
                     resource=Resource("api_key", "key_…"), account="acct_…",
                     details={…}, sensitive={"email": "…"})   # AuditWriteError if not durable
    seq = await log.arecord(event=…, …)                 # the same, from an asyncio task
    log.sign_tree_head(); log.inclusion_proof(seq); log.consistency_proof(old, new)
    verify_store(log.store, service="gateway")          # names every bad entry
    log.close()

Modules: ``merkle`` (RFC 9162, stdlib only), ``entry`` (the entry and its
canonical bytes), ``store`` (tables, Alembic), ``log`` (group commit),
``tree`` (node cache, proofs), ``signing`` / ``sealing`` / ``crypto`` (keys),
``verify``, ``archive`` (retention), ``ocsf`` (export), ``verifier``
(standalone, copyable), ``service`` (wiring).
"""

from __future__ import annotations

from paywarden.audit.entry import Actor, Entry, Origin, Resource
from paywarden.audit.errors import AuditEntryError, AuditError, AuditKeyError, AuditWriteError
from paywarden.audit.log import AuditLog, ConsistencyProof, InclusionProof
from paywarden.audit.sealing import FernetSealer, KeySealer, KmsSealer
from paywarden.audit.service import open_gateway_audit, open_vault_audit
from paywarden.audit.signing import TreeHead
from paywarden.audit.verify import Finding, VerifyReport, verify_store

__all__ = [
    "Actor",
    "AuditEntryError",
    "AuditError",
    "AuditKeyError",
    "AuditLog",
    "AuditWriteError",
    "ConsistencyProof",
    "Entry",
    "FernetSealer",
    "Finding",
    "InclusionProof",
    "KeySealer",
    "KmsSealer",
    "Origin",
    "Resource",
    "TreeHead",
    "VerifyReport",
    "open_gateway_audit",
    "open_vault_audit",
    "verify_store",
]
