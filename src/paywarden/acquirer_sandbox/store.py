"""The sandbox acquirer's ledger: authorizations, refunds, 3-D Secure sessions and
idempotency records in SQLite (WAL on a file), one connection behind a lock.

Every write runs inside one transaction together with its idempotency record, so
"processed" and "remembered" are the same commit: a replay after a lost response
returns the very bytes the first answer had. No card number is ever stored: a
card is kept as its test ``ref`` or, for other numbers, a keyed hash, plus last4.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from paywarden.acquirer_sandbox.cards import (
    APPROVE,
    REFUND_FAILURE_REASON,
    Behaviour,
    SandboxCard,
    card_for_ref,
    decline,
)
from paywarden.core.ids import new_id

JsonObject = dict[str, Any]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS authorizations (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    amount INTEGER NOT NULL,
    amount_captured INTEGER NOT NULL DEFAULT 0,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    currency TEXT NOT NULL,
    card_ref TEXT,
    card_fingerprint TEXT NOT NULL,
    brand TEXT NOT NULL,
    last4 TEXT NOT NULL,
    funding TEXT NOT NULL,
    country TEXT NOT NULL,
    exp_month INTEGER,
    exp_year INTEGER,
    decline_code TEXT,
    network_status TEXT NOT NULL,
    message TEXT,
    authentication_id TEXT,
    authentication_url TEXT,
    merchant_reference TEXT NOT NULL,
    description TEXT,
    risk_level TEXT NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (scope, idempotency_key)
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    authorization_id TEXT NOT NULL REFERENCES authorizations (id),
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_reason TEXT,
    created INTEGER NOT NULL,
    UNIQUE (scope, idempotency_key)
);
CREATE TABLE IF NOT EXISTS authentications (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    card_fingerprint TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    return_url TEXT,
    url TEXT NOT NULL,
    authorization_id TEXT NOT NULL,
    consumed_by TEXT,
    created INTEGER NOT NULL,
    completed INTEGER
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
"""

DECLINE_MESSAGES: Final[dict[str, str]] = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again later.",
    "card_velocity_exceeded": "Your card was declined for exceeding its limits.",
    "fraudulent": "Your card was declined.",
    "incorrect_number": "Your card number is incorrect.",
    "authentication_required": "Your card was declined: this payment requires authentication.",
}

# Declines decided before the card network sees the request (Stripe's outcome.network_status).
_NOT_SENT: Final = frozenset({"incorrect_number", "authentication_required", "fraudulent"})


def dump(obj: JsonObject) -> str:
    """The one JSON encoding of the sandbox: replays compare byte for byte."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class ApiError(Exception):
    """An answer other than 200. ``replayable`` errors (the request was valid and the
    sandbox acted on it, e.g. capturing twice) are remembered under the idempotency
    key; validation errors and unknown ids are not, as at Stripe."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        replayable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.replayable = replayable

    def body(self) -> JsonObject:
        error: JsonObject = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, code=code, param=param)


def state_error(message: str, code: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message, code=code, replayable=True)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.", code="resource_missing")


@dataclass(frozen=True)
class Reply:
    status: int
    body: str  # JSON text, exactly as first sent


@dataclass(frozen=True)
class AuthorizeInput:
    amount: int
    currency: str
    capture: bool
    card: SandboxCard
    card_fingerprint: str  # "ref:<ref>" or "pan:<keyed hash>"
    exp_month: int | None
    exp_year: int | None
    cvc_supplied: bool
    merchant_reference: str
    description: str | None
    authentication_id: str | None
    return_url: str | None
    three_d_secure_required: bool = False  # the merchant asked for 3-D Secure


@dataclass(frozen=True)
class _Outcome:
    status: str
    decline_code: str | None
    network_status: str
    message: str


def _outcome(behaviour: Behaviour, capture: bool) -> _Outcome:
    if behaviour.kind == "decline":
        code = behaviour.decline_code or "generic_decline"
        network = "not_sent_to_network" if code in _NOT_SENT else "declined_by_network"
        return _Outcome("declined", code, network, DECLINE_MESSAGES.get(code, "Declined."))
    status = "captured" if capture else "authorized"
    return _Outcome(status, None, "approved_by_network", "Approved.")


class SandboxStore:
    def __init__(
        self,
        db_path: str | None,
        *,
        fingerprint_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._key = fingerprint_key
        self._closed = False
        self._db = sqlite3.connect(
            db_path if db_path is not None else ":memory:",
            check_same_thread=False,
            isolation_level=None,  # explicit BEGIN/COMMIT below
        )
        if db_path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def card_fingerprint(self, card: SandboxCard) -> str:
        if card.ref is not None:
            return f"ref:{card.ref}"
        digest = hmac.new(self._key, card.pan.encode(), hashlib.sha256).hexdigest()
        return f"pan:{digest}"

    def _now(self) -> int:
        return int(self._clock())

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Under the lock, one IMMEDIATE transaction; rolled back on any error."""
        with self._lock:
            if self._closed:
                raise RuntimeError("sandbox store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def run(
        self,
        action: Callable[[sqlite3.Connection], JsonObject],
        *,
        scope: str,
        key: str | None,
        fingerprint: str,
    ) -> tuple[Reply, bool]:
        """Run ``action`` once per (scope, key). Returns the reply and whether it was
        a replay. Same key with another request fingerprint: ``idempotency_error``."""
        with self._transaction() as db:
            if key is not None:
                row = db.execute(
                    "SELECT fingerprint, status, body FROM idempotency WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
                if row is not None:
                    if not hmac.compare_digest(str(row[0]), fingerprint):
                        raise ApiError(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                        )
                    return Reply(int(row[1]), str(row[2])), True
            db.execute("SAVEPOINT action")
            try:
                reply = Reply(200, dump(action(db)))
                db.execute("RELEASE action")
            except ApiError as err:
                db.execute("ROLLBACK TO action")
                db.execute("RELEASE action")
                if not err.replayable or key is None:
                    raise
                reply = Reply(err.status, dump(err.body()))
            if key is not None:
                db.execute(
                    "INSERT INTO idempotency (scope, key, fingerprint, status, body, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (scope, key, fingerprint, reply.status, reply.body, self._now()),
                )
            return reply, False

    def read(self, query: Callable[[sqlite3.Connection], JsonObject]) -> JsonObject:
        with self._transaction() as db:
            return query(db)

    # ------------------------------------------------------------- authorizations

    def authorize_action(
        self, inp: AuthorizeInput, *, scope: str, key: str, public_url: str
    ) -> Callable[[sqlite3.Connection], JsonObject]:
        def action(db: sqlite3.Connection) -> JsonObject:
            return self._authorize(db, inp, scope=scope, key=key, public_url=public_url)

        return action

    def _authorize(
        self,
        db: sqlite3.Connection,
        inp: AuthorizeInput,
        *,
        scope: str,
        key: str,
        public_url: str,
    ) -> JsonObject:
        now = self._now()
        auth_id = new_id("auth")
        card = inp.card
        behaviour = card.behaviour
        session_id: str | None = None
        session_url: str | None = None
        outcome: _Outcome

        if _expired(inp.exp_month, inp.exp_year, now):
            outcome = _outcome(decline("expired_card"), inp.capture)
        elif card.fails_cvc_check and inp.cvc_supplied:
            outcome = _outcome(decline("incorrect_cvc"), inp.capture)
        elif (
            behaviour.kind == "require_3ds" or inp.three_d_secure_required
        ) and inp.authentication_id is None:
            session_id = new_id("3ds")
            session_url = f"{public_url.rstrip('/')}/3ds/{session_id}"
            db.execute(
                "INSERT INTO authentications (id, scope, status, card_fingerprint, amount,"
                " currency, return_url, url, authorization_id, created)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    scope,
                    inp.card_fingerprint,
                    inp.amount,
                    inp.currency,
                    inp.return_url,
                    session_url,
                    auth_id,
                    now,
                ),
            )
            outcome = _Outcome(
                "requires_authentication",
                None,
                "not_sent_to_network",
                "The card issuer requires 3-D Secure authentication.",
            )
        elif behaviour.kind == "require_3ds" or inp.three_d_secure_required:
            assert inp.authentication_id is not None
            session = db.execute(
                "SELECT status, card_fingerprint, amount, currency, consumed_by, url"
                " FROM authentications WHERE id = ? AND scope = ?",
                (inp.authentication_id, scope),
            ).fetchone()
            authenticated = (
                session is not None
                and session[0] == "authenticated"
                and session[1] == inp.card_fingerprint
                and session[2] == inp.amount
                and session[3] == inp.currency
                and session[4] is None
            )
            if session is not None:
                session_id, session_url = inp.authentication_id, str(session[5])
            if authenticated:
                # A completed authentication vouches for one authorization only.
                db.execute(
                    "UPDATE authentications SET consumed_by = ? WHERE id = ?",
                    (auth_id, inp.authentication_id),
                )
                after = behaviour.after_authentication or (
                    APPROVE if behaviour.kind == "require_3ds" else behaviour
                )
                outcome = _outcome(after, inp.capture)
            else:
                outcome = _outcome(decline("authentication_required"), inp.capture)
        else:
            outcome = _outcome(behaviour, inp.capture)

        captured = inp.amount if outcome.status == "captured" else 0
        db.execute(
            "INSERT INTO authorizations (id, scope, idempotency_key, status, amount,"
            " amount_captured, currency, card_ref, card_fingerprint, brand, last4, funding,"
            " country, exp_month, exp_year, decline_code, network_status, message,"
            " authentication_id, authentication_url, merchant_reference, description,"
            " risk_level, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                auth_id,
                scope,
                key,
                outcome.status,
                inp.amount,
                captured,
                inp.currency,
                card.ref,
                inp.card_fingerprint,
                card.brand,
                card.last4,
                card.funding,
                card.country,
                inp.exp_month,
                inp.exp_year,
                outcome.decline_code,
                outcome.network_status,
                outcome.message,
                session_id,
                session_url,
                inp.merchant_reference,
                inp.description,
                card.risk_level,
                now,
            ),
        )
        return _authorization_json(db, auth_id)

    def capture_action(
        self, auth_id: str, amount: int | None, *, scope: str
    ) -> Callable[[sqlite3.Connection], JsonObject]:
        def action(db: sqlite3.Connection) -> JsonObject:
            row = _auth_row(db, auth_id, scope)
            status, authorized = str(row["status"]), int(row["amount"])
            if status != "authorized":
                raise state_error(
                    f"This authorization is {status} and cannot be captured.",
                    "authorization_not_capturable",
                )
            to_capture = authorized if amount is None else amount
            if to_capture > authorized:
                raise state_error(
                    f"Cannot capture {to_capture}: only {authorized} was authorized.",
                    "amount_too_large",
                )
            db.execute(
                "UPDATE authorizations SET status = 'captured', amount_captured = ? WHERE id = ?",
                (to_capture, auth_id),
            )
            return _authorization_json(db, auth_id)

        return action

    def void_action(
        self, auth_id: str, *, scope: str
    ) -> Callable[[sqlite3.Connection], JsonObject]:
        def action(db: sqlite3.Connection) -> JsonObject:
            row = _auth_row(db, auth_id, scope)
            status = str(row["status"])
            if status != "authorized":
                raise state_error(
                    f"This authorization is {status} and cannot be voided.",
                    "authorization_not_voidable",
                )
            db.execute("UPDATE authorizations SET status = 'voided' WHERE id = ?", (auth_id,))
            return _authorization_json(db, auth_id)

        return action

    def refund_action(
        self, auth_id: str, amount: int | None, *, scope: str, key: str
    ) -> Callable[[sqlite3.Connection], JsonObject]:
        def action(db: sqlite3.Connection) -> JsonObject:
            row = _auth_row(db, auth_id, scope)
            status = str(row["status"])
            if status != "captured":
                raise state_error(
                    f"This authorization is {status}: only captured funds can be refunded.",
                    "authorization_not_refundable",
                )
            captured, refunded = int(row["amount_captured"]), int(row["amount_refunded"])
            remaining = captured - refunded
            to_refund = remaining if amount is None else amount
            if to_refund <= 0 or to_refund > remaining:
                raise state_error(
                    f"Cannot refund {to_refund}: {remaining} of {captured} remains refundable.",
                    "amount_too_large",
                )
            card = card_for_ref(str(row["card_ref"])) if row["card_ref"] is not None else None
            fails = card is not None and card.behaviour.kind == "refund_fails"
            refund_id = new_id("re")
            db.execute(
                "INSERT INTO refunds (id, scope, idempotency_key, authorization_id, amount,"
                " currency, status, failure_reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    refund_id,
                    scope,
                    key,
                    auth_id,
                    to_refund,
                    row["currency"],
                    "failed" if fails else "succeeded",
                    REFUND_FAILURE_REASON if fails else None,
                    self._now(),
                ),
            )
            if not fails:
                db.execute(
                    "UPDATE authorizations SET amount_refunded = amount_refunded + ? WHERE id = ?",
                    (to_refund, auth_id),
                )
            return _refund_json(db, refund_id)

        return action

    # ------------------------------------------------------------------ lookups

    def get_authorization(self, auth_id: str, *, scope: str) -> JsonObject:
        def query(db: sqlite3.Connection) -> JsonObject:
            _auth_row(db, auth_id, scope)
            return _authorization_json(db, auth_id)

        return self.read(query)

    def authorization_by_key(self, key: str, *, scope: str) -> JsonObject:
        def query(db: sqlite3.Connection) -> JsonObject:
            row = db.execute(
                "SELECT id FROM authorizations WHERE scope = ? AND idempotency_key = ?",
                (scope, key),
            ).fetchone()
            if row is None:
                raise not_found("authorization for this idempotency key")
            return _authorization_json(db, str(row[0]))

        return self.read(query)

    def refund_by_key(self, key: str, *, scope: str) -> JsonObject:
        def query(db: sqlite3.Connection) -> JsonObject:
            row = db.execute(
                "SELECT id FROM refunds WHERE scope = ? AND idempotency_key = ?", (scope, key)
            ).fetchone()
            if row is None:
                raise not_found("refund for this idempotency key")
            return _refund_json(db, str(row[0]))

        return self.read(query)

    def authentication(self, session_id: str, *, scope: str | None = None) -> JsonObject:
        """A 3-D Secure session; ``scope`` None is the customer's browser (any merchant)."""

        def query(db: sqlite3.Connection) -> JsonObject:
            row = db.execute(
                "SELECT id, scope, status, amount, currency, return_url, created, completed"
                " FROM authentications WHERE id = ?",
                (session_id,),
            ).fetchone()
            if row is None or (scope is not None and row[1] != scope):
                raise not_found("authentication")
            return {
                "id": row[0],
                "object": "authentication",
                "status": row[2],
                "amount": row[3],
                "currency": row[4],
                "return_url": row[5],
                "created": row[6],
                "completed": row[7],
            }

        return self.read(query)

    def complete_authentication(self, session_id: str, result: str) -> JsonObject:
        """The customer's answer on the ACS page; a session completes once."""
        if result not in ("authenticated", "failed"):
            raise invalid("result must be authenticated or failed", param="result")
        with self._transaction() as db:
            row = db.execute(
                "SELECT status FROM authentications WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise not_found("authentication")
            if row[0] != "pending":
                raise ApiError(
                    409,
                    "invalid_request_error",
                    f"This authentication is already {row[0]}.",
                    code="authentication_already_completed",
                )
            db.execute(
                "UPDATE authentications SET status = ?, completed = ? WHERE id = ?",
                (result, self._now(), session_id),
            )
        return self.authentication(session_id)

    def stats(self) -> JsonObject:
        def query(db: sqlite3.Connection) -> JsonObject:
            auths = dict(
                db.execute("SELECT status, COUNT(*) FROM authorizations GROUP BY status").fetchall()
            )
            refunds = dict(
                db.execute("SELECT status, COUNT(*) FROM refunds GROUP BY status").fetchall()
            )
            captured, refunded = db.execute(
                "SELECT COALESCE(SUM(amount_captured), 0), COALESCE(SUM(amount_refunded), 0)"
                " FROM authorizations"
            ).fetchone()
            return {
                "authorizations": {"total": sum(auths.values()), "by_status": auths},
                "refunds": {"total": sum(refunds.values()), "by_status": refunds},
                "amount_captured": captured,
                "amount_refunded": refunded,
            }

        return self.read(query)


def _expired(exp_month: int | None, exp_year: int | None, now: int) -> bool:
    if exp_month is None or exp_year is None:
        return False
    today = datetime.fromtimestamp(now, tz=UTC)
    return (exp_year, exp_month) < (today.year, today.month)


def _auth_row(db: sqlite3.Connection, auth_id: str, scope: str) -> dict[str, Any]:
    cursor = db.execute("SELECT * FROM authorizations WHERE id = ? AND scope = ?", (auth_id, scope))
    row = cursor.fetchone()
    if row is None:
        raise not_found("authorization")
    names = [d[0] for d in cursor.description]
    return dict(zip(names, row, strict=True))


def _authorization_json(db: sqlite3.Connection, auth_id: str) -> JsonObject:
    cursor = db.execute("SELECT * FROM authorizations WHERE id = ?", (auth_id,))
    names = [d[0] for d in cursor.description]
    r = dict(zip(names, cursor.fetchone(), strict=True))
    authentication = (
        {"id": r["authentication_id"], "url": r["authentication_url"]}
        if r["authentication_id"] is not None
        else None
    )
    return {
        "id": r["id"],
        "object": "authorization",
        "status": r["status"],
        "amount": r["amount"],
        "amount_captured": r["amount_captured"],
        "amount_refunded": r["amount_refunded"],
        "currency": r["currency"],
        "decline_code": r["decline_code"],
        "network_status": r["network_status"],
        "message": r["message"],
        "authentication": authentication,
        "idempotency_key": r["idempotency_key"],
        "created": r["created"],
        "risk_level": r["risk_level"],
        "merchant_reference": r["merchant_reference"],
        "description": r["description"],
        "card": {
            "test_ref": r["card_ref"],
            "brand": r["brand"],
            "last4": r["last4"],
            "funding": r["funding"],
            "country": r["country"],
            "exp_month": r["exp_month"],
            "exp_year": r["exp_year"],
        },
    }


def _refund_json(db: sqlite3.Connection, refund_id: str) -> JsonObject:
    cursor = db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,))
    names = [d[0] for d in cursor.description]
    r = dict(zip(names, cursor.fetchone(), strict=True))
    return {
        "id": r["id"],
        "object": "refund",
        "authorization": r["authorization_id"],
        "amount": r["amount"],
        "currency": r["currency"],
        "status": r["status"],
        "failure_reason": r["failure_reason"],
        "idempotency_key": r["idempotency_key"],
        "created": r["created"],
    }
