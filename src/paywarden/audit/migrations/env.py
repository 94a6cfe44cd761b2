from __future__ import annotations

from paywarden.alembic_support import run_env
from paywarden.audit.migrations import VERSION_TABLE
from paywarden.audit.store import metadata

run_env(metadata, version_table=VERSION_TABLE)
