"""API key format and hashing.

A key looks like ``pws_test_<32 random base62><6 base62 CRC32>``:

* ``pws_`` secret, ``pwp_`` publishable, ``pwr_`` restricted — our own
  prefixes, deliberately not Stripe's ``sk_``/``pk_``/``rk_``, so secret
  scanners can tell a leaked Paywarden key from a Stripe one;
* ``test_`` / ``live_`` — the mode, visible to humans and scanners;
* a CRC32 checksum so a scanner can discard random look-alikes offline.

Keys are stored only as HMAC-SHA256(pepper, key): a database dump does not
yield usable keys, and without the pepper it cannot even be brute-forced
offline against the (high-entropy) key space.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass

from paywarden.core.ids import random_base62, to_base62
from paywarden.core.secrets import Secret

KIND_PREFIX = {"secret": "pws", "publishable": "pwp", "restricted": "pwr"}
PREFIX_KIND = {v: k for k, v in KIND_PREFIX.items()}
_KEY_RE = re.compile(r"^(pws|pwp|pwr)_(test|live)_([0-9A-Za-z]{38})$")


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    livemode: bool


def generate_key(kind: str, livemode: bool) -> Secret:
    prefix = f"{KIND_PREFIX[kind]}_{'live' if livemode else 'test'}_"
    body = random_base62(32)
    check = to_base62(zlib.crc32((prefix + body).encode()), 6)
    return Secret(prefix + body + check, f"{kind}_key")


def parse_key(raw: str) -> ParsedKey | None:
    """Shape and checksum only; says nothing about whether the key exists."""
    m = _KEY_RE.fullmatch(raw)
    if not m:
        return None
    prefix, mode, rest = m.groups()
    body, check = rest[:32], rest[32:]
    expected = to_base62(zlib.crc32(f"{prefix}_{mode}_{body}".encode()), 6)
    if not hmac.compare_digest(check, expected):
        return None
    return ParsedKey(kind=PREFIX_KIND[prefix], livemode=mode == "live")


def hash_key(raw: str, pepper: Secret) -> str:
    return hmac.new(pepper.reveal().encode(), raw.encode(), hashlib.sha256).hexdigest()


def hint(raw: str) -> str:
    """What may be shown or logged of a key: its prefix and last four characters."""
    m = re.match(r"^([a-z]{2,4}_(?:test|live)_)", raw)
    head = m.group(1) if m else ""
    tail = raw[-4:] if len(raw) >= 24 else ""
    return f"{head}****{tail}"
