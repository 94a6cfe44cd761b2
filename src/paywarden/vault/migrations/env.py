from __future__ import annotations

from paywarden.alembic_support import run_env
from paywarden.vault.migrations import VERSION_TABLE
from paywarden.vault.models import VaultBase

run_env(VaultBase.metadata, version_table=VERSION_TABLE)
