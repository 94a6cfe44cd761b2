from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import PK, Base


class Account(Base):
    """A merchant (tenant). Holds both a test and a live mode, strictly apart."""

    __tablename__ = "accounts"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]
    email: Mapped[str | None]
    created: Mapped[int]
    disabled: Mapped[bool] = mapped_column(default=False)


class ApiKey(Base):
    """An API key, stored only as a keyed hash (HMAC-SHA256 with the pepper)."""

    __tablename__ = "api_keys"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(unique=True)  # key_..., the public handle
    account_id: Mapped[str] = mapped_column(index=True)
    livemode: Mapped[bool]
    kind: Mapped[str] = mapped_column(String(16))  # secret | publishable | restricted
    name: Mapped[str | None]
    hint: Mapped[str] = mapped_column(String(64))  # prefix + last 4, for display
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[dict[str, Any]]  # {"customers": "write", ...} for restricted keys
    created: Mapped[int]
    expires_at: Mapped[int | None]
    revoked_at: Mapped[int | None]
    rolled_to: Mapped[str | None]
    last_used: Mapped[int | None]


class SecurityEvent(Base):
    """Failed authentications and authorizations, recorded for review (10.2.1.4)."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_source_created", "source", "created"),)
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    created: Mapped[int]
    kind: Mapped[str] = mapped_column(String(48))
    source: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None]
    account_id: Mapped[str | None]
    key_hint: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(255))
