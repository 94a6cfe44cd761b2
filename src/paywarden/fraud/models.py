"""Fraud-engine tables in the gateway's database: Radar-style value lists and
versioned rules with their change history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import PK, Base, ListableMixin


class ValueList(ListableMixin, Base):
    """A Radar value list (``rsl_…``), referenced from rules as ``@alias``."""

    __tablename__ = "radar_value_lists"
    __table_args__ = (UniqueConstraint("account_id", "livemode", "alias"),)
    alias: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    item_type: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(100))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")


class ValueListItem(ListableMixin, Base):
    __tablename__ = "radar_value_list_items"
    __table_args__ = (
        UniqueConstraint("value_list_id", "value"),
        Index("ix_radar_value_list_items_list", "value_list_id"),
    )
    value_list_id: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(800))
    created_by: Mapped[str] = mapped_column(String(100))


class FraudRule(ListableMixin, Base):
    """A rule in its current version. ``mode`` is ``active`` or ``shadow``
    (evaluated and reported, never acted on); a disabled rule is kept for the
    record and never evaluated."""

    __tablename__ = "fraud_rules"
    action: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=1)
    updated: Mapped[int]


class FraudRuleChange(Base):
    """Every change to a rule: who, when, why, and the version it produced."""

    __tablename__ = "fraud_rule_changes"
    __table_args__ = (Index("ix_fraud_rule_changes_rule", "rule_id", "version"),)
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(40))
    account_id: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool]
    version: Mapped[int]
    at: Mapped[int]
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(500))
    change: Mapped[str] = mapped_column(String(16))  # created | updated | disabled
    source: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool]


class Review(ListableMixin, Base):
    """A Radar review (``prv_…``): a payment held for an analyst's decision."""

    __tablename__ = "radar_reviews"
    __table_args__ = (Index("ix_radar_reviews_open", "account_id", "livemode", "open"),)
    charge_id: Mapped[str] = mapped_column(String(40), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(40), index=True)
    open: Mapped[bool] = mapped_column(default=True)
    opened_reason: Mapped[str] = mapped_column(String(16))  # rule | manual
    reason: Mapped[str] = mapped_column(String(24))  # opened_reason, then closed_reason
    closed_reason: Mapped[str | None] = mapped_column(String(24))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    ip_country: Mapped[str | None] = mapped_column(String(2))
    session: Mapped[dict[str, Any] | None]
    closed_at: Mapped[int | None]
    closed_by: Mapped[str | None] = mapped_column(String(100))


class FraudLabel(ListableMixin, Base):
    """A merchant's report on a payment: ``fraudulent``, ``safe`` or ``dispute``.

    ``known_at`` is when the label became known (``created``): the label delay
    between the payment and its report is kept explicit for training.
    """

    __tablename__ = "fraud_labels"
    # Every gateway worker reads the reports made since its last look (by time).
    __table_args__ = (Index("ix_fraud_labels_created", "created"),)
    charge_id: Mapped[str] = mapped_column(String(40), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(16))  # fraudulent | safe | dispute
    source: Mapped[str] = mapped_column(String(16))  # refund | report | dispute
    card_fingerprint: Mapped[str | None] = mapped_column(String(64))
    paid_at: Mapped[int]
    actor: Mapped[str] = mapped_column(String(100))
