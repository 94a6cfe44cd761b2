"""Alembic migrations for the audit stores (gateway's and vault's), run
programmatically on open. Their own history and version table, so an audit
store can live inside another service's database or in its own."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from paywarden.alembic_support import alembic_config as shared_config

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "audit_alembic_version"


def alembic_config(url: str) -> Config:
    return shared_config(url, HERE)


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
