"""Envelope-encryption recipes: AES-256-GCM sealing, HMAC, HKDF.

Everything the vault encrypts at rest goes through :func:`seal` and
:func:`open_sealed`. A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16
bytes)``. The nonce is random: NIST SP 800-38D allows 2**32 such messages per
key, and here a data key seals a handful of values and a key-encryption key one
data key per record, far below that. The associated data (``aad``) binds a
blob to the record and tenant it belongs to, so a blob copied onto another
record does not open.

Every failure to open is one opaque :class:`DecryptionError`: a caller (or an
attacker probing an API) cannot tell a wrong key from tampered data.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# HKDF (RFC 5869) without a salt uses a string of HashLen zero bytes. Our
# master keys are uniformly random, where a salt adds nothing; the ``info``
# label is what separates the derived keys.
HKDF_SALT: bytes | None = None


class DecryptionError(Exception):
    """A sealed value could not be opened. The message never says why."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


def generate_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        # The length only: never the key bytes.
        raise ValueError(f"key must be {KEY_BYTES} bytes")


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce; returns ``nonce || ciphertext || tag``."""
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """The inverse of :func:`seal`; :class:`DecryptionError` on any failure."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise DecryptionError
    if not isinstance(blob, bytes) or len(blob) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError, TypeError):
        # `from None`: the library's exception adds nothing a caller may act on.
        raise DecryptionError from None


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), 32 bytes.

    The standard library's one-shot ``hmac.digest`` (OpenSSL underneath): the
    same function as ``cryptography``'s HMAC, without building a context object
    per call, which cost more than the MAC of a card number."""
    return hmac.digest(key, data, "sha256")


def derive_key(master: bytes, *, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``master`` with no salt, separated by ``info``.

    Example: the per-tenant fingerprint key is
    ``derive_key(fingerprint_root, info=b"paywarden/fingerprint/v1/" + account_id)``.
    """
    if len(master) < 16:
        raise ValueError("master key must be at least 16 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=HKDF_SALT, info=info).derive(master)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time that does not depend on where they differ."""
    return hmac.compare_digest(a, b)
