"""What the gateway's and the vault's Alembic histories share: a programmatic
config, and the ``env.py`` body (SQLite gets batch mode for ALTERs)."""

from __future__ import annotations

from pathlib import Path

from alembic import context
from alembic.config import Config
from sqlalchemy import MetaData, create_engine


def alembic_config(url: str, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_env(target_metadata: MetaData, *, version_table: str = "alembic_version") -> None:
    """The body of an ``env.py``: offline (SQL script) or online migrations."""
    config = context.config
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=True,
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
