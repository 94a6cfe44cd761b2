"""Object identifiers in Stripe's shape: ``<prefix>_<random base62>``."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Random bytes below 248 (= 4 * 62) map four-to-one onto the alphabet, so each
# kept byte is one uniform base62 character; bytes 248-255 are dropped
# (rejection sampling: about 3 % of them).
_KEEP = 4 * len(_ALPHABET)
_TO_CHAR = bytes(_ALPHABET.encode()[b % len(_ALPHABET)] if b < _KEEP else 0 for b in range(256))
_REJECTED = bytes(range(_KEEP, 256))


def random_base62(length: int) -> str:
    """Uniform random base62 string from the OS CSPRNG.

    Each character comes from its own CSPRNG byte, kept only when below 248
    and reduced mod 62: independent and uniform. ``bytes.translate`` does the
    mapping and the rejection in C, so this costs about one ``urandom`` call.
    """
    out = b""
    while len(out) < length:
        need = length - len(out)
        out += secrets.token_bytes(need + need // 8 + 8).translate(_TO_CHAR, _REJECTED)
    return out[:length].decode("ascii")


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
