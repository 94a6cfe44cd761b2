"""Wiring: one place builds the real adapters from settings (cosmicpython's bootstrap)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from paywarden.acquirers.http_connector import HttpAcquirerConnector
from paywarden.acquirers.router import AcquirerRouter
from paywarden.audit import AuditLog, open_gateway_audit
from paywarden.config import ServiceSecrets, Settings
from paywarden.core.clock import Clock, SystemClock
from paywarden.db import Database
from paywarden.fraud.engine import FraudEngine
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
    audit: AuditLog | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.payments.fraud is not None:
            self.payments.fraud.close()
        self.router.close()
        if self.vault is not None:
            self.vault.close()
        self.db.dispose()
        if self.audit is not None:
            self.audit.close()
        close = getattr(self.failures, "close", None)
        if close is not None:
            close()


def build_gateway(
    settings: Settings,
    secrets: ServiceSecrets,
    *,
    clock: Clock | None = None,
    router: AcquirerRouter | None = None,
    audit: bool = True,
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
    device_tokens = DeviceTokens(device_token_key(secrets))
    payments = Payments(
        db=db,
        router=router,
        clock=clock,
        base_url=settings.base_url,
        reconcile_grace=settings.reconcile_grace_seconds,
        fraud=build_fraud_engine(settings, secrets, db, device_tokens, clock),
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
        device_tokens=device_tokens,
        audit=open_gateway_audit(settings, secrets) if audit else None,
    )


def build_fraud_engine(
    settings: Settings,
    secrets: ServiceSecrets,
    db: Database,
    device_tokens: DeviceTokens,
    clock: Clock,
) -> FraudEngine | None:
    """The fraud engine: velocity on Redis when workers share one (else a SQLite
    file of its own), the offline GeoIP file, the risk model loaded at start."""
    if not settings.fraud_enabled:
        return None
    from paywarden.fraud.engine import DEFAULT_MODEL_PATH, load_usd_rates
    from paywarden.fraud.features import FeatureState
    from paywarden.fraud.model import RiskModel, RiskThresholds
    from paywarden.fraud.signals import IpGeo
    from paywarden.fraud.velocity import VelocityStore

    # Checked before anything is opened: a bad file stops the start cleanly.
    rates = load_usd_rates(settings.fraud_usd_rates_path) if settings.fraud_usd_rates_path else None
    velocity: VelocityStore
    if settings.redis_url:
        from paywarden.fraud.velocity_redis import RedisVelocityStore

        velocity = RedisVelocityStore(settings.redis_url, prefix=settings.fraud_velocity_prefix)
    else:
        from paywarden.fraud.velocity_sqlite import SqliteVelocityStore

        velocity = SqliteVelocityStore(settings.home / "fraud-velocity.db")
    thresholds = RiskThresholds(
        elevated=settings.fraud_elevated_threshold, highest=settings.fraud_highest_threshold
    )
    model = RiskModel.load(
        settings.fraud_model_path or DEFAULT_MODEL_PATH,
        expected_features=FeatureState().names,
        thresholds=thresholds,
    )
    engine = FraudEngine(
        usd_rates=rates,
        velocity=velocity,
        identifier_key=_derived_key(secrets, b"paywarden/fraud-identifiers/v1"),
        ipgeo=IpGeo.open(settings.fraud_geoip_path),
        device_tokens=device_tokens,
        model=model,
        thresholds=thresholds,
        default_rules=settings.fraud_default_rules,
        auto_block=settings.fraud_auto_block,
    )
    now = clock.now()
    since = now - 30 * 86400
    engine.warm_up(
        recent_payments(db, since=since, rates=engine.usd_rates),
        recent_fraud_reports(db, since=since),
        as_of=float(now),
    )
    return engine


def recent_payments(
    db: Database, *, since: float, rates: Mapping[str, Decimal] | None = None
) -> list[tuple[str, float, str, str, int]]:
    """The last weeks' scored payments, oldest first, to rebuild the model's
    card and merchant habits after a restart (USD-convertible ones only; the
    newest 500,000 at most). Cards and merchants are keyed per mode
    (:func:`~paywarden.fraud.engine.model_key`), as the live path keys them."""
    from sqlalchemy import select

    from paywarden.fraud.engine import USD_PER_UNIT, amount_in_usd_cents, model_key
    from paywarden.payments.models import Charge, PaymentMethod

    out: list[tuple[str, float, str, str, int]] = []
    with db.read() as s:
        rows = s.execute(
            select(
                Charge.payment_intent_id,
                Charge.created,
                PaymentMethod.fingerprint,
                Charge.account_id,
                Charge.amount,
                Charge.currency,
                Charge.livemode,
            )
            .join(PaymentMethod, PaymentMethod.id == Charge.payment_method_id)
            .where(Charge.created >= int(since))
            .order_by(Charge.created.desc(), Charge.pk.desc())
            .limit(500_000)
        ).all()
    for pi_id, created, fingerprint, account, amount, currency, live in reversed(rows):
        cents = amount_in_usd_cents(amount, currency, USD_PER_UNIT if rates is None else rates)
        if cents is not None:
            card, merchant = model_key(fingerprint, live), model_key(account, live)
            out.append((pi_id, float(created), card, merchant, cents))
    return out


def recent_fraud_reports(db: Database, *, since: float) -> list[tuple[str, float]]:
    """Fraud and dispute reports on the payments :func:`recent_payments` replays,
    as ``(payment_intent_id, known_at)``, oldest first."""
    from sqlalchemy import select

    from paywarden.fraud.models import FraudLabel

    with db.read() as s:
        rows = s.execute(
            select(FraudLabel.payment_intent_id, FraudLabel.created)
            .where(
                FraudLabel.paid_at >= int(since),
                FraudLabel.label.in_(("fraudulent", "dispute")),
            )
            .order_by(FraudLabel.created, FraudLabel.pk)
        ).all()
    return [(pi_id, float(created)) for pi_id, created in rows]


def _derived_key(secrets: ServiceSecrets, label: bytes) -> bytes:
    return hmac.new(secrets.storage_key.reveal().encode(), label, hashlib.sha256).digest()


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
        # Audit retention (PCI DSS 10.5.1): 3 months online, 12 months kept.
        *(
            [
                PeriodicTask(
                    "audit-retention",
                    86_400.0,
                    lambda: _audit_retention(gw),
                )
            ]
            if gw.audit is not None
            else []
        ),
        # Idempotency keys older than the replay window are forgotten.
        PeriodicTask(
            "idempotency-purge", 300.0, lambda: gw.idempotency.purge_expired(gw.clock.now())
        ),
    ]
    return gw


def _audit_retention(gw: Gateway) -> None:
    from paywarden.audit.archive import run_retention
    from paywarden.audit.service import gateway_archive_dir

    if gw.audit is None:
        return
    import fcntl

    directory = gateway_archive_dir(gw.settings)
    directory.mkdir(parents=True, exist_ok=True)
    # Several workers share one store: one of them archives, the others skip.
    # (Workers on several hosts need PAYWARDEN_AUDIT_DATABASE_URL and one host
    # running `paywarden audit archive` from cron instead.)
    with open(directory / ".retention.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        run_retention(gw.audit, directory)
