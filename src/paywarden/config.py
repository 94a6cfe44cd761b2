"""One settings object. Read from ``PAYWARDEN_*`` environment variables and an
optional TOML file (``PAYWARDEN_CONFIG``); passed in explicitly, never read at
import time.

Secrets are not settings: they are generated on first run into
``$PAYWARDEN_HOME/secrets.json`` (mode 0600) by :func:`load_or_create_secrets`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from paywarden.core.secrets import Secret


class AcquirerConfig(BaseModel):
    """One acquirer. A plain model: only ``PAYWARDEN_ACQUIRERS`` may fill it."""

    name: str
    url: str
    priority: int = 0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYWARDEN_", env_nested_delimiter="__")

    home: Path = Field(default=Path(".paywarden"), description="Data directory")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$HOME/gateway.db"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for shared rate limits across workers"
    )
    host: str = "127.0.0.1"
    port: int = 8420
    public_url: str | None = Field(default=None, description="Externally visible base URL")
    workers: int = 1

    acquirers: list[AcquirerConfig] = Field(default_factory=list)
    acquirer_base_port: int = 8431
    acquirer_timeout_seconds: float = 5.0
    acquirer_connect_timeout_seconds: float = 1.0
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0
    reconcile_interval_seconds: float = 5.0
    reconcile_grace_seconds: float = 10.0

    max_body_bytes: int = 64 * 1024
    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_lock_seconds: int = 60

    auth_failure_limit: int = 20
    auth_failure_window_seconds: int = 60

    key_roll_default_overlap_seconds: int = 24 * 3600

    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: float = 2.0
    webhook_poll_seconds: float = 0.5
    webhook_allow_private_urls: bool = Field(
        default=True,
        description="Dev default; set false in production to refuse loopback/private targets",
    )

    # ---- card vault (a separate process; see docs/architecture.md)
    vault_url: str | None = Field(
        default=None,
        description="The vault's https URL; unset: raw card data is refused (make run sets it)",
    )
    vault_host: str = "127.0.0.1"
    vault_port: int = 8440
    vault_home: Path | None = Field(default=None, description="Vault data; default $HOME/vault")
    vault_database_url: str | None = Field(
        default=None, description="Vault's own database; default sqlite:///$VAULT_HOME/vault.db"
    )
    audit_database_url: str | None = Field(
        default=None, description="Gateway audit log store; default sqlite:///$HOME/audit.sqlite"
    )
    vault_audit_database_url: str | None = Field(
        default=None,
        description="Vault audit log store; default sqlite:///$VAULT_HOME/audit.sqlite",
    )
    pki_dir: Path | None = Field(default=None, description="Dev CA and certificates; $HOME/pki")
    vault_kms: Literal["local", "transit"] = "local"
    vault_master_key: SecretStr | None = Field(
        default=None,
        description="base64 master secret that unseals the local keyring; "
        "default: generated into $VAULT_HOME/master.key (dev only)",
    )
    vault_transit_url: str | None = None
    vault_transit_token: SecretStr | None = None
    vault_transit_key: str = "paywarden-kek"
    vault_transit_mount: str = "transit"
    vault_transit_ca: str | None = None
    vault_timeout_seconds: float = 5.0
    vault_cvc_ttl_seconds: int = 30 * 60
    vault_kek_cryptoperiod_days: int = 365
    vault_hpke_cryptoperiod_days: int = 30
    vault_hpke_overlap_seconds: int = 24 * 3600
    vault_retention_after_expiry_days: int = 90
    vault_sweep_interval_seconds: float = 300.0
    tls_leaf_days: int = 90

    # ---- fraud engine (scores every confirm before the acquirer is called)
    fraud_enabled: bool = True
    fraud_model_path: Path | None = Field(
        default=None,
        description="Risk model artifact from `paywarden fraud train`; default: the one shipped",
    )
    fraud_geoip_path: Path | None = Field(
        default=None, description="GeoLite2-Country .mmdb; default: maxminddb-geolite2's file"
    )
    fraud_usd_rates_path: Path | None = Field(
        default=None,
        description="CSV of reference rates (currency,usd_per_unit) added to the built-in ones",
    )
    fraud_elevated_threshold: int = Field(default=65, ge=0, le=99)
    fraud_highest_threshold: int = Field(default=75, ge=0, le=99)
    fraud_default_rules: bool = Field(
        default=True, description="Paywarden's built-in rules (card testing, highest risk)"
    )
    fraud_velocity_prefix: str = Field(
        default="pw:vel:", description="Key prefix of the velocity counters on Redis"
    )
    fraud_auto_block: bool = Field(
        default=True, description="Confirmed fraud adds the card, device and IP to block lists"
    )

    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'gateway.db').resolve()}"

    @property
    def resolved_vault_home(self) -> Path:
        return self.vault_home or self.home / "vault"

    @property
    def resolved_vault_database_url(self) -> str:
        return (
            self.vault_database_url
            or f"sqlite:///{(self.resolved_vault_home / 'vault.db').resolve()}"
        )

    @property
    def resolved_pki_dir(self) -> Path:
        return self.pki_dir or self.home / "pki"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def acquirer_list(self) -> list[AcquirerConfig]:
        if self.acquirers:
            return sorted(self.acquirers, key=lambda a: a.priority)
        return [
            AcquirerConfig(
                name="sandbox_a", url=f"http://127.0.0.1:{self.acquirer_base_port}", priority=0
            ),
            AcquirerConfig(
                name="sandbox_b", url=f"http://127.0.0.1:{self.acquirer_base_port + 1}", priority=1
            ),
        ]


class _TomlSource(PydanticBaseSettingsSource):
    """``PAYWARDEN_CONFIG=path.toml``: keys as in :class:`Settings`, lowest priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("PAYWARDEN_CONFIG")
        if not path:
            return {}
        with open(path, "rb") as fh:
            return tomllib.load(fh)


@dataclass(frozen=True)
class ServiceSecrets:
    """Per-installation secrets, generated on first run (never in the repository)."""

    api_key_pepper: Secret  # HMAC key for API-key hashes
    storage_key: Secret  # Fernet key for secrets at rest: webhook secrets, stored responses
    acquirer_token: Secret  # bearer the gateway presents to the sandbox acquirers


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)


def ensure_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def load_or_create_secrets(home: Path) -> ServiceSecrets:
    from cryptography.fernet import Fernet

    ensure_home(home)
    path = home / "secrets.json"
    if not path.exists():
        payload = {
            "api_key_pepper": secrets.token_urlsafe(32),
            "storage_key": Fernet.generate_key().decode(),
            "acquirer_token": secrets.token_urlsafe(32),
        }
        # Another worker may win the race to create it; then we read theirs.
        with contextlib.suppress(FileExistsError):
            _write_private(path, json.dumps(payload))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} must not be readable by group/others (mode {oct(mode)})")
    raw = json.loads(path.read_text())
    return ServiceSecrets(
        api_key_pepper=Secret(raw["api_key_pepper"], "api_key_pepper"),
        storage_key=Secret(raw["storage_key"], "storage_key"),
        acquirer_token=Secret(raw["acquirer_token"], "acquirer_token"),
    )


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with JSON readable only by the owner."""
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    _write_private(tmp, json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
