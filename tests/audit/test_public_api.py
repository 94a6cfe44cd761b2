"""The audit package's public surface, as its docstring shows it."""

from __future__ import annotations

import inspect

import paywarden.audit as audit


def test_exports_are_importable_and_listed() -> None:
    for name in audit.__all__:
        assert getattr(audit, name) is not None
    for name in ("open_gateway_audit", "open_vault_audit", "verify_store", "Actor", "Origin"):
        assert name in audit.__all__


def test_log_methods_named_in_the_docstring_exist() -> None:
    log = audit.AuditLog
    for method in ("record", "record_many", "sign_tree_head", "inclusion_proof",
                   "consistency_proof", "close"):  # fmt: skip
        assert callable(getattr(log, method))
    assert inspect.iscoroutinefunction(log.arecord)
    record = inspect.signature(log.record).parameters
    arecord = inspect.signature(log.arecord).parameters
    assert list(record) == list(arecord)  # the awaitable takes exactly the same arguments
