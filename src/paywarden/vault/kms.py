"""Key-encryption keys (KEKs): versioned, rotatable, retirable.

Every record's data key is wrapped by a KEK version, bound to the record by a
``context`` (associated data such as ``b"card:<token>:<account_id>"``). Two
backends implement :class:`KeyManager`:

- :class:`LocalKeyring` (the default) keeps the KEK versions in one JSON file,
  each sealed under a key derived from a master secret. Unsealing story: the
  master secret (32 random bytes, base64) comes from ``PAYWARDEN_VAULT_MASTER_KEY``
  in production, or from ``$VAULT_HOME/master.key`` (0600, created on first run)
  in development. It never touches the database; without it the keyring, and so
  every stored card, is unreadable. An HMAC over the whole file detects edits
  such as lowering ``min_decryption_version`` or deleting a version.
- :class:`TransitKms` keeps the KEK in OpenBao / HashiCorp Vault Transit; the
  KEK never leaves the server.

Errors: :class:`KmsError` when the backend is unreachable or misconfigured;
:class:`~paywarden.vault.crypto.aead.DecryptionError` when a wrapped key does
not open (tampered, wrong context, retired version). Neither message ever
contains key material, plaintext or a token.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

import hvac
import hvac.exceptions

from paywarden.core.files import atomic_write
from paywarden.core.secrets import Secret
from paywarden.vault.crypto import aead
from paywarden.vault.crypto.aead import DecryptionError


@dataclass(frozen=True)
class WrappedKey:
    kek_version: int
    blob: bytes  # opaque to callers; for Transit the "vault:vN:..." ciphertext as ascii bytes


@dataclass(frozen=True)
class KekVersion:
    version: int
    created_at: datetime  # UTC
    retired: bool  # version < min_decryption_version


class KmsError(Exception):
    """The key backend is unreachable or misconfigured. No key material in the message."""


class KeyManager(Protocol):
    backend: str  # "local" | "transit"

    def current_version(self) -> int: ...

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes: ...

    def rewrap(self, wrapped: WrappedKey, *, context: bytes) -> WrappedKey: ...

    def rotate(self) -> int: ...

    def versions(self) -> list[KekVersion]: ...

    def min_decryption_version(self) -> int: ...

    def set_min_decryption_version(self, version: int) -> None: ...


def _check_context(context: bytes) -> None:
    # An empty context would bind a wrapped key to nothing: always a caller bug.
    if not isinstance(context, bytes) or not context:
        raise ValueError("context must be non-empty bytes")


# --------------------------------------------------------------------- local

MASTER_SECRET_BYTES = 32
_FORMAT = "paywarden-keyring/v1"
_SEAL_INFO = b"paywarden/keyring/v1"
_MAC_INFO = b"paywarden/keyring/v1/mac"
_UNSEAL_FAILED = "cannot unseal keyring: wrong master secret or damaged file"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _master_bytes(master_secret: Secret | bytes) -> bytes:
    if isinstance(master_secret, Secret):
        try:
            raw = _unb64(master_secret.reveal().strip())
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise KmsError("master secret must be base64 of 32 bytes") from None
    else:
        raw = bytes(master_secret)
    if len(raw) != MASTER_SECRET_BYTES:
        raise KmsError("master secret must be 32 bytes")
    return raw


def load_or_create_master_secret(path: Path) -> Secret:
    """The development master secret: base64 of 32 random bytes in ``path`` (0600).

    Created if missing. Refused if group or others may read it: a master secret
    that leaked to another local user protects nothing.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a complete temp file (0600), then link it into place: the name
        # appears with its content or not at all, and never replaces another
        # process's secret that won the race.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(_b64(aead.generate_key()) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o077:
        raise KmsError(f"{path} must be readable by its owner only (chmod 600)")
    secret = Secret(path.read_text(encoding="ascii").strip(), "vault master secret")
    _master_bytes(secret)  # fail now, with a clear message, if the file is damaged
    return secret


@dataclass(frozen=True)
class _Keyring:
    keks: dict[int, bytes]
    created: dict[int, datetime]
    min_version: int

    @property
    def current(self) -> int:
        return max(self.keks)


class LocalKeyring:
    """KEK versions sealed in one JSON file under a key derived from a master secret.

    The file (mode 0600, replaced atomically) holds, per version, the KEK sealed
    with AES-256-GCM (associated data names the version) and its creation time,
    plus ``min_decryption_version`` and an HMAC-SHA256 over all of it. Writers
    are serialised by a thread lock and, across processes, by ``flock`` on
    ``<path>.lock``; each write re-reads the file first. Rolling the whole file
    back to an older copy is not detected: back it up and guard it accordingly.
    """

    backend: str = "local"

    def __init__(self, *, path: Path, master: bytes, keyring: _Keyring) -> None:
        # Use LocalKeyring.open(); this constructor trusts its arguments.
        self._path = path
        self._seal_key = aead.derive_key(master, info=_SEAL_INFO)
        self._mac_key = aead.derive_key(master, info=_MAC_INFO)
        self._keyring = keyring
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalKeyring(path={str(self._path)!r})"

    @classmethod
    def open(
        cls, path: Path, master_secret: Secret | bytes, *, create: bool = True
    ) -> LocalKeyring:
        master = _master_bytes(master_secret)
        keyring = cls(path=path, master=master, keyring=_Keyring({}, {}, 1))
        with keyring._file_lock():
            if path.exists():
                keyring._keyring = keyring._load()
            elif create:
                now = datetime.now(UTC)
                keyring._keyring = _Keyring({1: aead.generate_key()}, {1: now}, 1)
                keyring._store(keyring._keyring)
            else:
                raise KmsError(f"keyring {path} does not exist")
        return keyring

    # -- file format

    def _mac(self, body: dict[str, Any]) -> bytes:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return aead.hmac_sha256(self._mac_key, canonical)

    @staticmethod
    def _version_aad(version: int) -> bytes:
        return f"paywarden/keyring/v1/kek/{version}".encode()

    def _store(self, keyring: _Keyring) -> None:
        body: dict[str, Any] = {
            "format": _FORMAT,
            "min_decryption_version": keyring.min_version,
            "versions": [
                {
                    "version": v,
                    "created_at": keyring.created[v].isoformat(),
                    "sealed_kek": _b64(
                        aead.seal(self._seal_key, keyring.keks[v], aad=self._version_aad(v))
                    ),
                }
                for v in sorted(keyring.keks)
            ],
        }
        body["mac"] = _b64(self._mac(body))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path, json.dumps(body, indent=2).encode() + b"\n")

    def _load(self) -> _Keyring:
        try:
            body = json.loads(self._path.read_bytes())
            mac = _unb64(body.pop("mac"))
            if not aead.constant_time_equal(mac, self._mac(body)):
                raise KmsError(_UNSEAL_FAILED)
            # The MAC held, so the structure is ours; still check it is coherent.
            if body["format"] != _FORMAT:
                raise KmsError(_UNSEAL_FAILED)
            keks: dict[int, bytes] = {}
            created: dict[int, datetime] = {}
            for entry in body["versions"]:
                v = int(entry["version"])
                keks[v] = aead.open_sealed(
                    self._seal_key, _unb64(entry["sealed_kek"]), aad=self._version_aad(v)
                )
                created[v] = datetime.fromisoformat(entry["created_at"]).astimezone(UTC)
            min_version = int(body["min_decryption_version"])
        except OSError:
            raise KmsError(f"cannot read keyring {self._path}") from None
        except (ValueError, KeyError, TypeError, AttributeError, DecryptionError):
            # No detail: which check failed says nothing useful to an operator
            # and something to an attacker holding the file.
            raise KmsError(_UNSEAL_FAILED) from None
        if sorted(keks) != list(range(1, len(keks) + 1)) or not 1 <= min_version <= len(keks):
            raise KmsError(_UNSEAL_FAILED)
        return _Keyring(keks, created, min_version)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise writers: threads of this process, then other processes."""
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self._path.with_name(self._path.name + ".lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _refresh(self) -> None:
        """Pick up versions another process has added."""
        with self._file_lock():
            self._keyring = self._load()

    # -- KeyManager

    def current_version(self) -> int:
        return self._keyring.current

    def min_decryption_version(self) -> int:
        return self._keyring.min_version

    def versions(self) -> list[KekVersion]:
        k = self._keyring
        return [
            KekVersion(version=v, created_at=k.created[v], retired=v < k.min_version)
            for v in sorted(k.keks)
        ]

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        _check_context(context)
        k = self._keyring
        version = k.current
        return WrappedKey(version, aead.seal(k.keks[version], data_key, aad=context))

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        _check_context(context)
        k = self._keyring
        if wrapped.kek_version > k.current:
            self._refresh()  # rotated by another process since we loaded
            k = self._keyring
        if wrapped.kek_version not in k.keks or wrapped.kek_version < k.min_version:
            # Retired versions stay in the file but never decrypt again.
            raise DecryptionError
        return aead.open_sealed(k.keks[wrapped.kek_version], wrapped.blob, aad=context)

    def rewrap(self, wrapped: WrappedKey, *, context: bytes) -> WrappedKey:
        # Always open first: rewrapping must not launder a tampered or
        # wrong-context blob into a fresh, valid one.
        data_key = self.unwrap(wrapped, context=context)
        if wrapped.kek_version == self._keyring.current:
            return WrappedKey(wrapped.kek_version, wrapped.blob)
        return self.wrap(data_key, context=context)

    def rotate(self) -> int:
        with self._file_lock():
            k = self._load()
            version = k.current + 1
            new = _Keyring(
                {**k.keks, version: aead.generate_key()},
                {**k.created, version: datetime.now(UTC)},
                k.min_version,
            )
            self._store(new)
            self._keyring = new
            return version

    def set_min_decryption_version(self, version: int) -> None:
        with self._file_lock():
            k = self._load()
            if version > k.current:
                raise ValueError(f"version {version} does not exist (current is {k.current})")
            if version < k.min_version:
                raise ValueError(f"min decryption version is {k.min_version}; it cannot be lowered")
            new = _Keyring(k.keks, k.created, version)
            self._store(new)
            self._keyring = new


# ------------------------------------------------------------------- transit


class TransitKms:
    """KEKs in OpenBao / HashiCorp Vault Transit (https://openbao.org/api-docs/secret/transit/).

    The key is ``aes256-gcm96`` created with ``derived=true``: Transit derives a
    per-context key (HKDF) from the KEK and the request's ``context``, which we
    set to the caller's binding context. A wrong context therefore fails to
    decrypt. We use derivation rather than ``associated_data`` because Transit's
    ``rewrap`` endpoint accepts ``context`` but not ``associated_data`` (checked
    against OpenBao 2.7): with derivation, rewrap runs entirely inside OpenBao
    and the data key never leaves it in clear.

    The token needs: read/update on ``<mount>/keys/<name>``, ``<mount>/keys/<name>/config``,
    ``<mount>/keys/<name>/rotate``, ``<mount>/encrypt/<name>``, ``<mount>/decrypt/<name>``,
    ``<mount>/rewrap/<name>``; and, only to set things up on first use, ``sys/mounts``.
    """

    backend: str = "transit"
    KEY_TYPE = "aes256-gcm96"

    def __init__(
        self,
        url: str,
        token: Secret,
        *,
        key_name: str = "paywarden-kek",
        mount_point: str = "transit",
        verify: bool | str = True,
        timeout: float = 5.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._key_name = key_name
        self._mount = mount_point.strip("/")
        self._client = hvac.Client(
            url=self._url,
            token=token.reveal(),
            verify=verify,
            timeout=max(1, math.ceil(timeout)),  # hvac takes whole seconds; round up
        )
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransitKms(url={self._url!r}, key_name={self._key_name!r})"

    # -- plumbing

    @property
    def _transit(self) -> Any:
        # types-hvac leaves most Transit methods untyped; this is the one boundary.
        return self._client.secrets.transit

    @property
    def _sys(self) -> Any:
        return self._client.sys

    def _fail(self, exc: Exception, what: str, *, chain: bool = True) -> NoReturn:
        if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            err = KmsError(f"transit KMS refused {what}: permission denied (check the token)")
        elif isinstance(exc, hvac.exceptions.VaultError):
            err = KmsError(f"transit KMS failed {what} ({type(exc).__name__})")
        else:  # requests' exceptions are OSErrors
            err = KmsError(f"transit KMS unreachable at {self._url} ({type(exc).__name__})")
        # Calls that carry key material are not chained: the library's exception
        # is kept out of logs entirely.
        raise err from (exc if chain else None)

    def _key(self) -> dict[str, Any]:
        try:
            response = self._transit.read_key(self._key_name, mount_point=self._mount)
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "reading the key")
        data: dict[str, Any] = response["data"]
        return data

    def _ensure(self) -> None:
        """On first use: mount the engine and create the key if they are missing."""
        with self._lock:
            if not self._ready:
                self._set_up()
                self._ready = True

    def _set_up(self) -> None:
        transit = self._transit
        try:
            try:
                key: dict[str, Any] = transit.read_key(self._key_name, mount_point=self._mount)[
                    "data"
                ]
            except hvac.exceptions.InvalidPath:
                mounts = self._sys.list_mounted_secrets_engines()["data"]
                if f"{self._mount}/" not in mounts:
                    self._sys.enable_secrets_engine("transit", path=self._mount)
                transit.create_key(
                    self._key_name, key_type=self.KEY_TYPE, derived=True, mount_point=self._mount
                )
                key = transit.read_key(self._key_name, mount_point=self._mount)["data"]
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "setting up the transit key")
        if key.get("type") != self.KEY_TYPE or not key.get("derived"):
            # Misconfiguration, not a transient error: say exactly what to fix.
            raise KmsError(
                f"transit key {self._key_name!r} must be type {self.KEY_TYPE} "
                "created with derived=true"
            )

    @staticmethod
    def _version_of(ciphertext: str) -> int | None:
        parts = ciphertext.split(":", 2)
        if len(parts) != 3 or parts[0] != "vault" or not parts[1].startswith("v"):
            return None
        try:
            return int(parts[1][1:])
        except ValueError:
            return None

    def _ciphertext(self, wrapped: WrappedKey) -> str:
        try:
            text = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError from None
        if self._version_of(text) != wrapped.kek_version:
            raise DecryptionError  # the record's version and the blob disagree
        return text

    # -- KeyManager

    def current_version(self) -> int:
        self._ensure()
        return int(self._key()["latest_version"])

    def min_decryption_version(self) -> int:
        self._ensure()
        return int(self._key()["min_decryption_version"])

    def versions(self) -> list[KekVersion]:
        """Versions Transit still lists: those at or above ``min_decryption_version``."""
        self._ensure()
        key = self._key()
        min_version = int(key["min_decryption_version"])
        return [
            KekVersion(
                version=int(v),
                created_at=datetime.fromtimestamp(int(created), UTC),
                retired=int(v) < min_version,
            )
            for v, created in sorted(key["keys"].items(), key=lambda item: int(item[0]))
        ]

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        _check_context(context)
        self._ensure()
        try:
            data = self._transit.encrypt_data(
                self._key_name,
                plaintext=_b64(data_key),
                context=_b64(context),
                mount_point=self._mount,
            )["data"]
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "wrapping a key", chain=False)
        return WrappedKey(int(data["key_version"]), str(data["ciphertext"]).encode("ascii"))

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        _check_context(context)
        ciphertext = self._ciphertext(wrapped)
        self._ensure()
        try:
            data = self._transit.decrypt_data(
                self._key_name,
                ciphertext=ciphertext,
                context=_b64(context),
                mount_point=self._mount,
            )["data"]
        except hvac.exceptions.InvalidRequest:
            # Bad ciphertext, wrong context, retired version: one opaque error.
            raise DecryptionError from None
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "unwrapping a key", chain=False)
        return _unb64(data["plaintext"])

    def rewrap(self, wrapped: WrappedKey, *, context: bytes) -> WrappedKey:
        """Rewrap inside Transit; the data key never leaves the server in clear.

        Already at the latest version: the server still checks the blob and
        context (its answer is discarded) and the input comes back unchanged.
        """
        _check_context(context)
        ciphertext = self._ciphertext(wrapped)
        self._ensure()
        try:
            data = self._transit.rewrap_data(
                self._key_name,
                ciphertext=ciphertext,
                context=_b64(context),
                mount_point=self._mount,
            )["data"]
        except hvac.exceptions.InvalidRequest:
            raise DecryptionError from None
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "rewrapping a key", chain=False)
        version = int(data["key_version"])
        if version == wrapped.kek_version:
            return WrappedKey(wrapped.kek_version, wrapped.blob)
        return WrappedKey(version, str(data["ciphertext"]).encode("ascii"))

    def rotate(self) -> int:
        self._ensure()
        try:
            self._transit.rotate_key(self._key_name, mount_point=self._mount)
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "rotating the key")
        return int(self._key()["latest_version"])

    def set_min_decryption_version(self, version: int) -> None:
        self._ensure()
        key = self._key()
        latest, current_min = int(key["latest_version"]), int(key["min_decryption_version"])
        if version > latest:
            raise ValueError(f"version {version} does not exist (current is {latest})")
        if version < current_min:
            # Transit would allow lowering it; we do not: retiring is one-way.
            raise ValueError(f"min decryption version is {current_min}; it cannot be lowered")
        try:
            self._transit.update_key_configuration(
                self._key_name, min_decryption_version=version, mount_point=self._mount
            )
        except (hvac.exceptions.VaultError, OSError) as exc:
            self._fail(exc, "setting the min decryption version")
