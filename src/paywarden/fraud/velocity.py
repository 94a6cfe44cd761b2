"""Velocity counters named like Stripe Radar's, over sliding windows.

Every payment attempt updates counters for the entities it carries: the card
(``card_number``, a vault fingerprint), ``customer``, ``email`` (normalized and
hashed, see :func:`normalize_email` and :func:`hash_identifier`), ``ip_address``
and ``device``. :func:`counter_names` lists them all (the rules language takes
them as known attributes):

``{outcome}_charges_per_{entity}_{window}``
    Attempts (``total``) and attempts that ended ``authorized``, ``declined``
    or ``blocked``, per entity, e.g. ``declined_charges_per_email_daily``.
``card_count_for_{entity}_{window}``
    Distinct cards seen with a ``customer``, ``email``, ``ip_address`` or
    ``device``, e.g. ``card_count_for_ip_address_daily``.
``total_amount_in_usd_cents_per_{entity}_{window}``
``authorized_amount_in_usd_cents_per_{entity}_{window}``
    Sums of the attempts' amounts (all attempts / authorized ones) in US cents.
    An event's amount counts from ``amount_usd_minor``, or from ``amount_minor``
    when the currency is USD; an unconverted foreign amount adds nothing (the
    caller converts; this module never guesses a rate).

Windows are ``hourly``, ``daily`` and ``weekly`` and they **slide**: they end at
the time asked about, not at a calendar boundary.

Accuracy. Charge counts and amount sums live in time buckets of 1 minute
(hourly), 15 minutes (daily) and 2 hours (weekly). A window of length W with
buckets of width w counts every event younger than W, never one aged W + w or
more, and may still count one aged between W and W + w. So the hourly window is
61 minutes at worst, the daily 24 h 15 min, the weekly 7 days 2 h: counts err
only upwards, and only by events just past the window's edge. Distinct-card
counts are exact: each entity keeps its cards' last-seen times.

Attempts and outcomes. ``record(event)`` counts an attempt (``total`` and the
amount) and, when ``event.outcome`` is known, its outcome, all in one atomic
step. A decline is usually known only after the acquirer answers, so an attempt
may be recorded with ``attempt_id=...`` and no outcome, and the outcome added
later with :meth:`VelocityStore.record_outcome`; it lands in the attempt's own
time buckets. Recording the same ``attempt_id`` twice counts once (a retried
confirm does not inflate counts).

Time is passed in (``event.at``, ``snapshot(at=...)``) and is expected to move
forward. Events a little out of order are counted correctly; an event older than
a window relative to the newest one already seen for that entity is not counted
in that window, and a snapshot taken earlier than the newest recorded event may
miss the oldest buckets.

Backends: :class:`MemoryVelocityStore` (in process, thread-safe),
:class:`~paywarden.fraud.velocity_sqlite.SqliteVelocityStore` (the same, written
through to SQLite so it survives restarts; the default single node backend) and
:class:`~paywarden.fraud.velocity_redis.RedisVelocityStore` (several workers
sharing one set of counters).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from paywarden.core.secrets import Secret

Outcome = Literal["authorized", "declined", "blocked"]

OUTCOMES: tuple[Outcome, ...] = ("authorized", "declined", "blocked")
"""Outcome index in the metric rows is 1 + position here."""

ENTITIES: tuple[str, ...] = ("card_number", "customer", "email", "ip_address", "device")
"""Entity slots, in the order of :meth:`PaymentEvent.entities`."""

CARD_COUNT_SLOTS: tuple[int, ...] = (1, 2, 3, 4)
"""Slots whose distinct cards are counted (everything but the card itself)."""


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    seconds: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        """Buckets spanning the window; a query reads ``buckets + 1`` of them."""
        return self.seconds // self.bucket_seconds

    def bucket(self, at: float) -> int:
        return math.floor(at / self.bucket_seconds)


WINDOWS: tuple[Window, ...] = (
    Window("hourly", 3600, 60),
    Window("daily", 86_400, 900),
    Window("weekly", 7 * 86_400, 7200),
)
RETENTION_SECONDS = WINDOWS[-1].seconds + WINDOWS[-1].bucket_seconds
"""Nothing older than this can count any more: storage may forget it."""

# Metric columns of a bucket row.
TOTAL, AUTHORIZED, DECLINED, BLOCKED, AMOUNT, AUTHORIZED_AMOUNT = range(6)
METRICS = 6
_METRIC_PREFIX = (
    "total_charges_per",
    "authorized_charges_per",
    "declined_charges_per",
    "blocked_charges_per",
    "total_amount_in_usd_cents_per",
    "authorized_amount_in_usd_cents_per",
)
MAX_IDENTIFIER_LENGTH = 384
"""Longest entity identifier a store keeps, its scope included."""
MAX_SCOPE_LENGTH = 128


class VelocityError(Exception):
    """A velocity store was used inconsistently (e.g. two outcomes for one attempt)."""


def _charge_names(slot: int) -> tuple[tuple[str, ...], ...]:
    """Names per window, per metric, for one entity slot."""
    entity = ENTITIES[slot]
    return tuple(tuple(f"{p}_{entity}_{w.name}" for p in _METRIC_PREFIX) for w in WINDOWS)


CHARGE_NAMES: tuple[tuple[tuple[str, ...], ...], ...] = tuple(
    _charge_names(s) for s in range(len(ENTITIES))
)
"""``CHARGE_NAMES[slot][window][metric]``."""
CARD_COUNT_NAMES: dict[int, tuple[str, ...]] = {
    s: tuple(f"card_count_for_{ENTITIES[s]}_{w.name}" for w in WINDOWS) for s in CARD_COUNT_SLOTS
}
"""``CARD_COUNT_NAMES[slot][window]``."""


def entity_tuple(
    card: str | None,
    customer: str | None,
    email: str | None,
    ip_address: str | None,
    device: str | None,
) -> tuple[str | None, ...]:
    """Entity values in :data:`ENTITIES` order, ``""`` folded to ``None``."""
    return (card or None, customer or None, email or None, ip_address or None, device or None)


def counter_names() -> list[str]:
    """Every counter a snapshot can hold, in a stable order."""
    names = [n for per_slot in CHARGE_NAMES for per_window in per_slot for n in per_window]
    names += [n for s in CARD_COUNT_SLOTS for n in CARD_COUNT_NAMES[s]]
    return names


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One payment attempt, as the velocity counters see it.

    Entity values are pseudonymous identifiers (card fingerprint, hashed email,
    customer id, IP address, device fingerprint); ``None`` or ``""`` means
    unknown. ``at`` is seconds since the epoch.

    ``scope`` keeps one tenant's counters apart from another's: the gateway
    sets it to the account and mode, so one merchant's traffic from an IP
    address never counts towards another merchant's limits (nor test mode's
    towards live mode's). Every store keys on :meth:`entities`, which carries
    the scope in front of each value.
    """

    at: float
    amount_minor: int
    currency: str
    amount_usd_minor: int | None = None
    outcome: Outcome | None = None
    card: str | None = None
    customer: str | None = None
    email: str | None = None
    ip_address: str | None = None
    device: str | None = None
    scope: str = ""

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise ValueError("at must be a finite timestamp")
        if self.amount_minor < 0 or (self.amount_usd_minor or 0) < 0:
            raise ValueError("amounts must not be negative")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if len(self.scope) > MAX_SCOPE_LENGTH:
            raise ValueError("the scope is too long")
        for value in self.entities():
            if value is not None and len(value) > MAX_IDENTIFIER_LENGTH:
                raise ValueError("an entity identifier is too long")

    def entities(self) -> tuple[str | None, ...]:
        """Entity values in :data:`ENTITIES` order, ``""`` folded to ``None``, each
        behind the event's scope."""
        values = entity_tuple(self.card, self.customer, self.email, self.ip_address, self.device)
        if not self.scope:
            return values
        return tuple(None if v is None else self.scope + v for v in values)

    @property
    def usd_cents(self) -> int:
        if self.amount_usd_minor is not None:
            return self.amount_usd_minor
        return self.amount_minor if self.currency.lower() == "usd" else 0


class VelocityStore(Protocol):
    def record(self, event: PaymentEvent, *, attempt_id: str | None = None) -> None:
        """Count one attempt (and its outcome, if known) atomically.

        With ``attempt_id``, the attempt is remembered for
        :meth:`record_outcome`, and a second record with the same id is ignored.
        """
        ...

    def record_and_snapshot(
        self, event: PaymentEvent, *, attempt_id: str | None = None
    ) -> dict[str, int]:
        """Record, then return the counters including this attempt, in one atomic
        step: concurrent attempts each see a distinct count."""
        ...

    def record_outcome(self, attempt_id: str, outcome: Outcome) -> bool:
        """Count a recorded attempt's outcome, in the attempt's time buckets.

        Returns False when the attempt is unknown (never recorded, or older than
        the longest window) or this outcome was already counted; raises
        :class:`VelocityError` when a different outcome was already counted.
        """
        ...

    def snapshot(
        self,
        *,
        at: float,
        card: str | None = None,
        customer: str | None = None,
        email: str | None = None,
        ip_address: str | None = None,
        device: str | None = None,
    ) -> dict[str, int]:
        """The counters for these entities at ``at``.

        Counters of an entity not given are absent (a missing attribute, as in
        Radar); with all five given, the keys are exactly :func:`counter_names`.
        """
        ...

    def close(self) -> None: ...


# --- identifiers --------------------------------------------------------------

_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def normalize_email(email: str) -> str:
    """One spelling per mailbox: trimmed, lowercased; for Gmail, dots and a
    ``+tag`` in the local part are dropped and ``googlemail.com`` is
    ``gmail.com`` (Gmail delivers all of these to the same mailbox)."""
    e = email.strip().lower()
    local, sep, domain = e.rpartition("@")
    if not sep or not local or not domain:
        return e
    if domain in _DOTLESS_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def hash_identifier(value: str, *, key: bytes | Secret) -> str:
    """A keyed pseudonym (HMAC-SHA256, hex) for an identifier such as an email.

    Keyed, not a bare hash: emails are guessable, so an unkeyed hash of one is
    as good as the address to anyone holding a list of addresses.
    """
    raw = key.reveal().encode() if isinstance(key, Secret) else key
    if len(raw) < 16:
        raise ValueError("the identifier key must be at least 16 bytes")
    return hmac.new(raw, value.encode(), hashlib.sha256).hexdigest()


# --- in-process store ---------------------------------------------------------


class _Series:
    """Bucket rows of one entity for one window, with running sums."""

    __slots__ = ("idx", "rows", "sums")

    def __init__(self) -> None:
        self.idx: list[int] = []
        self.rows: list[list[int]] = []
        self.sums = [0] * METRICS

    def add(self, bucket: int, span: int, deltas: Iterable[tuple[int, int]]) -> None:
        idx, rows = self.idx, self.rows
        if idx and idx[-1] == bucket:
            row = rows[-1]
        elif not idx or bucket > idx[-1]:
            row = [0] * METRICS
            idx.append(bucket)
            rows.append(row)
            self.evict(bucket - span)
        else:
            if bucket < idx[-1] - span:
                return  # outside the window of the newest event: never counted again
            pos = bisect.bisect_left(idx, bucket)
            if idx[pos] == bucket:
                row = rows[pos]
            else:
                row = [0] * METRICS
                idx.insert(pos, bucket)
                rows.insert(pos, row)
        sums = self.sums
        for m, v in deltas:
            row[m] += v
            sums[m] += v

    def evict(self, lowest: int) -> None:
        idx, rows, sums = self.idx, self.rows, self.sums
        while idx and idx[0] < lowest:
            del idx[0]
            for m, v in enumerate(rows.pop(0)):
                sums[m] -= v

    def query(self, bucket: int, span: int) -> list[int]:
        """Sums over buckets ``bucket - span .. bucket``; the result must not be mutated."""
        idx, rows = self.idx, self.rows
        lowest, n = bucket - span, len(idx)
        if not n or (idx[0] >= lowest and idx[-1] <= bucket):
            return self.sums  # the common case: every live bucket is in the window
        out = self.sums.copy()
        i = 0
        while i < n and idx[i] < lowest:
            for m, v in enumerate(rows[i]):
                out[m] -= v
            i += 1
        j = n - 1
        while j >= i and idx[j] > bucket:
            for m, v in enumerate(rows[j]):
                out[m] -= v
            j -= 1
        return out


class _Entity:
    __slots__ = ("cards", "series")

    def __init__(self, *, with_cards: bool) -> None:
        self.series = tuple(_Series() for _ in WINDOWS)
        # Per window: card -> last seen, oldest first, cards older than the window evicted.
        self.cards: tuple[OrderedDict[str, float], ...] | None = (
            tuple(OrderedDict() for _ in WINDOWS) if with_cards else None
        )

    def see_card(self, card: str, at: float) -> None:
        assert self.cards is not None
        for w, seen in zip(WINDOWS, self.cards, strict=True):
            last = seen.get(card)
            if last is not None and last >= at:
                continue
            newest = next(reversed(seen.values())) if seen else at
            seen[card] = at
            if at >= newest:
                seen.move_to_end(card)
            else:
                # A late arrival: keep the oldest-first order that counting and
                # eviction rely on (rare, so a re-sort is cheap enough).
                ordered = sorted(seen.items(), key=lambda kv: kv[1])
                seen.clear()
                seen.update(ordered)
            if next(iter(seen.values())) <= at - w.seconds:
                _evict_cards(seen, at - w.seconds)

    def card_count(self, window: int, at: float) -> int:
        assert self.cards is not None
        seen = self.cards[window]
        count, oldest = len(seen), at - WINDOWS[window].seconds
        if not count or (
            next(iter(seen.values())) > oldest and next(reversed(seen.values())) <= at
        ):
            return count
        for last in seen.values():
            if last > oldest:
                break
            count -= 1
        for last in reversed(seen.values()):
            if last <= at:
                break
            count -= 1
        return max(count, 0)

    def empty(self) -> bool:
        return not self.series[-1].idx and not (self.cards and self.cards[-1])


def _evict_cards(seen: OrderedDict[str, float], oldest: float) -> None:
    while seen:
        card, last = next(iter(seen.items()))
        if last > oldest:
            return
        del seen[card]


@dataclass(slots=True)
class _Attempt:
    at: float
    usd_cents: int
    entities: tuple[str | None, ...]
    outcome: Outcome | None


def _outcome_deltas(outcome: Outcome, usd_cents: int) -> list[tuple[int, int]]:
    m = 1 + OUTCOMES.index(outcome)
    return [(m, 1), (AUTHORIZED_AMOUNT, usd_cents)] if m == AUTHORIZED else [(m, 1)]


class MemoryVelocityStore:
    """Counters in this process's memory, behind one lock.

    Memory is bounded by activity in the longest window: entities and attempts
    idle for longer are swept out once per ``sweep_every`` seconds of event
    time (an hour by default; a replay of history through the store can sweep
    less often, since each sweep visits every entity).
    """

    def __init__(self, *, sweep_every: float = 3600.0) -> None:
        if not sweep_every > 0:
            raise ValueError("sweep_every must be positive")
        self._lock = threading.Lock()
        self._entities: dict[tuple[int, str], _Entity] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._swept_at = -math.inf
        self._sweep_every = sweep_every

    # Hooks for a persistent subclass; called under the lock before memory changes.
    def _persist_record(self, event: PaymentEvent, attempt_id: str | None) -> None:
        return

    def _persist_outcome(self, attempt_id: str, attempt: _Attempt, outcome: Outcome) -> None:
        return

    def _persist_sweep(self, now: float) -> None:
        return

    def record(self, event: PaymentEvent, *, attempt_id: str | None = None) -> None:
        with self._lock:
            self._record(event, attempt_id)

    def record_and_snapshot(
        self, event: PaymentEvent, *, attempt_id: str | None = None
    ) -> dict[str, int]:
        with self._lock:
            self._record(event, attempt_id)
            return self._snapshot(event.at, event.entities())

    def record_outcome(self, attempt_id: str, outcome: Outcome) -> bool:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        with self._lock:
            attempt = self._attempts.get(attempt_id)
            if attempt is None:
                return False
            if attempt.outcome is not None:
                if attempt.outcome == outcome:
                    return False
                raise VelocityError("a different outcome was already recorded for this attempt")
            self._persist_outcome(attempt_id, attempt, outcome)
            attempt.outcome = outcome
            self._count(attempt.at, attempt.entities, _outcome_deltas(outcome, attempt.usd_cents))
            return True

    def snapshot(
        self,
        *,
        at: float,
        card: str | None = None,
        customer: str | None = None,
        email: str | None = None,
        ip_address: str | None = None,
        device: str | None = None,
    ) -> dict[str, int]:
        entities = entity_tuple(card, customer, email, ip_address, device)
        with self._lock:
            return self._snapshot(at, entities)

    def sweep(self, *, now: float) -> None:
        """Forget what can no longer count at ``now`` (runs by itself hourly)."""
        with self._lock:
            self._sweep(now)

    def close(self) -> None:
        return

    # -- under the lock ----------------------------------------------------------

    def _record(self, event: PaymentEvent, attempt_id: str | None) -> None:
        if attempt_id is not None and attempt_id in self._attempts:
            return  # a retry of an attempt already counted
        if event.at - self._swept_at >= self._sweep_every:
            self._sweep(event.at)
        self._persist_record(event, attempt_id)
        entities, usd = event.entities(), event.usd_cents
        deltas = [(TOTAL, 1), (AMOUNT, usd)]
        if event.outcome is not None:
            deltas += _outcome_deltas(event.outcome, usd)
        self._count(event.at, entities, deltas)
        card = entities[0]
        if card is not None:
            for slot in CARD_COUNT_SLOTS:
                value = entities[slot]
                if value is not None:
                    self._entity(slot, value).see_card(card, event.at)
        if attempt_id is not None:
            self._attempts[attempt_id] = _Attempt(event.at, usd, entities, event.outcome)

    def _entity(self, slot: int, value: str) -> _Entity:
        key = (slot, value)
        entity = self._entities.get(key)
        if entity is None:
            entity = self._entities[key] = _Entity(with_cards=slot in CARD_COUNT_SLOTS)
        return entity

    def _count(
        self, at: float, entities: tuple[str | None, ...], deltas: list[tuple[int, int]]
    ) -> None:
        buckets = [w.bucket(at) for w in WINDOWS]
        for slot, value in enumerate(entities):
            if value is None:
                continue
            entity = self._entities.get((slot, value)) or self._entity(slot, value)
            for w, s, b in zip(WINDOWS, entity.series, buckets, strict=True):
                idx = s.idx
                if idx and idx[-1] == b:  # the common case, inlined: the newest bucket
                    row, sums = s.rows[-1], s.sums
                    for m, v in deltas:
                        row[m] += v
                        sums[m] += v
                else:
                    s.add(b, w.buckets, deltas)

    def _snapshot(self, at: float, entities: tuple[str | None, ...]) -> dict[str, int]:
        out: dict[str, int] = {}
        buckets = [w.bucket(at) for w in WINDOWS]
        for slot, value in enumerate(entities):
            if value is None:
                continue
            entity = self._entities.get((slot, value))
            names = CHARGE_NAMES[slot]
            for wi, w in enumerate(WINDOWS):
                row = (
                    entity.series[wi].query(buckets[wi], w.buckets)
                    if entity is not None
                    else [0] * METRICS
                )
                out.update(zip(names[wi], row, strict=True))
            if slot in CARD_COUNT_SLOTS:
                for wi, name in enumerate(CARD_COUNT_NAMES[slot]):
                    out[name] = entity.card_count(wi, at) if entity is not None else 0
        return out

    def _sweep(self, now: float) -> None:
        self._persist_sweep(now)
        self._swept_at = now
        for key, entity in list(self._entities.items()):
            for w, s in zip(WINDOWS, entity.series, strict=True):
                s.evict(w.bucket(now) - w.buckets)
            if entity.cards is not None:
                for w, seen in zip(WINDOWS, entity.cards, strict=True):
                    _evict_cards(seen, now - w.seconds)
            if entity.empty():
                del self._entities[key]
        horizon = now - RETENTION_SECONDS
        for attempt_id in [a for a, v in self._attempts.items() if v.at < horizon]:
            del self._attempts[attempt_id]
