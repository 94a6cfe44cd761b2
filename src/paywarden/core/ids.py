"""Object identifiers in Stripe's shape: ``<prefix>_<random base62>``."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_base62(length: int) -> str:
    """Uniform random base62 string from the OS CSPRNG.

    One ``randbelow(62**length)`` draw, rendered in base62: uniform, and an
    order of magnitude cheaper than a CSPRNG call per character.
    """
    return to_base62(secrets.randbelow(62**length), length)


def new_id(prefix: str, length: int = 24) -> str:
    """A new object id such as ``pi_3QpX...``; 24 base62 chars is ~143 bits."""
    return f"{prefix}_{random_base62(length)}"


def to_base62(value: int, width: int) -> str:
    """Fixed-width base62 rendering of a non-negative integer."""
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))
