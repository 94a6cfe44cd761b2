"""Alembic migrations for the gateway database, run programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from paywarden.alembic_support import alembic_config as shared_config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    return shared_config(url, HERE)


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def load_models() -> None:
    """Import every model module so ``Base.metadata`` is complete."""
    import paywarden.customers.models
    import paywarden.events.models
    import paywarden.fraud.models
    import paywarden.idempotency.models
    import paywarden.payments.models
    import paywarden.tenancy.models
    import paywarden.webhooks.models  # noqa: F401
