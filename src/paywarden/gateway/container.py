"""Wiring: one place builds the real adapters from settings (cosmicpython's bootstrap)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from paywarden.acquirers.http_connector import HttpAcquirerConnector
from paywarden.acquirers.router import AcquirerRouter
from paywarden.config import ServiceSecrets, Settings
from paywarden.core.clock import Clock, SystemClock
from paywarden.db import Database
from paywarden.fraud.signals import DeviceTokens
from paywarden.idempotency.service import IdempotencyStore
from paywarden.payments.flows import Payments
from paywarden.tenancy.ratelimit import FailureLimiter, MemoryFailureLimiter, RedisFailureLimiter
from paywarden.vault.client import VaultClient
from paywarden.webhooks.secretbox import SecretBox


@dataclass
class Gateway:
    settings: Settings
    secrets: ServiceSecrets
    db: Database
    clock: Clock
    failures: FailureLimiter
    idempotency: IdempotencyStore
    router: AcquirerRouter
    payments: Payments
    vault: VaultClient | None = None
    device_tokens: DeviceTokens | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.router.close()
        if self.vault is not None:
            self.vault.close()
        self.db.dispose()
        close = getattr(self.failures, "close", None)
        if close is not None:
            close()


def build_gateway(
    settings: Settings,
    secrets: ServiceSecrets,
    *,
    clock: Clock | None = None,
    router: AcquirerRouter | None = None,
) -> Gateway:
    clock = clock or SystemClock()
    db = Database(settings.resolved_database_url)
    vault = build_vault_client(settings)
    failures: FailureLimiter
    if settings.redis_url:
        failures = RedisFailureLimiter(settings.redis_url, settings.auth_failure_window_seconds)
    else:
        failures = MemoryFailureLimiter(settings.auth_failure_window_seconds)
    if router is None:
        connectors = [
            HttpAcquirerConnector(
                a.name,
                a.url,
                secrets.acquirer_token,
                timeout=settings.acquirer_timeout_seconds,
                connect_timeout=settings.acquirer_connect_timeout_seconds,
                vault=vault,
            )
            for a in settings.acquirer_list()
        ]
        router = AcquirerRouter(
            list(connectors),
            clock=clock,
            threshold=settings.circuit_failure_threshold,
            reset_seconds=settings.circuit_reset_seconds,
        )
    payments = Payments(
        db=db,
        router=router,
        clock=clock,
        base_url=settings.base_url,
        reconcile_grace=settings.reconcile_grace_seconds,
    )
    return Gateway(
        settings=settings,
        secrets=secrets,
        db=db,
        clock=clock,
        failures=failures,
        idempotency=IdempotencyStore(
            db,
            ttl=settings.idempotency_ttl_seconds,
            lock_seconds=settings.idempotency_lock_seconds,
            box=SecretBox(secrets.storage_key),
        ),
        router=router,
        payments=payments,
        vault=vault,
        device_tokens=DeviceTokens(device_token_key(secrets)),
    )


def device_token_key(secrets: ServiceSecrets) -> bytes:
    """The key that signs device tokens, derived from the storage key (so no
    new secret is needed and rotating the storage key rotates it too)."""
    return hmac.new(
        secrets.storage_key.reveal().encode(), b"paywarden/device-token/v1", hashlib.sha256
    ).digest()


def build_vault_client(settings: Settings) -> VaultClient | None:
    """The gateway's mutual-TLS client for the vault, if one is configured."""
    if not settings.vault_url:
        return None
    from paywarden.vault.tlsserver import client_ssl_context

    pki = settings.resolved_pki_dir
    ctx = client_ssl_context(
        cert=pki / "gateway.pem", key=pki / "gateway.key", ca_bundle=pki / "ca-bundle.pem"
    )
    return VaultClient(
        settings.vault_url,
        ctx,
        timeout=settings.vault_timeout_seconds,
        connect_timeout=min(1.0, settings.vault_timeout_seconds),
    )


def with_background_workers(gw: Gateway) -> Gateway:
    """Attach the reconciler and the webhook dispatcher (started by the app's lifespan)."""
    from paywarden.core.periodic import PeriodicTask
    from paywarden.payments.reconcile import Reconciler
    from paywarden.webhooks.delivery import WebhookDispatcher
    from paywarden.webhooks.secretbox import SecretBox

    s = gw.settings
    gw.extras["background_workers"] = [
        Reconciler(
            gw.payments,
            interval=s.reconcile_interval_seconds,
            stale_pending_seconds=2
            * (s.acquirer_timeout_seconds + s.acquirer_connect_timeout_seconds)
            + s.reconcile_grace_seconds
            + 5,
        ),
        WebhookDispatcher(
            gw.db,
            SecretBox(gw.secrets.storage_key),
            clock=gw.clock,
            timeout=s.webhook_timeout_seconds,
            max_attempts=s.webhook_max_attempts,
            backoff_base=s.webhook_backoff_base_seconds,
            poll_seconds=s.webhook_poll_seconds,
            allow_private_urls=s.webhook_allow_private_urls,
        ),
        # Idempotency keys older than the replay window are forgotten.
        PeriodicTask(
            "idempotency-purge", 300.0, lambda: gw.idempotency.purge_expired(gw.clock.now())
        ),
    ]
    return gw
