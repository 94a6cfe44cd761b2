"""Webhook delivery: fan events out of the outbox, then POST them with retries.

Two steps, each safe to run in several gateway processes at once:

* :meth:`WebhookDispatcher.fan_out_once` turns undispatched events into one
  ``WebhookDelivery`` per subscribed endpoint, in one write transaction (rows
  taken ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
  serializes writers).
* :meth:`WebhookDispatcher.deliver_due_once` claims due deliveries by setting
  ``locked_until`` in a short transaction, sends them *outside* any transaction
  on a bounded thread pool, then records each attempt in its own transaction.

Delivery is at-least-once: a process that dies mid-send leaves a lock that
expires, and the delivery is retried. Attempts record a status code or an error
class name, never a response body or a secret.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from paywarden.core.clock import Clock
from paywarden.core.errors import InvalidRequestError, ResourceMissingError
from paywarden.core.ids import new_id
from paywarden.db import Database
from paywarden.events.models import Event
from paywarden.events.service import render_event
from paywarden.webhooks.event_types import subscribes_to
from paywarden.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from paywarden.webhooks.secretbox import SecretBox, SecretBoxError
from paywarden.webhooks.service import pinned_target, signing_secrets
from paywarden.webhooks.signing import signature_header

logger = logging.getLogger(__name__)

USER_AGENT = "Paywarden/1.0 (+webhooks)"
MAX_RETRY_DELAY_SECONDS = 3 * 24 * 3600.0
JITTER_FRACTION = 0.10
FAN_OUT_LIMIT = 500

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"


def retry_delay(attempts: int, base: float, jitter: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts.

    ``base * 2**(attempts-1)`` plus ``jitter`` (0..1) times 10 %, capped at 3 days.
    """
    exponent = min(max(attempts, 1) - 1, 64)
    delay = base * float(2**exponent) * (1.0 + JITTER_FRACTION * min(max(jitter, 0.0), 1.0))
    return min(delay, MAX_RETRY_DELAY_SECONDS)


def encode_event(ev: Event) -> bytes:
    """The exact bytes POSTed (and signed): compact UTF-8 JSON of Stripe's event."""
    return json.dumps(render_event(ev), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class _Job:
    delivery_id: str
    endpoint_id: str
    url: str
    body: bytes = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)


class WebhookDispatcher:
    """Fans events out to endpoints and delivers them; see the module docstring."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        *,
        clock: Clock,
        timeout: float,
        max_attempts: int,
        backoff_base: float,
        poll_seconds: float,
        client: httpx.Client | None = None,
        concurrency: int = 4,
        allow_private_urls: bool = True,
    ) -> None:
        if timeout <= 0 or poll_seconds <= 0 or backoff_base < 0:
            raise ValueError("timeout and poll_seconds must be positive, backoff_base >= 0")
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._db = db
        self._box = box
        self._clock = clock
        self._timeout = float(timeout)
        self._max_attempts = max_attempts
        self._backoff_base = float(backoff_base)
        self._poll_seconds = float(poll_seconds)
        self._concurrency = concurrency
        # One endpoint may use at most half the senders, so a slow one never starves the rest.
        self._per_endpoint = max(1, concurrency // 2)
        self._allow_private_urls = allow_private_urls
        # httpx timeouts apply per phase (connect, write, read); the claim outlives them all.
        self._lock_seconds = self._timeout * 4 + 30.0
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=concurrency * 2, max_keepalive_connections=concurrency
            ),
        )
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="paywarden-webhook-send"
        )
        self._rng = random.SystemRandom()
        self._state_lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._inflight_total = 0
        self._inflight: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop_event: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ fan-out

    def fan_out_once(self, limit: int = FAN_OUT_LIMIT) -> int:
        """Create deliveries for up to ``limit`` undispatched events; returns events handled."""
        now = self._clock.now()
        with self._db.write() as s:
            events = s.scalars(
                select(Event)
                .where(Event.dispatched.is_(False))
                .order_by(Event.pk)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not events:
                return 0
            accounts = {ev.account_id for ev in events}
            by_tenant: dict[tuple[str, bool], list[WebhookEndpoint]] = {}
            for ep in s.scalars(
                select(WebhookEndpoint)
                .where(
                    WebhookEndpoint.account_id.in_(accounts),
                    WebhookEndpoint.status == "enabled",
                    WebhookEndpoint.deleted.is_(False),
                )
                .order_by(WebhookEndpoint.pk)
            ):
                by_tenant.setdefault((ep.account_id, ep.livemode), []).append(ep)
            for ev in events:
                targets = [
                    ep
                    for ep in by_tenant.get((ev.account_id, ev.livemode), ())
                    if subscribes_to(ep.enabled_events, ev.type)
                ]
                for ep in targets:
                    s.add(self._new_delivery(ev, ep, now))
                ev.pending_webhooks = len(targets)
                ev.dispatched = True
            return len(events)

    @staticmethod
    def _new_delivery(ev: Event, ep: WebhookEndpoint, now: float) -> WebhookDelivery:
        return WebhookDelivery(
            id=new_id("whd"),
            account_id=ev.account_id,
            event_id=ev.id,
            endpoint_id=ep.id,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            locked_until=None,
            created=int(now),
        )

    # ----------------------------------------------------------------- delivery

    def deliver_due_once(self, *, wait: bool = True) -> int:
        """Claim due deliveries (as many as there are free senders) and send them.

        With ``wait`` (the default) returns once those sends are recorded; the
        background loop passes ``wait=False`` and keeps claiming while slow
        endpoints hold their senders. Returns the number of sends started.
        """
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        with self._claim_lock:
            jobs = self._claim()
        futures: list[Future[None]] = [self._pool.submit(self._run_job, job) for job in jobs]
        if wait and futures:
            wait_futures(futures)
        return len(jobs)

    def _claim(self) -> list[_Job]:
        with self._state_lock:
            free = self._concurrency - self._inflight_total
            busy = dict(self._inflight)
        if free <= 0:
            return []
        now = self._clock.now()
        jobs: list[_Job] = []
        with self._db.write() as s:
            rows = s.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                    or_(
                        WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now
                    ),
                )
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.pk)
                .limit(free * 4)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return []
            endpoints = {
                ep.id: ep
                for ep in s.scalars(
                    select(WebhookEndpoint).where(
                        WebhookEndpoint.id.in_({d.endpoint_id for d in rows})
                    )
                )
            }
            events = {
                ev.id: ev
                for ev in s.scalars(select(Event).where(Event.id.in_({d.event_id for d in rows})))
            }
            for d in rows:
                ep = endpoints.get(d.endpoint_id)
                ev = events.get(d.event_id)
                if (
                    ep is None
                    or ev is None
                    or ep.deleted
                    or ep.status != "enabled"
                    or ep.account_id != d.account_id
                    or ev.account_id != d.account_id
                    or ep.livemode != ev.livemode
                ):
                    # Disabled or deleted since fan-out: Stripe stops sending; so do we.
                    d.status = FAILED
                    d.locked_until = None
                    continue
                if len(jobs) >= free or busy.get(ep.id, 0) >= self._per_endpoint:
                    continue
                try:
                    secrets = tuple(signing_secrets(ep, box=self._box, now=now))
                except SecretBoxError:
                    logger.error("webhook endpoint %s: signing secret cannot be decrypted", ep.id)
                    s.add(self._attempt_row(d.id, now, None, "SecretBoxError", 0))
                    self._apply_outcome(s, d, ok=False, now=now)
                    continue
                d.locked_until = now + self._lock_seconds
                busy[ep.id] = busy.get(ep.id, 0) + 1
                jobs.append(
                    _Job(
                        delivery_id=d.id,
                        endpoint_id=ep.id,
                        url=ep.url,
                        body=encode_event(ev),
                        secrets=secrets,
                    )
                )
        with self._state_lock:
            for job in jobs:
                self._inflight_total += 1
                self._inflight[job.endpoint_id] = self._inflight.get(job.endpoint_id, 0) + 1
        return jobs

    def _run_job(self, job: _Job) -> None:
        try:
            attempted_at = self._clock.now()
            started = time.monotonic()
            status_code, error = self._send(job)
            duration_ms = int((time.monotonic() - started) * 1000)
            self._record(job, attempted_at, status_code, error, duration_ms)
        except Exception:
            # The claim expires and the delivery is retried (at-least-once).
            logger.exception("webhook delivery %s could not be recorded", job.delivery_id)
        finally:
            with self._state_lock:
                self._inflight_total -= 1
                left = self._inflight.get(job.endpoint_id, 1) - 1
                if left > 0:
                    self._inflight[job.endpoint_id] = left
                else:
                    self._inflight.pop(job.endpoint_id, None)
            self._wake.set()

    def _send(self, job: _Job) -> tuple[int | None, str | None]:
        """POST the event; returns (status code, None) or (None, error class name)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": signature_header(job.body, job.secrets, int(self._clock.now())),
        }
        url = job.url
        extensions: dict[str, Any] = {}
        if not self._allow_private_urls:
            try:
                url, headers["Host"], server_name = pinned_target(job.url)
            except InvalidRequestError:
                return None, "BlockedDestination"
            extensions["sni_hostname"] = server_name
        try:
            # Streamed and never read: the response body is neither needed nor stored.
            with self._client.stream(
                "POST",
                url,
                content=job.body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
                extensions=extensions,
            ) as resp:
                return resp.status_code, None
        except Exception as exc:  # noqa: BLE001 - any failure is an attempt outcome
            return None, type(exc).__name__

    def _record(
        self,
        job: _Job,
        attempted_at: float,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        ok = status_code is not None and 200 <= status_code < 300
        with self._db.write() as s:
            s.add(self._attempt_row(job.delivery_id, attempted_at, status_code, error, duration_ms))
            d = s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.id == job.delivery_id)
                .with_for_update()
            ).one_or_none()
            if d is None or d.status != PENDING:
                return
            self._apply_outcome(s, d, ok=ok, now=self._clock.now())
        if not ok:
            logger.info(
                "webhook delivery %s to %s failed (attempt outcome: %s)",
                job.delivery_id,
                job.endpoint_id,
                status_code if status_code is not None else error,
            )

    @staticmethod
    def _attempt_row(
        delivery_id: str,
        attempted_at: float,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> WebhookAttempt:
        return WebhookAttempt(
            delivery_id=delivery_id,
            attempted_at=attempted_at,
            status_code=status_code,
            error=None if error is None else error[:255],
            duration_ms=duration_ms,
        )

    def _apply_outcome(self, s: Session, d: WebhookDelivery, *, ok: bool, now: float) -> None:
        d.attempts += 1
        d.locked_until = None
        if ok:
            d.status = SUCCEEDED
            s.execute(
                update(Event)
                .where(Event.id == d.event_id, Event.pending_webhooks > 0)
                .values(pending_webhooks=Event.pending_webhooks - 1)
            )
        elif d.attempts >= self._max_attempts:
            d.status = FAILED
        else:
            d.next_attempt_at = now + retry_delay(
                d.attempts, self._backoff_base, self._rng.random()
            )

    # ---------------------------------------------------------------- redeliver

    def redeliver(self, event_id: str, endpoint_id: str) -> str:
        """Queue one more delivery of an event to an endpoint of the same account and mode."""
        now = self._clock.now()
        with self._db.write() as s:
            ev = s.scalars(select(Event).where(Event.id == event_id)).one_or_none()
            if ev is None:
                raise ResourceMissingError("event", event_id)
            ep = s.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.id == endpoint_id,
                    WebhookEndpoint.account_id == ev.account_id,
                    WebhookEndpoint.livemode == ev.livemode,
                    WebhookEndpoint.deleted.is_(False),
                )
            ).one_or_none()
            if ep is None:
                raise ResourceMissingError("webhook_endpoint", endpoint_id)
            d = self._new_delivery(ev, ep, now)
            s.add(d)
            ev.pending_webhooks += 1
            return d.id

    # --------------------------------------------------------------------- loop

    def run(self, stop: threading.Event) -> None:
        """Fan out and deliver every ``poll_seconds`` until ``stop`` is set; never raises."""
        while not stop.is_set():
            busy = False
            try:
                busy = self.fan_out_once() >= FAN_OUT_LIMIT
                self.deliver_due_once(wait=False)
            except Exception:
                logger.exception("webhook dispatcher iteration failed")
            if not busy:
                self._wake.wait(self._poll_seconds)
                self._wake.clear()

    def start_background(self) -> threading.Thread:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("dispatcher already running")
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop_event,), name="paywarden-webhooks", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop, wait for sends in flight, and release resources."""
        if self._stop_event is not None:
            self._stop_event.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Wait for sends in flight, then shut the pool and (if ours) the HTTP client."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()

    def inflight(self) -> int:
        with self._state_lock:
            return self._inflight_total

    def __enter__(self) -> WebhookDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
