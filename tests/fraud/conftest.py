"""Fixtures shared by the fraud engine's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from paywarden.db import Database
from paywarden.migrations import upgrade


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated gateway database (SQLite) of the test's own."""
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    upgrade(url)
    d = Database(url)
    yield d
    d.dispose()
