"""Stripe-compatible webhook signatures.

Header: ``Stripe-Signature: t=<unix ts>,v1=<hex>[,v1=<hex>...]`` where each ``v1`` is
``HMAC-SHA256(key=secret, msg=f"{t}." + payload)``. While a secret is being rolled,
both the new and the previous secret sign, so a receiver holding either verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_bytes

from paywarden.core.ids import to_base62

SECRET_PREFIX = "whsec_"  # noqa: S105 - a public prefix, not a secret
SCHEME = "v1"
_MAX_HEADER_CHARS = 8192


class SignatureVerificationError(ValueError):
    """The signature header is malformed, stale, or matches no signature."""


def generate_secret() -> str:
    """``whsec_`` followed by 32 random bytes in base62 (43 characters)."""
    return SECRET_PREFIX + to_base62(int.from_bytes(token_bytes(32), "big"), 43)


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    msg = str(int(timestamp)).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def signature_header(payload: bytes, secrets: Sequence[str], timestamp: int) -> str:
    """``t=<ts>,v1=<sig>`` with one ``v1`` per secret, in the order given."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    parts = [f"t={int(timestamp)}"]
    parts.extend(f"{SCHEME}={compute_signature(payload, s, timestamp)}" for s in secrets)
    return ",".join(parts)


def _parse(header: str) -> tuple[int, list[str]]:
    if len(header) > _MAX_HEADER_CHARS:
        raise SignatureVerificationError("signature header too long")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise SignatureVerificationError("signature header has no valid timestamp")
    if not signatures:
        raise SignatureVerificationError(f"signature header has no {SCHEME} signature")
    return int(timestamps[0]), signatures


def verify_header(payload: bytes, header: str, secret: str, tolerance: int, now: float) -> int:
    """Check ``header`` against ``payload``; return its timestamp or raise.

    The timestamp must be within ``tolerance`` seconds of ``now`` (either side), and
    at least one ``v1`` must equal our HMAC; every candidate is compared in constant
    time.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be positive")
    timestamp, candidates = _parse(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureVerificationError("timestamp outside the tolerance zone")
    expected = compute_signature(payload, secret, timestamp).encode("ascii")
    matched = False
    for candidate in candidates:
        try:
            raw = candidate.encode("ascii")
        except UnicodeEncodeError:
            continue
        matched |= hmac.compare_digest(expected, raw)
    if not matched:
        raise SignatureVerificationError("no signature matches the expected signature")
    return timestamp
