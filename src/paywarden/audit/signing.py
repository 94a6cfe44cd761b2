"""Signed tree heads and the signing keys behind them.

A tree head commits to the log's first ``tree_size`` entries. The signed
message is a fixed byte layout, so any implementation can rebuild it::

    b"paywarden-sth-v1\\x00"           17 bytes, domain separation
    service (ASCII) || 0x00           "gateway" or "vault"
    tree_size                         8 bytes, unsigned big-endian
    timestamp_ms                      8 bytes, unsigned big-endian (ms since the epoch, UTC)
    root_hash                         32 bytes (RFC 9162 MTH)
    key_id                            8 bytes (the first 8 bytes of SHA-256(raw public key))

signed with Ed25519 (RFC 8032). Archive manifests are signed the same way over
``b"paywarden-archive-v1\\x00" || canonical JSON of the manifest``.

Keys: one active Ed25519 key per store; the private key is stored only sealed
by a :class:`~paywarden.audit.sealing.KeySealer` (context
``paywarden/audit/signing-key/<service>/<key id>``). Rotation retires the
active key (it never signs again) and keeps every public key, so old heads stay
verifiable.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from paywarden.audit.crypto import SigningKey, verify_signature
from paywarden.audit.errors import AuditKeyError
from paywarden.audit.sealing import KeySealer, ResealAware
from paywarden.audit.store import ADMIN_LOCK, AuditStore, secrets, signing_keys, tree_heads

STH_DOMAIN = b"paywarden-sth-v1\x00"
ARCHIVE_DOMAIN = b"paywarden-archive-v1\x00"
_U64 = struct.Struct(">Q")


_DIGIT_RUN = re.compile(r"[0-9]{13}")


def key_id_for(public_raw: bytes) -> str:
    """16 hex characters: the first 8 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_raw).digest()[:8].hex()


def sth_message(
    *, service: str, tree_size: int, timestamp_ms: int, root_hash: bytes, key_id: str
) -> bytes:
    if len(root_hash) != 32:
        raise ValueError("root hash must be 32 bytes")
    kid = bytes.fromhex(key_id)
    if len(kid) != 8:
        raise ValueError("key id must be 8 bytes (16 hex characters)")
    return (
        STH_DOMAIN
        + service.encode("ascii")
        + b"\x00"
        + _U64.pack(tree_size)
        + _U64.pack(timestamp_ms)
        + root_hash
        + kid
    )


@dataclass(frozen=True, slots=True)
class TreeHead:
    service: str
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return sth_message(
            service=self.service,
            tree_size=self.tree_size,
            timestamp_ms=self.timestamp_ms,
            root_hash=self.root_hash,
            key_id=self.key_id,
        )

    def verify(self, public_raw: bytes) -> bool:
        return key_id_for(public_raw) == self.key_id and verify_signature(
            public_raw, self.message(), self.signature
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "paywarden-sth-v1",
            "service": self.service,
            "tree_size": self.tree_size,
            "timestamp_ms": self.timestamp_ms,
            "root_hash": self.root_hash.hex(),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeHead:
        return cls(
            service=str(data["service"]),
            tree_size=int(data["tree_size"]),
            timestamp_ms=int(data["timestamp_ms"]),
            root_hash=bytes.fromhex(data["root_hash"]),
            key_id=str(data["key_id"]),
            signature=bytes.fromhex(data["signature"]),
        )


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    key_id: str
    public_key: bytes
    created_ms: int
    retired_ms: int | None


def _context(service: str, key_id: str) -> bytes:
    return f"paywarden/audit/signing-key/{service}/{key_id}".encode("ascii")


def load_public_keys(conn: Connection) -> dict[str, PublicKeyInfo]:
    rows = conn.execute(
        select(
            signing_keys.c.key_id,
            signing_keys.c.public_key,
            signing_keys.c.created,
            signing_keys.c.retired,
        ).order_by(signing_keys.c.created)
    ).all()
    return {
        str(kid): PublicKeyInfo(str(kid), bytes(pub), int(created), retired)
        for kid, pub, created, retired in rows
    }


def load_tree_heads(conn: Connection, service: str) -> list[TreeHead]:
    rows = conn.execute(
        select(
            tree_heads.c.tree_size,
            tree_heads.c.timestamp,
            tree_heads.c.root_hash,
            tree_heads.c.key_id,
            tree_heads.c.signature,
        ).order_by(tree_heads.c.tree_size, tree_heads.c.id)
    ).all()
    return [
        TreeHead(service, int(size), int(ts), bytes(root), str(kid), bytes(sig))
        for size, ts, root, kid, sig in rows
    ]


class Signer:
    """The active signing key of one store, unsealed in memory."""

    def __init__(self, store: AuditStore, *, service: str, sealer: KeySealer) -> None:
        self._store = store
        self._service = service
        self._sealer = sealer
        self._key: SigningKey | None = None
        self._key_id = ""

    def __repr__(self) -> str:
        return f"Signer(service={self._service!r}, key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        self._ensure()
        return self._key_id

    def _ensure(self) -> SigningKey:
        if self._key is None:
            self.load_or_create(now_ms=None)
        assert self._key is not None
        return self._key

    def load_or_create(self, *, now_ms: int | None) -> str:
        """Unseal the active key, creating the first one if the store has none."""
        with self._store.writing(ADMIN_LOCK) as conn:
            row = conn.execute(
                select(signing_keys.c.key_id, signing_keys.c.sealed_private)
                .where(signing_keys.c.retired.is_(None))
                .order_by(signing_keys.c.created.desc())
            ).first()
            if row is None:
                key_id = self._create(conn, now_ms=now_ms or 0)
            else:
                key_id = str(row[0])
                self._key = SigningKey(
                    self._sealer.unseal(bytes(row[1]), context=_context(self._service, key_id))
                )
                self._key_id = key_id
        return key_id

    def _create(self, conn: Connection, *, now_ms: int) -> str:
        key = SigningKey.generate()
        public = key.public_bytes()
        key_id = key_id_for(public)
        # Key ids go into entries, whose card-number guard refuses any run of 13
        # digits: about one hex id in a thousand has one, so draw again.
        while _DIGIT_RUN.search(key_id):
            key = SigningKey.generate()
            public = key.public_bytes()
            key_id = key_id_for(public)
        sealed = self._sealer.seal(key.private_bytes(), context=_context(self._service, key_id))
        conn.execute(
            insert(signing_keys).values(
                key_id=key_id,
                public_key=public,
                sealed_private=sealed,
                created=now_ms,
                retired=None,
            )
        )
        self._key, self._key_id = key, key_id
        return key_id

    def rotate(self, *, now_ms: int) -> tuple[str, str]:
        """Retire the active key and create a new one; returns (old id, new id)."""
        old = self.key_id
        with self._store.writing(ADMIN_LOCK) as conn:
            conn.execute(
                update(signing_keys).where(signing_keys.c.retired.is_(None)).values(retired=now_ms)
            )
            new = self._create(conn, now_ms=now_ms)
        return old, new

    def reseal(self) -> int:
        """Re-seal every stored private key and sealed secret whose sealing has
        aged (the vault's KEK rotated); run it before retiring the old KEK."""
        if not isinstance(self._sealer, ResealAware):
            return 0
        count = 0
        with self._store.writing(ADMIN_LOCK) as conn:
            for name, sealed in conn.execute(select(secrets.c.name, secrets.c.sealed)).all():
                blob = bytes(sealed)
                if not self._sealer.needs_reseal(blob):
                    continue
                ctx = secret_context(self._service, str(name))
                fresh = self._sealer.seal(self._sealer.unseal(blob, context=ctx), context=ctx)
                conn.execute(update(secrets).where(secrets.c.name == name).values(sealed=fresh))
                count += 1
            for kid, sealed in conn.execute(
                select(signing_keys.c.key_id, signing_keys.c.sealed_private)
            ).all():
                blob = bytes(sealed)
                if not self._sealer.needs_reseal(blob):
                    continue
                ctx = _context(self._service, str(kid))
                fresh = self._sealer.seal(self._sealer.unseal(blob, context=ctx), context=ctx)
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.key_id == kid)
                    .values(sealed_private=fresh)
                )
                count += 1
        return count

    def sign_head(self, *, tree_size: int, root_hash: bytes, timestamp_ms: int) -> TreeHead:
        key = self._ensure()
        message = sth_message(
            service=self._service,
            tree_size=tree_size,
            timestamp_ms=timestamp_ms,
            root_hash=root_hash,
            key_id=self._key_id,
        )
        return TreeHead(
            self._service, tree_size, timestamp_ms, root_hash, self._key_id, key.sign(message)
        )

    def current_key(self) -> tuple[str, SigningKey]:
        return self.key_id, self._ensure()

    def sign_head_with(
        self, key_id: str, key: SigningKey, *, tree_size: int, root_hash: bytes, timestamp_ms: int
    ) -> TreeHead:
        """Sign with a key that is no longer active: a rotated-out key's last
        head, covering the entry that announces its successor."""
        message = sth_message(
            service=self._service,
            tree_size=tree_size,
            timestamp_ms=timestamp_ms,
            root_hash=root_hash,
            key_id=key_id,
        )
        return TreeHead(
            self._service, tree_size, timestamp_ms, root_hash, key_id, key.sign(message)
        )

    def sign_manifest(self, payload: bytes) -> tuple[str, bytes]:
        key = self._ensure()
        return self._key_id, key.sign(ARCHIVE_DOMAIN + payload)

    def store_head(self, head: TreeHead) -> None:
        with self._store.writing(ADMIN_LOCK) as conn:
            conn.execute(
                insert(tree_heads).values(
                    tree_size=head.tree_size,
                    root_hash=head.root_hash,
                    timestamp=head.timestamp_ms,
                    key_id=head.key_id,
                    signature=head.signature,
                )
            )


def secret_context(service: str, name: str) -> bytes:
    return f"paywarden/audit/secret/{service}/{name}".encode("ascii")


def load_or_create_secret(
    store: AuditStore, sealer: KeySealer, *, service: str, name: str, now_ms: int
) -> bytes:
    """A 32-byte random secret kept sealed in ``audit_secrets`` (created once).

    Used where a service has no secret of its own to derive from: the vault's
    KEKs may live in Transit, which never hands out key material.
    """
    ctx = secret_context(service, name)
    with store.writing(ADMIN_LOCK) as conn:
        row = conn.execute(select(secrets.c.sealed).where(secrets.c.name == name)).first()
        if row is not None:
            return sealer.unseal(bytes(row[0]), context=ctx)
        value = os.urandom(32)
        conn.execute(
            insert(secrets).values(
                name=name, sealed=sealer.seal(value, context=ctx), created=now_ms
            )
        )
        return value


def require_key(keys: dict[str, PublicKeyInfo], key_id: str) -> bytes:
    info = keys.get(key_id)
    if info is None:
        raise AuditKeyError(f"no public key {key_id} in the store")
    return info.public_key
