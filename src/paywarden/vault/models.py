"""The vault's own tables. Never in the gateway's database.

Card data is envelope-encrypted: each record has its own AES-256-GCM data key,
wrapped by the current key-encryption key (KEK) of the KMS. ``kek_version`` and
``wrapped_key`` say which KEK version protects a record; a shredded record has
``wrapped_key = NULL`` and its ciphertext can never be opened again.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from paywarden.db import NAMING, PK


class VaultBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {int: BigInteger, str: String(255), bytes: LargeBinary, dict: JSON}


class VaultCard(VaultBase):
    __tablename__ = "vault_cards"
    __table_args__ = (Index("ix_vault_cards_kek_version", "kek_version"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[int]
    last_used: Mapped[int | None]
    # Display data (PCI DSS 3.4.1 allows BIN and last four to be shown).
    brand: Mapped[str] = mapped_column(String(32))
    bin: Mapped[str] = mapped_column(String(8))  # first six digits (kept inside the vault)
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    # Envelope: the data key wrapped by KEK ``kek_version``; NULL once shredded.
    kek_version: Mapped[int | None] = mapped_column(Integer)
    wrapped_key: Mapped[bytes | None]
    ciphertext: Mapped[bytes]
    shredded_at: Mapped[int | None]
    shred_reason: Mapped[str | None] = mapped_column(String(32))


class VaultCvc(VaultBase):
    """A CVC held only until the first authorization (PCI DSS 3.3.1), sealed
    under its card's data key, and deleted once used or expired."""

    __tablename__ = "vault_cvcs"
    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    ciphertext: Mapped[bytes]
    expires_at: Mapped[int] = mapped_column(index=True)


class VaultTenantKey(VaultBase):
    """Per-tenant HMAC key for card fingerprints (PCI DSS 3.5.1.1), KEK-wrapped."""

    __tablename__ = "vault_tenant_keys"
    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[int]
    kek_version: Mapped[int] = mapped_column(Integer, index=True)
    wrapped_key: Mapped[bytes]


class VaultHpkeKey(VaultBase):
    """An HPKE key pair. Offered to clients until ``offer_until``; accepted for
    decryption until ``accept_until`` (the rotation overlap)."""

    __tablename__ = "vault_hpke_keys"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    created: Mapped[int]
    offer_until: Mapped[int | None]
    accept_until: Mapped[int | None]
    public_key: Mapped[bytes]
    kek_version: Mapped[int] = mapped_column(Integer, index=True)
    wrapped_private_key: Mapped[bytes]


class VaultHpkeSeen(VaultBase):
    """Digests of HPKE payloads already opened, kept while they could still be
    accepted: an encrypted card works once."""

    __tablename__ = "vault_hpke_seen"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(index=True)


class VaultAccessLog(VaultBase):
    """Who did what to which card, when, and why. Reveals always carry a reason."""

    __tablename__ = "vault_access_log"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(String(40), index=True)
    account_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[str | None] = mapped_column(String(255))
