"""Each database's migrations build exactly the schema its models declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from paywarden import migrations as gateway_migrations
from paywarden.db import Base
from paywarden.vault import migrations as vault_migrations
from paywarden.vault.models import VaultBase


@pytest.mark.parametrize(
    ("upgrade", "metadata", "version_table"),
    [
        (gateway_migrations.upgrade, Base.metadata, "alembic_version"),
        (vault_migrations.upgrade, VaultBase.metadata, vault_migrations.VERSION_TABLE),
    ],
    ids=["gateway", "vault"],
)
def test_migrations_match_the_models(
    tmp_path: Path, upgrade: object, metadata: MetaData, version_table: str
) -> None:
    gateway_migrations.load_models()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)  # type: ignore[operator]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == [], diff
