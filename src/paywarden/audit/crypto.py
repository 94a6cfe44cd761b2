"""The audit package's only use of ``cryptography.hazmat``: Ed25519 for tree
heads and manifests, HKDF for key derivation. Quarantined here (ruff's
banned-api rule allows it in this file and the standalone verifier only) so
every other module calls these small recipes.

Keys travel as raw bytes (32-byte Ed25519 seeds and public keys): that is
what the store seals and what the standalone verifier accepts as hex.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


class SigningKey:
    """An Ed25519 private key held in memory; masked in ``repr``, never pickled."""

    __slots__ = ("_key",)

    def __init__(self, private_raw: bytes) -> None:
        if len(private_raw) != ED25519_KEY_BYTES:
            raise ValueError("an Ed25519 private key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(private_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        key = cls.__new__(cls)
        key._key = Ed25519PrivateKey.generate()
        return key

    def private_bytes(self) -> bytes:
        """The raw seed, for sealing. Call sites are the audit surface."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return "SigningKey(ed25519=***)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("signing keys are not picklable")


def verify_signature(public_raw: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification; any malformed input is simply ``False``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def public_key_pem(public_raw: bytes) -> str:
    return (
        Ed25519PublicKey.from_public_bytes(public_raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) without a salt: our input keys are uniformly
    random, where a salt adds nothing; ``info`` separates the derived keys."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)
