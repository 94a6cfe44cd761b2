"""Wiring for the vault process: its own database, its KMS, its PKI, and the
mutual-TLS server. Shares nothing with the gateway's process but the settings
file and the dev certificate authority's public bundle.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paywarden.audit import open_vault_audit
from paywarden.config import Settings, ensure_home
from paywarden.core.clock import Clock, SystemClock
from paywarden.core.secrets import Secret
from paywarden.db import Database
from paywarden.vault.bins import BinTable
from paywarden.vault.crypto.pki import Pki
from paywarden.vault.kms import KeyManager, LocalKeyring, TransitKms, load_or_create_master_secret
from paywarden.vault.migrations import upgrade
from paywarden.vault.service import VaultPolicy, VaultService

log = logging.getLogger("paywarden.vault")

DAY = 86400


def vault_database(url: str) -> Database:
    """The vault's own database. On SQLite it runs with a rollback journal (not
    WAL, whose file keeps old page images) and ``secure_delete``, so a shredded
    data key or a used CVC is overwritten in the database file. On PostgreSQL,
    dead tuples and WAL archives may keep old rows until vacuumed and expired:
    KEK rotation and retirement (``vault retire``) make such remnants useless."""
    upgrade(url)
    return Database(
        url, sqlite_journal_mode="DELETE", sqlite_secure_delete=True, hide_parameters=True
    )


def build_kms(settings: Settings) -> KeyManager:
    if settings.vault_kms == "transit":
        if not settings.vault_transit_url or settings.vault_transit_token is None:
            raise SystemExit(
                "PAYWARDEN_VAULT_KMS=transit needs PAYWARDEN_VAULT_TRANSIT_URL and "
                "PAYWARDEN_VAULT_TRANSIT_TOKEN"
            )
        return TransitKms(
            settings.vault_transit_url,
            Secret(settings.vault_transit_token.get_secret_value(), "transit token"),
            key_name=settings.vault_transit_key,
            mount_point=settings.vault_transit_mount,
            verify=settings.vault_transit_ca or True,
        )
    home = ensure_home(settings.resolved_vault_home)
    if settings.vault_master_key is not None:
        master: Secret | bytes = base64.b64decode(settings.vault_master_key.get_secret_value())
    else:
        master = load_or_create_master_secret(home / "master.key")
    return LocalKeyring.open(home / "keyring.json", master)


def policy_from(settings: Settings) -> VaultPolicy:
    return VaultPolicy(
        cvc_ttl_seconds=settings.vault_cvc_ttl_seconds,
        hpke_cryptoperiod_seconds=settings.vault_hpke_cryptoperiod_days * DAY,
        hpke_overlap_seconds=settings.vault_hpke_overlap_seconds,
        kek_cryptoperiod_seconds=settings.vault_kek_cryptoperiod_days * DAY,
        retention_after_expiry_seconds=settings.vault_retention_after_expiry_days * DAY,
        forward_timeout_seconds=settings.acquirer_timeout_seconds,
        forward_connect_timeout_seconds=settings.acquirer_connect_timeout_seconds,
    )


def build_vault(
    settings: Settings, *, clock: Clock | None = None, audit: bool = True
) -> VaultService:
    home = ensure_home(settings.resolved_vault_home)
    os.chmod(home, 0o700)
    kms = build_kms(settings)
    return VaultService(
        db=vault_database(settings.resolved_vault_database_url),
        kms=kms,
        audit=open_vault_audit(settings, kms) if audit else None,
        bins=BinTable.load_default(),
        clock=clock or SystemClock(),
        policy=policy_from(settings),
        destinations={a.name: a.url for a in settings.acquirer_list()},
    )


def ensure_pki(settings: Settings) -> Pki:
    """Dev CA, the vault's server certificate, and the gateway and operator
    client certificates; created on first run, renewed when near expiry."""
    pki = Pki(
        settings.resolved_pki_dir,
        leaf_days=settings.tls_leaf_days,
        on_event=_pki_auditor(settings),
    )
    hosts = sorted({settings.vault_host, "127.0.0.1", "localhost"})
    pki.ensure(server_hosts=hosts, clients=("gateway", "operator"))
    return pki


def _pki_auditor(settings: Settings) -> Callable[[str, dict[str, Any]], None]:
    """Certificates issued and revoked, and new CAs, go to the vault's audit
    log (PCI DSS 10.2.1.5), as the user running the command."""

    def record(event: str, details: dict[str, Any]) -> None:
        import getpass

        from paywarden.audit import Actor, Resource
        from paywarden.audit.service import open_reader

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        ensure_home(settings.resolved_vault_home)
        log = open_reader(settings, "vault")
        try:
            log.record(
                event=event,
                outcome="success",
                actor=Actor.cli(user),
                resource=Resource("certificate", details.get("name") or details.get("serial")),
                details=details,
            )
        finally:
            log.close()

    return record


def revocation_check(pki: Pki) -> Callable[[], frozenset[str]]:
    """Revoked certificate fingerprints, re-read only when the PKI index changes."""
    index = pki.directory / "index.json"
    cache: dict[str, Any] = {"mtime": None, "value": frozenset()}
    lock = threading.Lock()

    def revoked() -> frozenset[str]:
        try:
            mtime = index.stat().st_mtime_ns
        except FileNotFoundError:
            return frozenset()
        with lock:
            if cache["mtime"] != mtime:
                cache["value"] = pki.revoked_fingerprints()
                cache["mtime"] = mtime
            value: frozenset[str] = cache["value"]
            return value

    return revoked


def run_vault(settings: Settings) -> None:
    """Serve the vault over mutual TLS until interrupted."""
    from paywarden.vault.app import create_vault_app
    from paywarden.vault.tlsserver import run_mtls

    pki = ensure_pki(settings)
    service = build_vault(settings)
    service.ensure_hpke_key()
    stop = threading.Event()

    next_retention = [time.time() + 3600.0]  # audit retention: daily, first after an hour

    def housekeeping() -> None:
        while not stop.wait(settings.vault_sweep_interval_seconds):
            try:
                service.sweep()
                service.ensure_hpke_key()
                if service.audit is not None and time.time() >= next_retention[0]:
                    from paywarden.audit.archive import run_retention
                    from paywarden.audit.service import vault_archive_dir

                    run_retention(service.audit, vault_archive_dir(settings))
                    next_retention[0] = time.time() + 86_400
            except Exception:
                log.exception("vault housekeeping failed")

    threading.Thread(target=housekeeping, name="vault-housekeeping", daemon=True).start()
    server = pki.cert_for("vault")
    from paywarden.core.gctune import tune_for_service

    tune_for_service()
    try:
        run_mtls(
            create_vault_app(service, revoked=revocation_check(pki)),
            host=settings.vault_host,
            port=settings.vault_port,
            cert=server.cert_path,
            key=server.key_path,
            ca_bundle=pki.ca_bundle_path(),
            log_level=settings.log_level.lower(),
        )
    finally:
        stop.set()
        service.close()


def pki_paths(settings: Settings) -> dict[str, Path]:
    pki = settings.resolved_pki_dir
    return {
        "ca_bundle": pki / "ca-bundle.pem",
        "gateway_cert": pki / "gateway.pem",
        "gateway_key": pki / "gateway.key",
        "operator_cert": pki / "operator.pem",
        "operator_key": pki / "operator.key",
    }
