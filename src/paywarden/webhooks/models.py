from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import PK, Base, ListableMixin


class WebhookEndpoint(ListableMixin, Base):
    __tablename__ = "webhook_endpoints"
    url: Mapped[str] = mapped_column(String(2048))
    enabled_events: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(16))  # enabled | disabled
    description: Mapped[str | None] = mapped_column(String(5000))
    api_version: Mapped[str | None] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    # Signing secrets, encrypted at rest (Fernet); a rolled secret keeps signing
    # alongside the new one until previous_secret_expires.
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires: Mapped[int | None]
    deleted: Mapped[bool] = mapped_column(default=False)


class WebhookDelivery(Base):
    """One event to one endpoint; retried with exponential backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(unique=True)
    account_id: Mapped[str] = mapped_column(index=True)
    event_id: Mapped[str] = mapped_column(index=True)
    endpoint_id: Mapped[str] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[float]
    locked_until: Mapped[float | None]
    created: Mapped[int]


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(index=True)
    attempted_at: Mapped[float]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(255))
    duration_ms: Mapped[int]
