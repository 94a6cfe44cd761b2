from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import Base, ListableMixin


class Customer(ListableMixin, Base):
    __tablename__ = "customers"
    email: Mapped[str | None]
    name: Mapped[str | None]
    phone: Mapped[str | None]
    description: Mapped[str | None] = mapped_column()
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    address: Mapped[dict[str, Any] | None]
    invoice_prefix: Mapped[str | None]
    deleted: Mapped[bool] = mapped_column(default=False)
