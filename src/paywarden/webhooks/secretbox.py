"""Endpoint signing secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from paywarden.core.secrets import Secret


class SecretBoxError(Exception):
    """A stored ciphertext could not be decrypted (wrong key or tampered)."""


class SecretBox:
    __slots__ = ("_fernet",)

    def __init__(self, key: Secret) -> None:
        try:
            self._fernet = Fernet(key.reveal().encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SecretBoxError("the storage key is not a valid Fernet key") from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretBoxError("stored webhook secret could not be decrypted") from None

    def __repr__(self) -> str:
        return "SecretBox(***)"
