"""Idempotency keys, Stripe's contract.

* Scoped to (account, mode, key); up to 255 characters.
* The first response — success or an error raised while executing — is stored
  and replayed for ``ttl`` seconds.
* The same key with different parameters (or another endpoint) is an
  ``idempotency_error``.
* While the first request is in flight, a second gets 409. A reservation whose
  holder died is taken over after ``lock_seconds``: the domain operations are
  themselves safe to re-run (state checks, acquirer idempotency keys).
* Requests that fail validation never reach here, so they are not stored.
* Stored responses are encrypted at rest: some carry a secret shown once (a
  webhook endpoint's signing secret), and a replay must not turn the
  idempotency table into a second, clear copy of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paywarden.core.errors import ConflictError, IdempotencyError, InvalidRequestError
from paywarden.db import Database
from paywarden.idempotency.models import IdempotencyRecord
from paywarden.webhooks.secretbox import SecretBox

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


@dataclass(frozen=True)
class Reservation:
    """The key is ours. ``recovery_point`` is the object a crashed earlier
    holder of the key had already created: creating handlers resume it instead
    of creating (and charging) a second one."""

    recovery_point: str | None = None


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    canon = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequestError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
            param="Idempotency-Key",
        )


class IdempotencyStore:
    def __init__(self, db: Database, *, ttl: int, lock_seconds: int, box: SecretBox) -> None:
        self.db = db
        self.box = box
        self.ttl = ttl
        self.lock_seconds = lock_seconds

    def begin(
        self,
        *,
        account_id: str,
        livemode: bool,
        key: str,
        method: str,
        path: str,
        fp: str,
        now: float,
    ) -> StoredResponse | Reservation:
        """Reserve the key, or return the stored response to replay."""
        check_key(key)
        for _ in range(3):
            try:
                with self.db.write() as s:
                    rec = s.scalar(
                        select(IdempotencyRecord)
                        .where(
                            IdempotencyRecord.account_id == account_id,
                            IdempotencyRecord.livemode == livemode,
                            IdempotencyRecord.key == key,
                        )
                        .with_for_update()
                    )
                    if rec is not None and rec.created < now - self.ttl:
                        s.delete(rec)
                        s.flush()
                        rec = None
                    if rec is None:
                        s.add(
                            IdempotencyRecord(
                                account_id=account_id,
                                livemode=livemode,
                                key=key,
                                method=method,
                                path=path,
                                fingerprint=fp,
                                status="in_flight",
                                locked_until=now + self.lock_seconds,
                                response_status=None,
                                response_body=None,
                                response_headers=None,
                                created=int(now),
                                recovery_point=None,
                            )
                        )
                        return Reservation()
                    if rec.method != method or rec.path != path or rec.fingerprint != fp:
                        raise IdempotencyError(
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{_echo(key)}' if you meant to execute a different request.",
                        )
                    if rec.status == "complete":
                        assert rec.response_status is not None and rec.response_body is not None
                        return StoredResponse(
                            rec.response_status, self.box.decrypt(rec.response_body)
                        )
                    if rec.locked_until > now:
                        raise ConflictError(
                            "There is currently another in-progress request using this "
                            "Idempotent Key (that probably means you submitted twice, and the "
                            "other request is still going through). Please try again later.",
                            code="idempotency_key_in_use",
                        )
                    # The holder died (its lock expired): take over, resuming
                    # whatever it had already created.
                    rec.locked_until = now + self.lock_seconds
                    return Reservation(recovery_point=rec.recovery_point)
            except IntegrityError:
                continue  # lost an insert race; re-read
        raise ConflictError(
            "Concurrent use of this Idempotency-Key.", code="idempotency_key_in_use"
        )

    @staticmethod
    def remember(
        session: Session, *, account_id: str, livemode: bool, key: str, object_id: str
    ) -> None:
        """Record, in the caller's transaction, the object this request created."""
        session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.account_id == account_id,
                IdempotencyRecord.livemode == livemode,
                IdempotencyRecord.key == key,
            )
            .values(recovery_point=object_id)
        )

    def complete(
        self, *, account_id: str, livemode: bool, key: str, status: int, body: str
    ) -> None:
        with self.db.write() as s:
            rec = s.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id,
                    IdempotencyRecord.livemode == livemode,
                    IdempotencyRecord.key == key,
                )
            )
            if rec is not None:
                rec.status = "complete"
                rec.response_status = status
                rec.response_body = self.box.encrypt(body)

    def release(self, *, account_id: str, livemode: bool, key: str) -> None:
        """Forget a reservation (the request never started executing)."""
        with self.db.write() as s:
            s.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id,
                    IdempotencyRecord.livemode == livemode,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.status == "in_flight",
                )
            )

    def purge_expired(self, now: float) -> int:
        with self.db.write() as s:
            res = s.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created < now - self.ttl)
            )
            return int(getattr(res, "rowcount", 0) or 0)


def _echo(key: str) -> str:
    return key if len(key) <= 64 and key.isalnum() else key[:8] + "…"
