"""Alembic migrations for the vault's own database, run programmatically at
start-up. A separate history from the gateway's (its own version table), since
the two databases are never the same."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from paywarden.alembic_support import alembic_config as shared_config

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "vault_alembic_version"


def alembic_config(url: str) -> Config:
    return shared_config(url, HERE)


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
