"""Sealing the audit log's private keys at rest.

The Ed25519 signing keys (and the vault's pseudonym key) are stored only
sealed, by a :class:`KeySealer`; ``context`` binds a blob to what it holds
(``b"paywarden/audit/signing-key/gateway/<key id>"``), so a blob copied onto
another row does not open.

- :class:`FernetSealer` (gateway): the gateway's Fernet storage key from
  ``secrets.json``. Fernet has no associated data, so the context selects a
  derived key instead: ``HKDF-SHA256(storage key, info="paywarden/audit/seal/v1"
  || 0x00 || context)``; a wrong context fails like a wrong key.
- :class:`KmsSealer` (vault): the vault's :class:`~paywarden.vault.kms.KeyManager`
  wraps the key under its current KEK, with ``context`` as the KMS binding
  context (which must be non-empty bytes). The blob records the KEK version.
  After a KEK rotation, :meth:`KmsSealer.needs_reseal` says so and
  :meth:`paywarden.audit.log.AuditLog.reseal_keys` rewraps, *before* the old
  version is retired: a retired version never unwraps again.

Every failure to open is one opaque :class:`~paywarden.audit.errors.AuditKeyError`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography.fernet import Fernet, InvalidToken

from paywarden.audit.crypto import hkdf_sha256
from paywarden.audit.errors import AuditKeyError
from paywarden.core.secrets import Secret

if TYPE_CHECKING:
    from paywarden.vault.kms import KeyManager

_UNSEAL_FAILED = "cannot unseal an audit key: wrong key, wrong context or damaged blob"


class KeySealer(Protocol):
    """Seals small secrets (keys) for storage; ``context`` must match to unseal."""

    def seal(self, data: bytes, *, context: bytes) -> bytes: ...

    def unseal(self, blob: bytes, *, context: bytes) -> bytes: ...


@runtime_checkable
class ResealAware(Protocol):
    """A sealer whose blobs age (a KEK version that will be retired)."""

    def needs_reseal(self, blob: bytes) -> bool: ...


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or not context:
        raise ValueError("context must be non-empty bytes")


class FernetSealer:
    """Seals with Fernet under a key derived per context from a Fernet key."""

    _INFO = b"paywarden/audit/seal/v1\x00"

    def __init__(self, fernet_key: Secret | str | bytes) -> None:
        text = fernet_key.reveal() if isinstance(fernet_key, Secret) else fernet_key
        raw_text = text.encode("ascii") if isinstance(text, str) else text
        try:
            raw = base64.urlsafe_b64decode(raw_text)
        except (binascii.Error, ValueError):
            raise ValueError("the storage key must be a Fernet key (urlsafe base64)") from None
        if len(raw) != 32:
            raise ValueError("the storage key must be a Fernet key (32 bytes)")
        self._master = raw

    def __repr__(self) -> str:
        return "FernetSealer(key=***)"

    def _fernet(self, context: bytes) -> Fernet:
        _check_context(context)
        derived = hkdf_sha256(self._master, info=self._INFO + context)
        return Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, data: bytes, *, context: bytes) -> bytes:
        return self._fernet(context).encrypt(data)

    def unseal(self, blob: bytes, *, context: bytes) -> bytes:
        try:
            return self._fernet(context).decrypt(blob)
        except (InvalidToken, TypeError, ValueError):
            raise AuditKeyError(_UNSEAL_FAILED) from None


class KmsSealer:
    """Adapts the vault's :class:`KeyManager`: ``b"PWK1" || u32be(kek_version) || wrapped``."""

    _MAGIC = b"PWK1"
    _HEADER = struct.Struct(">4sI")

    def __init__(self, key_manager: KeyManager) -> None:
        self._kms = key_manager

    def __repr__(self) -> str:
        return f"KmsSealer(backend={self._kms.backend!r})"

    def seal(self, data: bytes, *, context: bytes) -> bytes:
        _check_context(context)
        wrapped = self._kms.wrap(data, context=context)
        return self._HEADER.pack(self._MAGIC, wrapped.kek_version) + wrapped.blob

    def _parse(self, blob: bytes) -> tuple[int, bytes]:
        if len(blob) <= self._HEADER.size:
            raise AuditKeyError(_UNSEAL_FAILED)
        magic, version = self._HEADER.unpack_from(blob)
        if magic != self._MAGIC:
            raise AuditKeyError(_UNSEAL_FAILED)
        return int(version), blob[self._HEADER.size :]

    def unseal(self, blob: bytes, *, context: bytes) -> bytes:
        from paywarden.vault.crypto.aead import DecryptionError
        from paywarden.vault.kms import KmsError, WrappedKey

        _check_context(context)
        version, inner = self._parse(blob)
        try:
            return self._kms.unwrap(WrappedKey(version, inner), context=context)
        except (DecryptionError, KmsError):
            raise AuditKeyError(_UNSEAL_FAILED) from None

    def needs_reseal(self, blob: bytes) -> bool:
        version, _ = self._parse(blob)
        return version < self._kms.current_version()
