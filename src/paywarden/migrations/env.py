from __future__ import annotations

from paywarden.alembic_support import run_env
from paywarden.db import Base
from paywarden.migrations import load_models

load_models()
run_env(Base.metadata)
