from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import Base, ListableMixin


class Customer(ListableMixin, Base):
    __tablename__ = "customers"
    # Column sizes match the API's validation limits (checked on PostgreSQL).
    email: Mapped[str | None] = mapped_column(String(512))
    name: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(String(350))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    address: Mapped[dict[str, Any] | None]
    invoice_prefix: Mapped[str | None]
    deleted: Mapped[bool] = mapped_column(default=False)
