"""Where each service's audit log lives, and how it is opened.

- Gateway: ``$PAYWARDEN_HOME/audit.sqlite`` unless ``PAYWARDEN_AUDIT_DATABASE_URL``.
  Signing keys are sealed by a :class:`FernetSealer` over the gateway's storage
  key. The pseudonym HMAC key is derived, never stored:
  ``HKDF-SHA256(storage key, info="paywarden/audit/pseudonym/v1/gateway")``;
  a new ``secrets.json`` field would have meant a migration of every install,
  and deriving keeps one secret to back up.
- Vault: ``<vault home>/audit.sqlite`` unless ``PAYWARDEN_VAULT_AUDIT_DATABASE_URL``.
  Signing keys are sealed by the vault's KMS (:class:`KmsSealer`). The
  pseudonym key is 32 random bytes, generated once and stored *sealed by the
  KMS* in ``audit_secrets``: a Transit KEK never leaves OpenBao, so there is
  nothing to derive from. Either way the key never appears in an entry.

Archives go to ``<home>/audit-archive/<service>/`` (the vault's under its own home).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paywarden.audit.archive import archive_dir
from paywarden.audit.crypto import hkdf_sha256
from paywarden.audit.log import AuditLog, utcnow
from paywarden.audit.sealing import FernetSealer, KmsSealer
from paywarden.audit.signing import Signer, load_or_create_secret
from paywarden.audit.store import AuditStore

if TYPE_CHECKING:
    from paywarden.config import ServiceSecrets, Settings
    from paywarden.vault.kms import KeyManager

PSEUDONYM_INFO = b"paywarden/audit/pseudonym/v1/"


def gateway_audit_url(settings: Settings) -> str:
    return settings.audit_database_url or f"sqlite:///{(settings.home / 'audit.sqlite').resolve()}"


def vault_audit_url(settings: Settings) -> str:
    return (
        settings.vault_audit_database_url
        or f"sqlite:///{(settings.resolved_vault_home / 'audit.sqlite').resolve()}"
    )


def gateway_archive_dir(settings: Settings) -> Path:
    return archive_dir(settings.home, "gateway")


def vault_archive_dir(settings: Settings) -> Path:
    return archive_dir(settings.resolved_vault_home, "vault")


def gateway_pseudonym_key(storage_key: Any) -> bytes:
    """The gateway's pseudonym HMAC key, derived from its Fernet storage key."""
    text = storage_key.reveal() if hasattr(storage_key, "reveal") else str(storage_key)
    raw = base64.urlsafe_b64decode(text.encode("ascii"))
    return hkdf_sha256(raw, info=PSEUDONYM_INFO + b"gateway")


def open_gateway_audit(
    settings: Settings,
    secrets: ServiceSecrets,
    *,
    now: Callable[[], datetime] = utcnow,
    lifecycle: bool = True,
    sign_interval: float | None = 60.0,
    **options: Any,
) -> AuditLog:
    """The gateway's audit log, opened (migrated) and started."""
    store = AuditStore(gateway_audit_url(settings))
    sealer = FernetSealer(secrets.storage_key)
    return AuditLog(
        store,
        service="gateway",
        signer=Signer(store, service="gateway", sealer=sealer),
        pseudonym_key=gateway_pseudonym_key(secrets.storage_key),
        now=now,
        lifecycle=lifecycle,
        sign_interval=sign_interval,
        **options,
    )


def open_vault_audit(
    settings: Settings,
    key_manager: KeyManager,
    *,
    now: Callable[[], datetime] = utcnow,
    lifecycle: bool = True,
    sign_interval: float | None = 60.0,
    **options: Any,
) -> AuditLog:
    """The vault's audit log, its keys sealed by the vault's KMS."""
    store = AuditStore(vault_audit_url(settings))
    sealer = KmsSealer(key_manager)
    pseudonym = load_or_create_secret(
        store,
        sealer,
        service="vault",
        name="pseudonym_key",
        now_ms=int(now().timestamp() * 1000),
    )
    return AuditLog(
        store,
        service="vault",
        signer=Signer(store, service="vault", sealer=sealer),
        pseudonym_key=pseudonym,
        now=now,
        lifecycle=lifecycle,
        sign_interval=sign_interval,
        **options,
    )


def open_reader(settings: Settings, service: str) -> AuditLog:
    """A log for reading and recording access (the CLI): no signing key, no
    lifecycle entries, no periodic signer."""
    url = gateway_audit_url(settings) if service == "gateway" else vault_audit_url(settings)
    return AuditLog(
        AuditStore(url), service=service, signer=None, lifecycle=False, sign_interval=None
    )
