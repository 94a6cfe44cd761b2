from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import PK, Base


class IdempotencyRecord(Base):
    """Stripe's contract: first response stored 24 h, scoped to account and mode."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "livemode", "key"),)
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    account_id: Mapped[str]
    livemode: Mapped[bool]
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # in_flight | complete
    locked_until: Mapped[float]
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any] | None]
    created: Mapped[int] = mapped_column(index=True)
    # Id of the object the first execution created (see service.Reservation).
    recovery_point: Mapped[str | None] = mapped_column(String(64))
