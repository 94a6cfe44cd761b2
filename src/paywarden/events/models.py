from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import Base, ListableMixin


class Event(ListableMixin, Base):
    """An event, written in the same transaction as the change it describes (outbox)."""

    __tablename__ = "events"
    type: Mapped[str] = mapped_column(String(64), index=True)
    api_version: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]
    request_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    pending_webhooks: Mapped[int] = mapped_column(default=0)
    dispatched: Mapped[bool] = mapped_column(default=False, index=True)
