"""Webhook fan-out and delivery against real SQLite files and real loopback receivers."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe
from cryptography.fernet import Fernet
from sqlalchemy import select

import paywarden.customers.models
import paywarden.idempotency.models
import paywarden.payments.models
import paywarden.tenancy.models  # noqa: F401 - register every table
from paywarden.core.clock import FrozenClock
from paywarden.core.secrets import Secret
from paywarden.db import Base, Database
from paywarden.events.models import Event
from paywarden.events.service import new_event, render_event
from paywarden.webhooks.delivery import (
    MAX_RETRY_DELAY_SECONDS,
    USER_AGENT,
    WebhookDispatcher,
    retry_delay,
)
from paywarden.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from paywarden.webhooks.secretbox import SecretBox
from paywarden.webhooks.service import (
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    roll_secret,
    update_endpoint,
)

ACCT = "acct_A"
OTHER = "acct_B"


# ------------------------------------------------------------------ receiver


class Receiver:
    """A loopback HTTP server recording each POST; answers ``statuses`` in order."""

    def __init__(self, statuses: list[int] | None = None, *, hang: bool = False) -> None:
        self.statuses = statuses or [200]
        self.hang = hang
        self.release = threading.Event()
        self.got = threading.Event()
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.redirect_to: str | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._on_request(body, {k.lower(): v for k, v in self.headers.items()})
                if receiver.hang:
                    receiver.release.wait(15)
                try:
                    self.send_response(status)
                    if receiver.redirect_to is not None:
                        self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "24")
                    self.end_headers()
                    self.wfile.write(b"response body, not kept!")
                except OSError:
                    pass  # the dispatcher gave up on us

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _on_request(self, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            n = len(self.requests)
            self.requests.append((body, headers))
        self.got.set()
        return self.statuses[min(n, len(self.statuses) - 1)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None, *, hang: bool = False) -> Receiver:
        r = Receiver(statuses, hang=hang)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -------------------------------------------------------------- db, dispatcher


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    Base.metadata.create_all(database.write_engine)
    yield database
    database.dispose()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Secret(Fernet.generate_key().decode(), "webhook_secret_key"))


@pytest.fixture
def clock() -> FrozenClock:
    # Real "now", so the SDK's 300 s tolerance accepts our timestamps.
    return FrozenClock(float(int(time.time())))


@pytest.fixture
def dispatchers(
    db: Database, box: SecretBox, clock: FrozenClock
) -> Iterator[Callable[..., WebhookDispatcher]]:
    made: list[WebhookDispatcher] = []

    def make(**kw: Any) -> WebhookDispatcher:
        opts: dict[str, Any] = {
            "clock": clock,
            # Only bounds deliveries that succeed (loopback receivers answer at
            # once, unless the machine is loaded); the hanging test sets its own.
            "timeout": 30.0,
            "max_attempts": 3,
            "backoff_base": 10.0,
            "poll_seconds": 0.01,
        }
        opts.update(kw)
        d = WebhookDispatcher(db, box, **opts)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def dispatcher(dispatchers: Callable[..., WebhookDispatcher]) -> WebhookDispatcher:
    return dispatchers()


def add_endpoint(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    url: str,
    *,
    account_id: str = ACCT,
    livemode: bool = False,
    events: list[str] | None = None,
) -> tuple[str, str]:
    with db.write() as s:
        ep, secret = create_endpoint(
            s,
            account_id=account_id,
            livemode=livemode,
            url=url,
            enabled_events=events or ["*"],
            description=None,
            metadata=None,
            api_version=None,
            box=box,
            now=int(clock.now()),
            allow_private_urls=True,
        )
        return ep.id, secret


def add_event(
    db: Database,
    clock: FrozenClock,
    *,
    account_id: str = ACCT,
    livemode: bool = False,
    event_type: str = "customer.created",
    obj: dict[str, Any] | None = None,
) -> str:
    with db.write() as s:
        ev = new_event(
            account_id=account_id,
            livemode=livemode,
            type=event_type,
            obj=obj or {"id": "cus_1", "object": "customer"},
            now=int(clock.now()),
        )
        s.add(ev)
        return ev.id


def deliveries(db: Database, **where: Any) -> list[WebhookDelivery]:
    with db.read() as s:
        q = select(WebhookDelivery).order_by(WebhookDelivery.pk)
        for k, v in where.items():
            q = q.where(getattr(WebhookDelivery, k) == v)
        return list(s.scalars(q))


def attempts(db: Database, delivery_id: str) -> list[WebhookAttempt]:
    with db.read() as s:
        return list(
            s.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.pk)
            )
        )


def event_row(db: Database, event_id: str) -> Event:
    with db.read() as s:
        return s.scalars(select(Event).where(Event.id == event_id)).one()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- tests


def test_retry_delay_doubles_with_bounded_jitter_and_cap() -> None:
    assert retry_delay(1, 2.0, 0.0) == 2.0
    assert retry_delay(2, 2.0, 0.0) == 4.0
    assert retry_delay(3, 2.0, 1.0) == pytest.approx(8.0 * 1.1)
    assert retry_delay(4, 2.0, 0.5) == pytest.approx(16.0 * 1.05)
    assert retry_delay(40, 2.0, 0.9) == MAX_RETRY_DELAY_SECONDS
    assert retry_delay(10_000, 2.0, 0.9) == MAX_RETRY_DELAY_SECONDS


def test_fan_out_only_to_matching_endpoints_of_same_account_and_mode(
    db: Database, box: SecretBox, clock: FrozenClock, dispatcher: WebhookDispatcher
) -> None:
    url = "http://127.0.0.1:9/unused"
    star, _ = add_endpoint(db, box, clock, url)
    typed, _ = add_endpoint(db, box, clock, url, events=["customer.created", "charge.failed"])
    add_endpoint(db, box, clock, url, events=["charge.succeeded"])
    add_endpoint(db, box, clock, url, livemode=True)
    add_endpoint(db, box, clock, url, account_id=OTHER)
    disabled, _ = add_endpoint(db, box, clock, url)
    deleted, _ = add_endpoint(db, box, clock, url)
    with db.write() as s:
        update_endpoint(
            s,
            endpoint=get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=disabled),
            disabled=True,
            allow_private_urls=True,
        )
        delete_endpoint(
            s, endpoint=get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=deleted)
        )

    ev1 = add_event(db, clock)
    ev2 = add_event(db, clock, event_type="charge.refunded")
    ev_live_other = add_event(db, clock, account_id=OTHER, livemode=True)

    assert dispatcher.fan_out_once() == 3
    assert dispatcher.fan_out_once() == 0

    got = {(d.event_id, d.endpoint_id) for d in deliveries(db)}
    assert got == {(ev1, star), (ev1, typed), (ev2, star)}
    assert all(d.status == "pending" and d.attempts == 0 for d in deliveries(db))
    assert all(d.account_id == ACCT for d in deliveries(db))
    assert event_row(db, ev1).pending_webhooks == 2
    assert event_row(db, ev2).pending_webhooks == 1
    other = event_row(db, ev_live_other)
    assert other.dispatched
    assert other.pending_webhooks == 0


def test_fan_out_respects_limit_oldest_first(
    db: Database, box: SecretBox, clock: FrozenClock, dispatcher: WebhookDispatcher
) -> None:
    ep, _ = add_endpoint(db, box, clock, "http://127.0.0.1:9/unused")
    ids = [add_event(db, clock) for _ in range(5)]
    assert dispatcher.fan_out_once(limit=2) == 2
    assert [d.event_id for d in deliveries(db)] == ids[:2]
    assert dispatcher.fan_out_once(limit=10) == 3
    assert [d.event_id for d in deliveries(db, endpoint_id=ep)] == ids


def test_delivery_is_signed_and_verified_by_sdk(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    rx = receivers([200])
    ep, secret = add_endpoint(db, box, clock, rx.url)
    ev = add_event(db, clock, obj={"id": "cus_1", "object": "customer", "name": "Zoë Ünïcode"})
    dispatcher.fan_out_once()
    assert dispatcher.deliver_due_once() == 1

    assert len(rx.requests) == 1
    body, headers = rx.requests[0]
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert "Zoë Ünïcode".encode() in body  # raw UTF-8, not \u escapes
    assert b", " not in body
    assert b": " not in body

    event = stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
    assert event.id == ev
    assert event.type == "customer.created"
    assert json.loads(body) == {**render_event(event_row(db, ev)), "pending_webhooks": 1}
    assert json.loads(body)["data"]["object"]["name"] == "Zoë Ünïcode"

    (d,) = deliveries(db)
    assert d.status == "succeeded"
    assert d.attempts == 1
    assert d.locked_until is None
    assert event_row(db, ev).pending_webhooks == 0
    (a,) = attempts(db, d.id)
    assert a.status_code == 200
    assert a.error is None
    assert a.attempted_at == clock.now()
    assert ep != secret
    assert dispatcher.deliver_due_once() == 0
    assert len(rx.requests) == 1


def test_server_error_is_retried_with_backoff(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    rx = receivers([500, 200])
    _, secret = add_endpoint(db, box, clock, rx.url)
    ev = add_event(db, clock)
    dispatcher.fan_out_once()
    t0 = clock.now()

    assert dispatcher.deliver_due_once() == 1
    (d,) = deliveries(db)
    assert d.status == "pending"
    assert d.attempts == 1
    assert d.locked_until is None
    assert t0 + 10.0 <= d.next_attempt_at <= t0 + 11.0  # base 10 s + up to 10 %

    assert dispatcher.deliver_due_once() == 0  # not due yet
    clock.advance(5)
    assert dispatcher.deliver_due_once() == 0
    clock.advance(d.next_attempt_at - clock.now())
    assert dispatcher.deliver_due_once() == 1

    (d,) = deliveries(db)
    assert d.status == "succeeded"
    assert d.attempts == 2
    assert [(a.status_code, a.error) for a in attempts(db, d.id)] == [(500, None), (200, None)]
    assert len(rx.requests) == 2
    for body, headers in rx.requests:
        assert stripe.Webhook.construct_event(body, headers["stripe-signature"], secret).id == ev
    assert event_row(db, ev).pending_webhooks == 0


def test_max_attempts_marks_failed_with_growing_backoff(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatchers: Callable[..., WebhookDispatcher],
    receivers: Callable[..., Receiver],
) -> None:
    dispatcher = dispatchers(max_attempts=4, backoff_base=3.0)
    rx = receivers([503])
    add_endpoint(db, box, clock, rx.url)
    ev = add_event(db, clock)
    dispatcher.fan_out_once()

    delays = []
    for _ in range(3):
        assert dispatcher.deliver_due_once() == 1
        (d,) = deliveries(db)
        assert d.status == "pending"
        delays.append(d.next_attempt_at - clock.now())
        clock.advance(d.next_attempt_at - clock.now())
    for n, delay in enumerate(delays, start=1):
        assert 3.0 * 2 ** (n - 1) <= delay <= 3.3 * 2 ** (n - 1)

    assert dispatcher.deliver_due_once() == 1
    (d,) = deliveries(db)
    assert d.status == "failed"
    assert d.attempts == 4
    assert [a.status_code for a in attempts(db, d.id)] == [503] * 4
    clock.advance(10 * 24 * 3600)
    assert dispatcher.deliver_due_once() == 0
    assert len(rx.requests) == 4
    assert event_row(db, ev).pending_webhooks == 1  # never delivered


def test_connection_error_is_recorded_by_class_name(
    db: Database, box: SecretBox, clock: FrozenClock, dispatcher: WebhookDispatcher
) -> None:
    add_endpoint(db, box, clock, f"http://127.0.0.1:{free_port()}/hook")
    add_event(db, clock)
    dispatcher.fan_out_once()
    assert dispatcher.deliver_due_once() == 1
    (d,) = deliveries(db)
    (a,) = attempts(db, d.id)
    assert a.status_code is None
    assert a.error == "ConnectError"
    assert d.status == "pending"


def test_redirects_are_not_followed(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    target = receivers([200])
    rx = receivers([307])
    rx.redirect_to = target.url
    add_endpoint(db, box, clock, rx.url)
    add_event(db, clock)
    dispatcher.fan_out_once()
    assert dispatcher.deliver_due_once() == 1
    (d,) = deliveries(db)
    assert [a.status_code for a in attempts(db, d.id)] == [307]
    assert d.status == "pending"
    assert target.requests == []


def test_response_body_and_secret_are_never_stored(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    rx = receivers([400])
    _, secret = add_endpoint(db, box, clock, rx.url)
    add_event(db, clock)
    dispatcher.fan_out_once()
    dispatcher.deliver_due_once()
    files = list(tmp_path.glob("gateway.db*"))  # the database, its WAL and shm
    assert files
    raw = b"".join(p.read_bytes() for p in files)
    assert b"whd_" in raw  # sanity: the file holds the delivery rows
    assert b"response body, not kept" not in raw
    assert secret.encode() not in raw


def test_hanging_receiver_does_not_block_other_endpoint(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatchers: Callable[..., WebhookDispatcher],
    receivers: Callable[..., Receiver],
) -> None:
    # The slow request's timeout must outlast the fast delivery even on a
    # loaded machine (1.5 s once did not, under three concurrent test runs).
    dispatcher = dispatchers(concurrency=2, timeout=8.0)
    slow = receivers([200], hang=True)
    fast = receivers([200])
    slow_ep, _ = add_endpoint(db, box, clock, slow.url)  # created first: claimed first
    fast_ep, _ = add_endpoint(db, box, clock, fast.url)
    add_event(db, clock)
    dispatcher.fan_out_once()

    assert dispatcher.deliver_due_once(wait=False) == 2
    (fast_d,) = deliveries(db, endpoint_id=fast_ep)
    # The two run side by side: the slow request reaches its receiver, which
    # holds it open; the fast delivery finishes meanwhile. (Either may reach
    # its receiver first, so the test waits for both rather than assuming.)
    wait_until(slow.got.is_set)
    wait_until(lambda: deliveries(db, endpoint_id=fast_ep)[0].status == "succeeded")
    (slow_d,) = deliveries(db, endpoint_id=slow_ep)
    assert slow_d.attempts == 0
    assert attempts(db, slow_d.id) == []
    assert [a.status_code for a in attempts(db, fast_d.id)] == [200]

    wait_until(lambda: dispatcher.inflight() == 0, timeout=30.0)
    (slow_d,) = deliveries(db, endpoint_id=slow_ep)
    assert slow_d.status == "pending"
    assert slow_d.attempts == 1
    assert [(a.status_code, a.error) for a in attempts(db, slow_d.id)] == [(None, "ReadTimeout")]
    assert slow_d.next_attempt_at > clock.now()


def test_disabled_and_deleted_endpoints_get_nothing(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    rx_disabled_early, rx_disabled_late, rx_deleted_late, rx_ok = (receivers() for _ in range(4))
    early, _ = add_endpoint(db, box, clock, rx_disabled_early.url)
    late_disabled, _ = add_endpoint(db, box, clock, rx_disabled_late.url)
    late_deleted, _ = add_endpoint(db, box, clock, rx_deleted_late.url)
    ok, _ = add_endpoint(db, box, clock, rx_ok.url)
    with db.write() as s:
        ep = get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=early)
        update_endpoint(s, endpoint=ep, disabled=True, allow_private_urls=True)
    add_event(db, clock)
    dispatcher.fan_out_once()
    assert {d.endpoint_id for d in deliveries(db)} == {late_disabled, late_deleted, ok}

    # Disabled / deleted after fan-out, before delivery.
    with db.write() as s:
        ep = get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=late_disabled)
        update_endpoint(s, endpoint=ep, disabled=True, allow_private_urls=True)
        ep = get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=late_deleted)
        delete_endpoint(s, endpoint=ep)
    assert dispatcher.deliver_due_once() == 1

    assert len(rx_ok.requests) == 1
    for rx in (rx_disabled_early, rx_disabled_late, rx_deleted_late):
        assert rx.requests == []
    status = {d.endpoint_id: d.status for d in deliveries(db)}
    assert status == {late_disabled: "failed", late_deleted: "failed", ok: "succeeded"}
    for d in deliveries(db, status="failed"):
        assert attempts(db, d.id) == []


def test_rolled_secret_signs_with_both_until_expiry(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    rx = receivers([200])
    ep_id, old = add_endpoint(db, box, clock, rx.url)
    with db.write() as s:
        ep = get_endpoint(s, account_id=ACCT, livemode=False, endpoint_id=ep_id)
        new = roll_secret(s, endpoint=ep, box=box, now=int(clock.now()), expires_in_seconds=600)
    assert new != old

    add_event(db, clock)
    dispatcher.fan_out_once()
    dispatcher.deliver_due_once()
    body, headers = rx.requests[-1]
    sig = headers["stripe-signature"]
    assert sig.count("v1=") == 2
    for secret in (new, old):
        assert stripe.Webhook.construct_event(body, sig, secret).type == "customer.created"

    clock.advance(601)  # the previous secret has expired
    add_event(db, clock)
    dispatcher.fan_out_once()
    dispatcher.deliver_due_once()
    body, headers = rx.requests[-1]
    sig = headers["stripe-signature"]
    assert sig.count("v1=") == 1
    assert stripe.Webhook.construct_event(body, sig, new).type == "customer.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, sig, old)


def test_two_dispatchers_share_work_without_duplicates(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatchers: Callable[..., WebhookDispatcher],
    receivers: Callable[..., Receiver],
) -> None:
    rx = receivers([200])
    add_endpoint(db, box, clock, rx.url)
    expected = {add_event(db, clock) for _ in range(16)}
    pair = [dispatchers(), dispatchers()]
    errors: list[BaseException] = []

    def work(d: WebhookDispatcher) -> None:
        try:
            for _ in range(200):
                d.fan_out_once(limit=3)
                d.deliver_due_once()
                if len(deliveries(db, status="succeeded")) == len(expected):
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(deliveries(db)) == len(expected)
    received = [json.loads(body)["id"] for body, _ in rx.requests]
    assert sorted(received) == sorted(expected)


def test_redeliver_sends_again(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
) -> None:
    rx = receivers([200])
    ep, _ = add_endpoint(db, box, clock, rx.url)
    other_mode, _ = add_endpoint(db, box, clock, rx.url, livemode=True)
    ev = add_event(db, clock)
    dispatcher.fan_out_once()
    dispatcher.deliver_due_once()
    dispatcher.redeliver(ev, ep)
    assert event_row(db, ev).pending_webhooks == 1
    assert dispatcher.deliver_due_once() == 1
    assert [json.loads(b)["id"] for b, _ in rx.requests] == [ev, ev]
    assert event_row(db, ev).pending_webhooks == 0
    with pytest.raises(Exception, match="No such webhook_endpoint"):
        dispatcher.redeliver(ev, other_mode)


def test_background_loop_delivers_and_survives_errors(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatcher: WebhookDispatcher,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rx = receivers([200])
    _, secret = add_endpoint(db, box, clock, rx.url)
    real = dispatcher.fan_out_once
    calls = {"n": 0}

    def flaky(limit: int = 500) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return real(limit)

    monkeypatch.setattr(dispatcher, "fan_out_once", flaky)
    caplog.set_level(logging.ERROR, logger="paywarden.webhooks.delivery")
    thread = dispatcher.start_background()
    try:
        ev = add_event(db, clock)
        assert rx.got.wait(30)
        wait_until(lambda: deliveries(db, status="succeeded") != [], timeout=30.0)
    finally:
        dispatcher.stop()
    assert not thread.is_alive()
    assert calls["n"] >= 2
    assert "iteration failed" in caplog.text
    body, headers = rx.requests[0]
    assert stripe.Webhook.construct_event(body, headers["stripe-signature"], secret).id == ev


def test_private_destinations_refused_at_send_time_when_configured(
    db: Database,
    box: SecretBox,
    clock: FrozenClock,
    dispatchers: Callable[..., WebhookDispatcher],
    receivers: Callable[..., Receiver],
) -> None:
    dispatcher = dispatchers(allow_private_urls=False)
    rx = receivers([200])
    add_endpoint(db, box, clock, rx.url)  # accepted earlier under a dev setting
    add_event(db, clock)
    dispatcher.fan_out_once()
    assert dispatcher.deliver_due_once() == 1
    (d,) = deliveries(db)
    assert [a.error for a in attempts(db, d.id)] == ["BlockedDestination"]
    assert rx.requests == []


def test_endpoint_row_keeps_only_ciphertext(
    db: Database, box: SecretBox, clock: FrozenClock
) -> None:
    ep_id, secret = add_endpoint(db, box, clock, "http://127.0.0.1:9/x")
    with db.read() as s:
        ep = s.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id == ep_id)).one()
    assert secret not in ep.secret_ciphertext
    assert box.decrypt(ep.secret_ciphertext) == secret
