"""Each database's migrations build exactly the schema its models declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, create_engine, text

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


def _insert_row(conn: Connection, table: Table, **values: object) -> None:
    """A row with ``values`` and a dummy value in every other required column."""
    row = dict(values)
    for col in table.columns:
        if col.name in row or col.nullable or col.primary_key:
            continue
        python = col.type.python_type
        row[col.name] = {int: 0, bool: False, str: "x", dict: {}}.get(python, "{}")
    conn.execute(table.insert().values(**row))


def test_revision_0005_names_the_review_of_intents_held_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    gateway_migrations.upgrade(url, "0004")
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            intents, charges = meta.tables["payment_intents"], meta.tables["charges"]
            _insert_row(conn, intents, id="pi_held", latest_charge_id="ch_1")
            _insert_row(conn, intents, id="pi_plain", latest_charge_id="ch_2")
            _insert_row(conn, charges, id="ch_1", review_id="prv_1")
            _insert_row(conn, charges, id="ch_2", review_id=None)
        gateway_migrations.upgrade(url)
        with engine.connect() as conn:
            result = conn.execute(text("SELECT id, review_id FROM payment_intents"))
            rows = {str(pi_id): review for pi_id, review in result}
    finally:
        engine.dispose()
    assert rows == {"pi_held": "prv_1", "pi_plain": None}
