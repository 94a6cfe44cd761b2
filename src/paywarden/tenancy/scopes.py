"""Restricted-key scopes: resource x (read | write). ``write`` implies ``read``.

Publishable keys carry no scopes: they reach only the routes explicitly marked
browser-safe, and those routes check the object's client secret themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

RESOURCES = (
    "customers",
    "payment_methods",
    "payment_intents",
    "charges",
    "refunds",
    "events",
    "webhook_endpoints",
    "tokens",
    "radar",
    "audit",  # the auditor's API: read-only, every call audited
)
LEVELS = ("none", "read", "write")


def validate_scopes(scopes: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for resource, level in scopes.items():
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r} for {resource}; use read or write")
        if level != "none":
            out[resource] = level
    return out


def allows(scopes: Mapping[str, str], resource: str, write: bool) -> bool:
    level = scopes.get(resource, "none")
    return level == "write" or (level == "read" and not write)


def parse_scope_args(items: list[str]) -> dict[str, str]:
    """CLI form: ``customers:read payment_intents:write``."""
    out: dict[str, str] = {}
    for item in items:
        resource, _, level = item.partition(":")
        out[resource] = level or "read"
    return validate_scopes(out)
