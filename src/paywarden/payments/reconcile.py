"""The reconciler: settles acquirer attempts whose outcome is unknown.

It asks the *same* acquirer about the *same* idempotency key: first through the
acquirer's own record (lookup), and if the acquirer never saw the request, by
sending it again under that key, which the acquirer executes at most once.
Attempts are claimed with a lease so several gateway workers can run it.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import and_, or_, select

from paywarden.acquirers.base import (
    AcquirerError,
    AcquirerNotFound,
    AcquirerOutcomeUnknown,
    AcquirerUnavailable,
)
from paywarden.payments.flows import Payments, auth_request_from_json
from paywarden.payments.models import AcquirerAttempt

log = logging.getLogger("paywarden.reconcile")

LEASE_SECONDS = 30
MAX_BACKOFF = 600


class Reconciler:
    def __init__(
        self, payments: Payments, *, interval: float, stale_pending_seconds: float = 60.0
    ) -> None:
        """``stale_pending_seconds``: an attempt still ``pending`` after this long
        lost its worker between recording and settling (a crash); it is
        reconciled like an unknown outcome. It must exceed the longest a live
        call can take (two acquirer timeouts)."""
        self.p = payments
        self.interval = interval
        self.stale_pending = stale_pending_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, limit: int = 50) -> list[str]:
        now = int(self.p.clock.now())
        with self.p.db.write() as s:
            q = (
                select(AcquirerAttempt)
                .where(
                    or_(
                        and_(
                            AcquirerAttempt.status == "unknown",
                            AcquirerAttempt.reconcile_after <= now,
                        ),
                        and_(
                            AcquirerAttempt.status == "pending",
                            AcquirerAttempt.updated <= now - self.stale_pending,
                            or_(
                                AcquirerAttempt.reconcile_after.is_(None),
                                AcquirerAttempt.reconcile_after <= now,
                            ),
                        ),
                    )
                )
                .order_by(AcquirerAttempt.pk)
                .limit(limit)
            )
            if not self.p.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            rows = list(s.scalars(q))
            for att in rows:
                att.status = "unknown"  # an orphaned pending attempt is an unknown outcome
                att.reconcile_after = now + LEASE_SECONDS
            return [a.id for a in rows]

    def run_once(self) -> int:
        settled = 0
        for attempt_id in self.claim():
            try:
                if self.reconcile(attempt_id):
                    settled += 1
            except Exception:
                log.exception("reconcile failed attempt=%s", attempt_id)
        return settled

    def reconcile(self, attempt_id: str) -> bool:
        with self.p.db.read() as s:
            att = s.scalar(select(AcquirerAttempt).where(AcquirerAttempt.id == attempt_id))
            assert att is not None
            op, acquirer, key, request = (
                att.operation,
                att.acquirer,
                att.idempotency_key,
                dict(att.request),
            )
            pi_id, count = att.payment_intent_id, att.reconcile_count
        conn = self.p.router.get(acquirer)
        try:
            if op == "authorize":
                try:
                    result = conn.lookup_authorization(key)
                except AcquirerNotFound:
                    result = conn.authorize(auth_request_from_json(request), idempotency_key=key)
                err, _ = self.p.apply_authorization(
                    pi_id=pi_id,
                    attempt_id=attempt_id,
                    acquirer=acquirer,
                    result=result,
                    request_id=None,
                    idempotency_key=None,
                )
                del err  # the decline is recorded on the intent; nobody is waiting for it
            elif op == "capture":
                cap = conn.capture(
                    str(request["reference"]), int(request["amount"]), idempotency_key=key
                )
                self.p.apply_capture(
                    attempt_id=attempt_id,
                    amount_captured=cap.amount_captured,
                    status=cap.status,
                    raw=cap.raw,
                    request_id=None,
                    idempotency_key=None,
                )
            elif op == "void":
                conn.void(str(request["reference"]), idempotency_key=key)
                self.p.apply_void(attempt_id=attempt_id, request_id=None, idempotency_key=None)
            elif op == "refund":
                try:
                    rf = conn.lookup_refund(key)
                except AcquirerNotFound:
                    rf = conn.refund(
                        str(request["reference"]), int(request["amount"]), idempotency_key=key
                    )
                self.p.apply_refund(
                    attempt_id=attempt_id,
                    status=rf.status,
                    reference=rf.reference,
                    failure_reason=rf.failure_reason,
                    raw=rf.raw,
                    request_id=None,
                    idempotency_key=None,
                )
            else:
                raise AssertionError(op)
        except (AcquirerUnavailable, AcquirerOutcomeUnknown, AcquirerError) as exc:
            delay = min(MAX_BACKOFF, int(self.p.reconcile_grace * 2 ** min(count, 10)))
            with self.p.db.write() as s:
                att2 = s.scalar(select(AcquirerAttempt).where(AcquirerAttempt.id == attempt_id))
                assert att2 is not None
                att2.reconcile_count += 1
                att2.reconcile_after = int(self.p.clock.now()) + max(1, delay)
                att2.error = f"reconcile: {type(exc).__name__}"
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("reconciler iteration failed")

    def start_background(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name="paywarden-reconciler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
