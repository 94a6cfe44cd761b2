"""Hybrid Public Key Encryption (RFC 9180) for card data sealed in the browser.

A client (the JavaScript card element, or the Python helper) seals card data to
the vault's current public key; only the vault, holding the private key, opens
it. One fixed suite, single-shot, base mode (no PSK, no sender key), empty
associated data:

    KEM  DHKEM(X25519, HKDF-SHA256)  0x0020
    KDF  HKDF-SHA256                 0x0001
    AEAD AES-128-GCM                 0x0001

A payload is ``enc (32 bytes) || ciphertext || tag (16 bytes)``. The ``info``
string (:func:`info_for`) names the vault key id, so a payload sealed to one key
id cannot be presented as sealed to another.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as _hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from paywarden.vault.crypto.aead import DecryptionError

KEM_ID = 0x0020
KDF_ID = 0x0001
AEAD_ID = 0x0001
SUITE_NAME = "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"

ENC_BYTES = 32  # Nenc for DHKEM(X25519, HKDF-SHA256)
TAG_BYTES = 16  # Nt for AES-128-GCM
KEY_BYTES = 32

_SUITE = _hpke.Suite(_hpke.KEM.X25519, _hpke.KDF.HKDF_SHA256, _hpke.AEAD.AES_128_GCM)
_INFO_PREFIX = b"paywarden card v1 "


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes: ``(private 32 bytes, public 32 bytes)``."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def info_for(key_id: str) -> bytes:
    """The HPKE ``info`` for payloads sealed to vault key ``key_id``."""
    return _INFO_PREFIX + key_id.encode("ascii")


def seal_to(public_key: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """Seal ``plaintext`` to a raw X25519 public key; returns ``enc || ct``."""
    if len(public_key) != KEY_BYTES:
        raise ValueError(f"public key must be {KEY_BYTES} bytes")
    return _SUITE.encrypt(plaintext, X25519PublicKey.from_public_bytes(public_key), info=info)


class PrivateKey:
    """An HPKE private key parsed once, for many opens.

    Parsing a raw X25519 key derives its public key (a scalar multiplication,
    about as costly as the open itself), so a key used for many payloads is
    loaded once. Masked in ``repr``, never pickled; the raw bytes stay inside.
    """

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
            raise ValueError(f"private key must be {KEY_BYTES} bytes")
        self._key = X25519PrivateKey.from_private_bytes(raw)

    def __repr__(self) -> str:
        return "hpke.PrivateKey(***)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("private keys are not picklable")


def open_from(private_key: bytes | PrivateKey, payload: bytes, *, info: bytes) -> bytes:
    """Open a payload made by :func:`seal_to` with a raw private key or a loaded
    :class:`PrivateKey`; :class:`DecryptionError` on any failure."""
    if len(payload) < ENC_BYTES + TAG_BYTES:
        raise DecryptionError
    try:
        if isinstance(private_key, PrivateKey):
            key = private_key._key
        else:
            if len(private_key) != KEY_BYTES:
                raise DecryptionError
            key = X25519PrivateKey.from_private_bytes(private_key)
        return _SUITE.decrypt(payload, key, info=info)
    except (InvalidTag, ValueError, TypeError):
        # One opaque error: a malformed enc, a wrong key and a tampered ciphertext
        # must look the same to whoever submitted the payload.
        raise DecryptionError from None
