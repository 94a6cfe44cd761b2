"""The vault's operations: tokenize, fingerprint, forward, shred, reveal, and
key management (KEK rotation and rewrap, HPKE key rotation).

Every operation that touches card data is written to the access log in the
same transaction as its effect; an operation whose log entry cannot be written
does not happen. Card numbers exist in clear only inside these functions, in
:class:`~paywarden.core.secrets.CardNumber` objects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paywarden.audit import Actor as AuditActor
from paywarden.audit import AuditEntryError, AuditError, AuditLog
from paywarden.audit import Origin as AuditOrigin
from paywarden.audit import Resource as AuditResource
from paywarden.core.clock import Clock
from paywarden.core.ids import new_id
from paywarden.core.secrets import CardNumber, SecretBytes
from paywarden.db import Database
from paywarden.vault.bins import BinTable
from paywarden.vault.cards import CardInput, CardValidationError, parse_card
from paywarden.vault.crypto import aead, hpke
from paywarden.vault.crypto.aead import DecryptionError
from paywarden.vault.groupcommit import GroupCommit, Outcome
from paywarden.vault.kms import KeyManager, WrappedKey
from paywarden.vault.models import (
    VaultAccessLog,
    VaultCard,
    VaultCvc,
    VaultHpkeKey,
    VaultHpkeSeen,
    VaultTenantKey,
)

log = logging.getLogger("paywarden.vault")

# Only this path of an allow-listed destination receives card data.
FORWARD_PATH = "/v1/authorizations"
_FORWARD_HEADERS = ("authorization", "idempotency-key", "accept")


class VaultError(Exception):
    """A refused vault operation. ``status`` and ``code`` go back to the caller;
    the message never contains card data."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(VaultError):
    def __init__(self, what: str = "card") -> None:
        super().__init__(f"No such {what}.", status=404, code="resource_missing")


@dataclass(frozen=True)
class VaultPolicy:
    """Tunables, from :class:`paywarden.config.Settings`."""

    cvc_ttl_seconds: int = 30 * 60
    hpke_cryptoperiod_seconds: int = 30 * 86400
    hpke_overlap_seconds: int = 24 * 3600
    kek_cryptoperiod_seconds: int = 365 * 86400
    retention_after_expiry_seconds: int = 90 * 86400
    forward_timeout_seconds: float = 5.0
    forward_connect_timeout_seconds: float = 1.0
    # An encrypted card must have been sealed within this window (clock skew
    # allowed for); it is accepted once.
    hpke_payload_max_age_seconds: int = 3600
    hpke_clock_skew_seconds: int = 300


@dataclass(frozen=True)
class CardMetadata:
    """What the gateway may keep about a card."""

    token: str
    brand: str
    bin: str | None  # None below 15 digits (PCI DSS 3.4.1 masking)
    last4: str
    exp_month: int
    exp_year: int
    funding: str
    country: str | None
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ForwardResult:
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _HpkeKey:
    """An unwrapped, loaded HPKE private key with the end of its acceptance,
    as read together from its row. The write transaction checks the row again."""

    private: hpke.PrivateKey
    accept_until: int | None
    loaded: int  # the vault clock's time when the row was read


# A cached HPKE key's row is read again after this long, so a key retired or
# destroyed by another process stops decrypting here within a minute (this
# process's own rotations and sweeps drop it at once).
HPKE_KEY_RECHECK_SECONDS = 60


@dataclass
class _Caches:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tenant_keys: dict[str, SecretBytes] = field(default_factory=dict)
    hpke_private: dict[str, _HpkeKey] = field(default_factory=dict)
    # Bumped (under ``lock``) by every change of HPKE key rows here: a key read
    # before a change is not cached after it.
    hpke_generation: int = 0

    def drop_hpke(self, key_ids: Iterable[str] | None = None) -> None:
        with self.lock:
            self.hpke_generation += 1
            if key_ids is None:
                self.hpke_private.clear()
            else:
                for key_id in key_ids:
                    self.hpke_private.pop(key_id, None)


@dataclass(frozen=True, slots=True)
class _Tokenization:
    """One tokenization's rows, ready for a group commit."""

    card: dict[str, Any]  # vault_cards
    cvc: dict[str, Any] | None  # vault_cvcs
    seen: dict[str, Any] | None  # vault_hpke_seen: the payload's replay digest
    hpke_key: str | None  # the HPKE key that opened the payload
    access: dict[str, Any]  # vault_access_log, without ``at``
    audit: dict[str, Any] | None  # AuditLog.record's arguments; None without an audit log


# Most tokenizations one durable transaction carries.
MAX_TOKENIZATION_BATCH = 256


class _RetryAlone(Exception):  # a signal to the group commit, not an error
    """A batch hit a failure that cannot be pinned on one item: redo each
    item in its own transaction, so only the item at fault fails."""


def _encrypted_card_invalid() -> VaultError:
    return VaultError(
        "The encrypted card could not be decrypted: fetch the current encryption key "
        "and encrypt again.",
        code="encrypted_card_invalid",
    )


def _encrypted_card_reused() -> VaultError:
    return VaultError(
        "This encrypted card was already used: encrypt it again.",
        code="encrypted_card_reused",
    )


def _card_record(digits: str, exp_month: int, exp_year: int) -> bytes:
    """The sealed card record: byte for byte ``json.dumps`` of number, month and
    year (validated digits and ints, so nothing needs escaping)."""
    return (
        f'{{"number": "{digits}", "exp_month": {exp_month:d}, "exp_year": {exp_year:d}}}'.encode()
    )


def _card_context(token: str, account_id: str) -> bytes:
    return f"card|{token}|{account_id}".encode()


def _cvc_context(token: str, account_id: str) -> bytes:
    return f"cvc|{token}|{account_id}".encode()


def _tenant_context(account_id: str) -> bytes:
    return f"fingerprint-key|{account_id}".encode()


def _hpke_context(key_id: str) -> bytes:
    return f"hpke|{key_id}".encode()


_INSERTS: dict[type, Any] = {}


def _insert_stmt(model: type) -> Any:
    """A cached Core INSERT for ``model``'s table."""
    stmt = _INSERTS.get(model)
    if stmt is None:
        stmt = _INSERTS[model] = insert(model.__table__)  # type: ignore[attr-defined]
    return stmt


def _insert(model: type, **values: Any) -> tuple[Any, dict[str, Any]]:
    """A cached Core INSERT for ``model``'s table and its parameters."""
    return _insert_stmt(model), values


def _scrub(answer: dict[str, Any], number: str) -> dict[str, Any]:
    """The acquirer's answer as relayed to the gateway, with the card number
    masked wherever an acquirer might have echoed it (with or without spaces
    or dashes between the digits)."""
    if not number:
        return answer
    text = json.dumps(answer)
    pattern = "[ -]?".join(re.escape(d) for d in number)
    if not re.search(pattern, text):
        return answer
    shown = (
        number[:6] + "*" * (len(number) - 10) + number[-4:]
        if len(number) >= 15
        else "*" * (len(number) - 4) + number[-4:]
    )
    masked = re.sub(pattern, shown, text)
    scrubbed: dict[str, Any] = json.loads(masked)
    return scrubbed


def _wrapped(version: int | None, blob: bytes | None) -> WrappedKey:
    if version is None or blob is None:
        raise DecryptionError("record is shredded")
    return WrappedKey(kek_version=version, blob=blob)


class VaultService:
    def __init__(
        self,
        *,
        db: Database,
        kms: KeyManager,
        bins: BinTable,
        clock: Clock,
        policy: VaultPolicy,
        destinations: Mapping[str, str],
        http: httpx.Client | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.audit = audit
        self.db = db
        self.kms = kms
        self.bins = bins
        self.clock = clock
        self.policy = policy
        self.destinations = {k: v.rstrip("/") for k, v in destinations.items()}
        self._caches = _Caches()
        # Concurrent tokenizations share one durable transaction (see _commit_tokenizations).
        self._tokenizations: GroupCommit[_Tokenization] = GroupCommit(
            self._commit_tokenizations, max_batch=MAX_TOKENIZATION_BATCH
        )
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(
                policy.forward_timeout_seconds, connect=policy.forward_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()
        if self.audit is not None:
            self.audit.close()

    def _now(self) -> int:
        return int(self.clock.now())

    # ---------------------------------------------------------------- logging

    def _log(
        self,
        s: Session,
        *,
        actor: str,
        action: str,
        outcome: str = "success",
        token: str | None = None,
        account_id: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        # The tamper-evident entry first, durably, inside this transaction: if
        # it cannot be written the transaction rolls back and the action fails.
        self._audit(
            actor=actor,
            action=action,
            outcome=outcome,
            token=token,
            account_id=account_id,
            request_id=request_id,
            reason=reason,
            detail=detail,
        )
        # Core inserts, not ORM units of work: the hot path writes three or
        # four rows per tokenization and the ORM's bookkeeping dominated it.
        s.execute(
            *_insert(
                VaultAccessLog,
                at=self._now(),
                actor=actor,
                action=action,
                outcome=outcome,
                token=token,
                account_id=account_id,
                request_id=request_id,
                reason=reason,
                detail=detail,
            )
        )

    def _audit(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        token: str | None = None,
        account_id: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One entry in the vault's Merkle audit log (PCI DSS 10.2.1): card data
        access, operator actions, key changes, refusals. Raises a 503
        :class:`VaultError` when the entry cannot be made durable."""
        if self.audit is None:
            return
        self._audit_many(
            [
                self._audit_spec(
                    actor=actor,
                    action=action,
                    outcome=outcome,
                    token=token,
                    account_id=account_id,
                    request_id=request_id,
                    reason=reason,
                    detail=detail,
                )
            ]
        )

    def _audit_many(self, specs: Sequence[dict[str, Any]]) -> None:
        """Entries of :meth:`_audit_spec`, durable together in one audit commit.

        Raises a 503 :class:`VaultError` when they cannot be made durable, and
        :class:`_RetryAlone` when one of several entries is refused as such
        (then none was written; each must be tried alone)."""
        if self.audit is None or not specs:
            return
        try:
            if len(specs) == 1:
                self.audit.record(**specs[0])
            else:
                self.audit.record_many(specs)
        except AuditError as exc:
            if isinstance(exc, AuditEntryError) and len(specs) > 1:
                raise _RetryAlone from None
            log.exception(
                "vault audit log unavailable action=%s",
                ",".join(sorted({str(spec["event"]) for spec in specs})),
            )
            raise VaultError(
                "The audit log is unavailable; nothing was done.",
                status=503,
                code="audit_unavailable",
            ) from None

    @staticmethod
    def _audit_spec(
        *,
        actor: str,
        action: str,
        outcome: str,
        token: str | None = None,
        account_id: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> dict[str, Any]:
        """The arguments of ``AuditLog.record`` for one vault action."""
        if actor in ("gateway",):
            who = AuditActor.service(actor)
        elif actor == "system":
            who = AuditActor.system("paywarden-vault")
        elif actor == "unknown":
            who = AuditActor.anonymous()
        else:
            who = AuditActor.operator(actor[:128])
        return {
            "event": f"vault.{action}",
            "outcome": "success" if outcome == "success" else "failure",
            "actor": who,
            "origin": AuditOrigin(
                request_id=request_id or None,
                client_cert=actor[:128] if who.type in ("service", "operator") else None,
            ),
            "resource": AuditResource("card", token) if token else None,
            "account": account_id,
            "reason": reason,
            "details": {"result": outcome, "detail": (detail or "")[:200] or None},
        }

    def log_refusal(self, *, actor: str, action: str, request_id: str | None, detail: str) -> None:
        with self.db.write() as s:
            self._log(
                s,
                actor=actor,
                action=action,
                outcome="denied",
                request_id=request_id,
                detail=detail[:255],
            )

    # ------------------------------------------------------------ tenant keys

    def _tenant_key(self, account_id: str) -> bytes:
        with self._caches.lock:
            cached = self._caches.tenant_keys.get(account_id)
        if cached is not None:
            return cached.reveal()
        ctx = _tenant_context(account_id)
        with self.db.read() as s:
            row = s.get(VaultTenantKey, account_id)
            stored = (row.kek_version, row.wrapped_key) if row is not None else None
        if stored is None:
            key = aead.generate_key()
            wrapped = self.kms.wrap(key, context=ctx)
            with self.db.write() as s:
                # Another request may have created it meanwhile: keep the first.
                row = s.get(VaultTenantKey, account_id)
                if row is None:
                    s.add(
                        VaultTenantKey(
                            account_id=account_id,
                            created=self._now(),
                            kek_version=wrapped.kek_version,
                            wrapped_key=wrapped.blob,
                        )
                    )
                    stored = None
                else:
                    stored = (row.kek_version, row.wrapped_key)
            if stored is not None:
                key = self.kms.unwrap(WrappedKey(*stored), context=ctx)
        else:
            key = self.kms.unwrap(WrappedKey(*stored), context=ctx)
        with self._caches.lock:
            self._caches.tenant_keys[account_id] = SecretBytes(key, "fingerprint key")
        return key

    def _fingerprint(self, account_id: str, number: CardNumber) -> str:
        return self._fingerprint_digits(account_id, number.reveal())

    def _fingerprint_digits(self, account_id: str, digits: str) -> str:
        """The first 16 base32 characters of the HMAC, lower case. Those are the
        first 80 bits, exactly the base32 of the first 10 bytes: encoding only
        those gives the same string for a third of the work. The format must
        not change (stored fingerprints and fraud lists hold it)."""
        mac = aead.hmac_sha256(self._tenant_key(account_id), digits.encode())
        return base64.b32encode(mac[:10]).decode().lower()

    # ---------------------------------------------------------------- intake

    def tokenize(
        self,
        *,
        account_id: str,
        number: str,
        exp_month: Any,
        exp_year: Any,
        cvc: str | None,
        actor: str,
        request_id: str | None = None,
    ) -> CardMetadata:
        # One reading of the clock per tokenization.
        t = self.clock.now()
        card = self._parse(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc, t=t)
        return self._store(
            card, account_id=account_id, actor=actor, request_id=request_id, now=int(t)
        )

    def tokenize_encrypted(
        self,
        *,
        account_id: str,
        key_id: str,
        payload: str,
        actor: str,
        request_id: str | None = None,
    ) -> CardMetadata:
        # One reading of the clock per tokenization.
        t = self.clock.now()
        now = int(t)
        data, digest = self._open_hpke(key_id, payload, now=now)
        try:
            self._check_binding(data, account_id, now=now)
            card = self._parse(
                number=data.get("number"),
                exp_month=data.get("exp_month"),
                exp_year=data.get("exp_year"),
                cvc=data.get("cvc"),
                t=t,
            )
        finally:
            data.clear()
        return self._store(
            card,
            account_id=account_id,
            actor=actor,
            request_id=request_id,
            now=now,
            via="hpke",
            seen={"digest": digest, "expires_at": now + self.policy.hpke_payload_max_age_seconds},
            hpke_key=key_id,
        )

    def _check_binding(self, data: dict[str, Any], account_id: str, *, now: int) -> None:
        """The payload names the merchant it was sealed for and when."""
        account, iat = data.get("account"), data.get("iat")
        if (
            not isinstance(account, str)
            or not hmac.compare_digest(account.encode(), account_id.encode())
            or not isinstance(iat, int)
            or isinstance(iat, bool)
            or iat > now + self.policy.hpke_clock_skew_seconds
            or iat < now - self.policy.hpke_payload_max_age_seconds
        ):
            raise VaultError(
                "The encrypted card was made for another account or has expired: encrypt it "
                "again with a freshly fetched key.",
                code="encrypted_card_invalid",
            )

    def _parse(
        self, *, number: Any, exp_month: Any, exp_year: Any, cvc: Any, t: float
    ) -> CardInput:
        if not isinstance(number, str) or not number:
            raise CardValidationError(
                code="invalid_number",
                param="card[number]",
            )
        if cvc is not None and not isinstance(cvc, str):
            cvc = str(cvc) if isinstance(cvc, int) else ""
        now = datetime.fromtimestamp(t, tz=UTC)
        return parse_card(
            number=number,
            exp_month=exp_month if isinstance(exp_month, int | str) else "",
            exp_year=exp_year if isinstance(exp_year, int | str) else "",
            cvc=cvc,
            now=now,
        )

    def _store(
        self,
        card: CardInput,
        *,
        account_id: str,
        actor: str,
        request_id: str | None,
        now: int,
        via: str = "mtls",
        seen: dict[str, Any] | None = None,
        hpke_key: str | None = None,
    ) -> CardMetadata:
        """Seal the card, then commit its rows with its audit entry (in a group
        commit with concurrent tokenizations); returns once that is durable."""
        # The digits leave their wrapper once here, not once per attribute.
        digits = card.number.reveal()
        info = self.bins.lookup_prefix(digits[:8])
        fingerprint = self._fingerprint_digits(account_id, digits)
        token = new_id("vtok", 24)
        data_key = aead.generate_key()
        ctx = _card_context(token, account_id)
        wrapped = self.kms.wrap(data_key, context=ctx)
        ciphertext = aead.seal(
            data_key, _card_record(digits, card.exp_month, card.exp_year), aad=ctx
        )
        bin6, last4 = digits[:6], digits[-4:]
        cvc_row = None
        if card.cvc is not None:
            cvc_row = {
                "token": token,
                "ciphertext": aead.seal(
                    data_key, card.cvc.reveal().encode(), aad=_cvc_context(token, account_id)
                ),
                "expires_at": now + self.policy.cvc_ttl_seconds,
            }
        detail = f"via={via}"
        self._tokenizations.submit(
            _Tokenization(
                card={
                    "token": token,
                    "account_id": account_id,
                    "created": now,
                    "brand": card.brand,
                    "bin": bin6,
                    "last4": last4,
                    "exp_month": card.exp_month,
                    "exp_year": card.exp_year,
                    "fingerprint": fingerprint,
                    "kek_version": wrapped.kek_version,
                    "wrapped_key": wrapped.blob,
                    "ciphertext": ciphertext,
                },
                cvc=cvc_row,
                seen=seen,
                hpke_key=hpke_key,
                access={
                    "actor": actor,
                    "action": "tokenize",
                    "outcome": "success",
                    "token": token,
                    "account_id": account_id,
                    "request_id": request_id,
                    "reason": None,
                    "detail": detail,
                },
                audit=None
                if self.audit is None
                else self._audit_spec(
                    actor=actor,
                    action="tokenize",
                    outcome="success",
                    token=token,
                    account_id=account_id,
                    request_id=request_id,
                    detail=detail,
                ),
            )
        )
        return CardMetadata(
            token=token,
            brand=card.brand,
            bin=bin6 if len(digits) >= 15 else None,
            last4=last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            funding=info.funding,
            country=info.country,
            fingerprint=fingerprint,
        )

    def _commit_tokenizations(self, batch: Sequence[_Tokenization]) -> list[Outcome]:
        """The group commit's writer: one durable transaction for the batch.

        Per-item refusals (a replayed payload, a key no longer accepted) are
        decided inside the transaction, before any row of the batch is
        written, and fail only their item. A failure that one item may have
        caused but that surfaces for the batch (an audit entry refused as
        such, a unique-key violation) rolls the batch back; then each item is
        tried again in its own transaction, so only the item at fault fails.
        An audit log that cannot commit fails the whole batch: none of it may
        happen unaudited.
        """
        outcomes: list[Outcome] = [None] * len(batch)
        try:
            self._write_tokenizations(batch, outcomes)
        except VaultError as exc:  # the audit log is unavailable
            # One object per caller: a shared one would collect every caller's
            # frames (and their card numbers) in its traceback.
            status, code, message = exc.status, exc.code, str(exc)
            return [
                VaultError(message, status=status, code=code) if outcome is None else outcome
                for outcome in outcomes
            ]
        except (_RetryAlone, IntegrityError):
            # Only these can be one item's fault (an entry the audit log
            # refuses, a unique key taken meanwhile). Any other database error
            # fails the whole batch: retrying item by item would only repeat it.
            if len(batch) == 1:
                raise
            return [self._commit_alone(item) for item in batch]
        return outcomes

    def _commit_alone(self, item: _Tokenization) -> Outcome:
        outcome: list[Outcome] = [None]
        try:
            self._write_tokenizations([item], outcome)
        except Exception as exc:  # noqa: BLE001  # handed to this item's caller
            return exc
        return outcome[0]

    def _write_tokenizations(self, batch: Sequence[_Tokenization], outcomes: list[Outcome]) -> None:
        """Write the items ``outcomes`` does not refuse, in one transaction:
        replay digests, cards, CVCs, then the audit entries (durable before
        the commit, as in :meth:`_log`), then the access-log rows."""
        now = self._now()
        audited: list[dict[str, Any]] = []
        try:
            with self.db.write() as s:
                accepted = self._admit(s, batch, outcomes, now)
                if not accepted:
                    return
                seen = [item.seen for item in accepted if item.seen is not None]
                if seen:
                    # The primary key holds the digest too: a concurrent writer
                    # elsewhere fails this transaction rather than replay.
                    s.execute(_insert_stmt(VaultHpkeSeen), seen)
                s.execute(_insert_stmt(VaultCard), [item.card for item in accepted])
                cvcs = [item.cvc for item in accepted if item.cvc is not None]
                if cvcs:
                    s.execute(_insert_stmt(VaultCvc), cvcs)
                specs = [item.audit for item in accepted if item.audit is not None]
                self._audit_many(specs)
                audited = specs
                s.execute(
                    _insert_stmt(VaultAccessLog), [{"at": now, **item.access} for item in accepted]
                )
        except Exception:
            if audited:
                self._audit_not_stored(audited)
            raise

    def _audit_not_stored(self, specs: Sequence[dict[str, Any]]) -> None:
        """The entries were durable before the vault's own transaction, which
        then failed: say so in the log, so "tokenize success" is not the last
        word on cards that were never stored. Best effort: the caller's error
        stands whatever happens here."""
        try:
            self._audit_many(
                [
                    {
                        **spec,
                        "outcome": "failure",
                        "reason": "not stored: the vault's transaction failed after this entry",
                    }
                    for spec in specs
                ]
            )
        except (VaultError, _RetryAlone):
            log.error("could not record that %d audited tokenizations were not stored", len(specs))

    def _admit(
        self, s: Session, batch: Sequence[_Tokenization], outcomes: list[Outcome], now: int
    ) -> list[_Tokenization]:
        """The items that may be written; a refusal for each other one in ``outcomes``.

        HPKE items need their key still accepted (read here, in the write
        transaction, so a rotation or a sweep by another process counts) and
        a payload digest never seen before, in the database or earlier in
        this batch: one use per encrypted payload, atomically with its record.
        """
        keys = {item.hpke_key for item in batch if item.hpke_key is not None}
        usable: set[str] = set()
        if keys:
            for key_id, accept_until, private_len in s.execute(
                select(
                    VaultHpkeKey.id,
                    VaultHpkeKey.accept_until,
                    func.length(VaultHpkeKey.wrapped_private_key),
                ).where(VaultHpkeKey.id.in_(keys))
            ):
                if private_len and (accept_until is None or accept_until > now):
                    usable.add(key_id)
            if keys - usable:
                # Retired or destroyed elsewhere: this process stops using them now.
                self._caches.drop_hpke(keys - usable)
        digests = [item.seen["digest"] for item in batch if item.seen is not None]
        used: set[str] = set()
        if digests:
            used.update(
                s.scalars(select(VaultHpkeSeen.digest).where(VaultHpkeSeen.digest.in_(digests)))
            )
        accepted = []
        for i, item in enumerate(batch):
            if outcomes[i] is not None:
                continue
            if item.hpke_key is not None and item.hpke_key not in usable:
                outcomes[i] = _encrypted_card_invalid()
                continue
            if item.seen is not None:
                digest = item.seen["digest"]
                if digest in used:
                    outcomes[i] = _encrypted_card_reused()
                    continue
                used.add(digest)
            accepted.append(item)
        return accepted

    def fingerprint(
        self, *, account_id: str, number: str, actor: str, request_id: str | None = None
    ) -> str:
        try:
            parsed = CardNumber(number)
        except ValueError:
            raise CardValidationError(
                code="invalid_number",
                param="card[number]",
            ) from None
        fp = self._fingerprint(account_id, parsed)
        with self.db.write() as s:
            self._log(
                s,
                actor=actor,
                action="fingerprint",
                account_id=account_id,
                request_id=request_id,
            )
        return fp

    # ------------------------------------------------------------------ HPKE

    def encryption_keys(self) -> list[dict[str, Any]]:
        """Public keys clients may encrypt to: the current one first."""
        self.ensure_hpke_key()
        now = self._now()
        with self.db.read() as s:
            rows = s.scalars(select(VaultHpkeKey).order_by(VaultHpkeKey.pk.desc())).all()
            out = []
            for r in rows:
                if r.offer_until is not None and r.offer_until <= now:
                    continue
                out.append(
                    {
                        "id": r.id,
                        "object": "encryption_key",
                        "suite": hpke.SUITE_NAME,
                        "public_key": base64.urlsafe_b64encode(r.public_key).rstrip(b"=").decode(),
                        "created": r.created,
                        "expires_at": r.offer_until,
                    }
                )
        return out

    def ensure_hpke_key(self) -> None:
        """Create the first key, or rotate when the current one's period is over."""
        now = self._now()
        with self.db.read() as s:
            current = s.scalars(select(VaultHpkeKey).order_by(VaultHpkeKey.pk.desc())).first()
            due = current is None or (
                current.offer_until is None
                and current.created + self.policy.hpke_cryptoperiod_seconds <= now
            )
        if due:
            self.rotate_hpke(actor="system", reason="cryptoperiod")

    def rotate_hpke(self, *, actor: str, reason: str | None = None) -> str:
        private, public = hpke.generate_keypair()
        key_id = new_id("ek", 16)
        wrapped = self.kms.wrap(private, context=_hpke_context(key_id))
        now = self._now()
        with self.db.write() as s:
            # Older keys stop being offered now and stop being accepted after
            # the overlap, so a page that fetched the old key can still pay.
            s.execute(
                update(VaultHpkeKey)
                .where(VaultHpkeKey.offer_until.is_(None))
                .values(offer_until=now, accept_until=now + self.policy.hpke_overlap_seconds)
            )
            s.add(
                VaultHpkeKey(
                    id=key_id,
                    created=now,
                    public_key=public,
                    kek_version=wrapped.kek_version,
                    wrapped_private_key=wrapped.blob,
                )
            )
            self._log(s, actor=actor, action="hpke_rotate", reason=reason, detail=key_id)
        # Cached acceptance windows of the older keys just changed.
        self._caches.drop_hpke()
        return key_id

    def _open_hpke(self, key_id: str, payload: str, *, now: int) -> tuple[dict[str, Any], str]:
        if not isinstance(key_id, str) or not isinstance(payload, str) or len(payload) > 8192:
            raise _encrypted_card_invalid()
        with self._caches.lock:
            key = self._caches.hpke_private.get(key_id)
            generation = self._caches.hpke_generation
        if key is not None and (
            (key.accept_until is not None and key.accept_until <= now)
            or now - key.loaded >= HPKE_KEY_RECHECK_SECONDS
        ):
            self._caches.drop_hpke([key_id])  # past its window, or due for a re-read
            with self._caches.lock:
                generation = self._caches.hpke_generation
            key = None
        if key is None:
            # First use of this key in this process: its row, read once. The
            # acceptance window is cached with the private key; rotate_hpke and
            # sweep drop the cache, and the write transaction reads the window
            # again (_admit), so the cache never widens it.
            with self.db.read() as s:
                row = s.execute(
                    select(
                        VaultHpkeKey.kek_version,
                        VaultHpkeKey.wrapped_private_key,
                        VaultHpkeKey.accept_until,
                    ).where(VaultHpkeKey.id == key_id)
                ).first()
            if row is None or not row.wrapped_private_key:
                raise _encrypted_card_invalid()
            if row.accept_until is not None and row.accept_until <= now:
                raise _encrypted_card_invalid()
            private = self.kms.unwrap(
                WrappedKey(row.kek_version, row.wrapped_private_key),
                context=_hpke_context(key_id),
            )
            key = _HpkeKey(hpke.PrivateKey(private), row.accept_until, now)
            with self._caches.lock:
                if self._caches.hpke_generation == generation:
                    self._caches.hpke_private[key_id] = key
        if key.accept_until is not None and key.accept_until <= now:
            raise _encrypted_card_invalid()
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            clear = hpke.open_from(key.private, raw, info=hpke.info_for(key_id))
            data = json.loads(clear)
        except (ValueError, DecryptionError):
            raise _encrypted_card_invalid() from None
        if not isinstance(data, dict):
            raise _encrypted_card_invalid()
        return data, hashlib.sha256(raw).hexdigest()

    # ------------------------------------------------------------- forwarding

    def _load(self, s: Session, token: str, account_id: str) -> VaultCard:
        row = s.scalar(
            select(VaultCard).where(VaultCard.token == token, VaultCard.account_id == account_id)
        )
        if row is None or row.shredded_at is not None:
            raise NotFound()
        return row

    def _open_card(self, row: VaultCard) -> tuple[bytes, dict[str, Any]]:
        ctx = _card_context(row.token, row.account_id)
        data_key = self.kms.unwrap(_wrapped(row.kek_version, row.wrapped_key), context=ctx)
        return data_key, json.loads(aead.open_sealed(data_key, row.ciphertext, aad=ctx))

    def forward(
        self,
        *,
        token: str,
        account_id: str,
        destination: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        actor: str,
        request_id: str | None = None,
    ) -> ForwardResult:
        """Send an authorization to an allow-listed acquirer with the card filled in.

        Raises :class:`VaultError` 502 (``destination_unavailable``: nothing was
        sent) or 504 (``destination_outcome_unknown``: it may have been acted on).
        """
        base = self.destinations.get(destination)
        if base is None:
            raise VaultError("Unknown forwarding destination.", status=403, code="destination")
        with self.db.read() as s:
            row = self._load(s, token, account_id)
            cvc_row = s.get(VaultCvc, token)
            cvc_blob = (
                cvc_row.ciphertext
                if cvc_row is not None and cvc_row.expires_at > self._now()
                else None
            )
        # The card leaves the vault here: its access is on the record first.
        self._audit(
            actor=actor,
            action="forward_begin",
            outcome="success",
            token=token,
            account_id=account_id,
            request_id=request_id,
            detail=f"destination={destination}",
        )
        data_key, clear = self._open_card(row)
        clear_number = str(clear["number"])
        card: dict[str, Any] = {
            "pan": clear["number"],
            "exp_month": clear["exp_month"],
            "exp_year": clear["exp_year"],
        }
        if cvc_blob is not None:
            card["cvc"] = aead.open_sealed(
                data_key, cvc_blob, aad=_cvc_context(token, account_id)
            ).decode()
        outbound = {k: v for k, v in body.items() if k != "card"}
        outbound["card"] = card
        send_headers = {k: v for k, v in headers.items() if k.lower() in _FORWARD_HEADERS}
        detail = f"destination={destination}"
        try:
            response = self._http.post(base + FORWARD_PATH, json=outbound, headers=send_headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            self._forward_logged(token, account_id, actor, request_id, "unavailable", detail)
            raise VaultError(
                "The destination could not be reached.",
                status=502,
                code="destination_unavailable",
            ) from None
        except httpx.HTTPError:
            self._forward_logged(token, account_id, actor, request_id, "unknown", detail)
            raise VaultError(
                "The destination did not answer; the outcome is unknown.",
                status=504,
                code="destination_outcome_unknown",
            ) from None
        finally:
            card.clear()
            clear.clear()
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        answer = _scrub(answer, clear_number)
        # The acquirer has processed an authorization: the CVC is never kept
        # after that (PCI DSS 3.3.1), whatever the result.
        self._forward_logged(
            token,
            account_id,
            actor,
            request_id,
            "success" if response.status_code < 500 else "error",
            f"{detail} status={response.status_code}",
            drop_cvc=response.status_code < 500,
        )
        return ForwardResult(response.status_code, answer)

    def _forward_logged(
        self,
        token: str,
        account_id: str,
        actor: str,
        request_id: str | None,
        outcome: str,
        detail: str,
        *,
        drop_cvc: bool = False,
    ) -> None:
        # The card has already gone out (its access was audited before, as
        # `forward_begin`): nothing here may undo the CVC's deletion or turn the
        # acquirer's answer into an error, so the outcome entry is best effort.
        with self.db.write() as s:
            if drop_cvc:
                cvc = s.get(VaultCvc, token)
                if cvc is not None:
                    s.delete(cvc)
            s.execute(
                update(VaultCard).where(VaultCard.token == token).values(last_used=self._now())
            )
        try:
            with self.db.write() as s:
                self._log(
                    s,
                    actor=actor,
                    action="forward",
                    outcome=outcome,
                    token=token,
                    account_id=account_id,
                    request_id=request_id,
                    detail=detail,
                )
        except VaultError:
            log.error("forward outcome not audited token=%s outcome=%s", token, outcome)

    # --------------------------------------------------------- reveal / shred

    def reveal(
        self,
        *,
        token: str,
        account_id: str | None,
        actor: str,
        reason: str,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        reason = (reason or "").strip()
        if len(reason) < 10:
            raise VaultError(
                "A reveal needs a stated reason of at least 10 characters.", code="reason_required"
            )
        with self.db.write() as s:
            q = select(VaultCard).where(VaultCard.token == token)
            if account_id:
                q = q.where(VaultCard.account_id == account_id)
            row = s.scalar(q)
            if row is None or row.shredded_at is not None:
                raise NotFound()
            # Logged in the same transaction, before the clear value is read.
            self._log(
                s,
                actor=actor,
                action="reveal",
                token=token,
                account_id=row.account_id,
                request_id=request_id,
                reason=reason[:500],
            )
            _, clear = self._open_card(row)
        return {
            "token": token,
            "number": clear["number"],
            "exp_month": clear["exp_month"],
            "exp_year": clear["exp_year"],
        }

    def shred(
        self,
        *,
        token: str,
        account_id: str,
        actor: str,
        reason: str,
        request_id: str | None = None,
    ) -> bool:
        """Destroy the card's data key. Its ciphertext stays, unreadable forever."""
        with self.db.write() as s:
            row = s.scalar(
                select(VaultCard).where(
                    VaultCard.token == token, VaultCard.account_id == account_id
                )
            )
            if row is None:
                raise NotFound()
            if row.shredded_at is not None:
                return False
            self._shred_row(s, row, reason)
            self._log(
                s,
                actor=actor,
                action="shred",
                token=token,
                account_id=account_id,
                request_id=request_id,
                reason=reason,
            )
        return True

    def _shred_row(self, s: Session, row: VaultCard, reason: str) -> None:
        row.wrapped_key = None
        row.kek_version = None
        row.shredded_at = self._now()
        row.shred_reason = reason[:32]
        cvc = s.get(VaultCvc, row.token)
        if cvc is not None:
            s.delete(cvc)

    def sweep(self, *, actor: str = "system") -> dict[str, int]:
        """Retention: drop expired CVCs; shred cards long past their expiry."""
        now = self._now()
        today = datetime.fromtimestamp(now, tz=UTC)
        horizon = today.year * 12 + today.month - 1
        grace_months = max(1, self.policy.retention_after_expiry_seconds // (30 * 86400))
        with self.db.write() as s:
            expired_cvcs = s.scalars(select(VaultCvc).where(VaultCvc.expires_at <= now)).all()
            for c in expired_cvcs:
                s.delete(c)
            s.execute(delete(VaultHpkeSeen).where(VaultHpkeSeen.expires_at <= now))
            # HPKE private keys past their overlap are destroyed: payloads
            # captured earlier can never be opened again.
            retired = s.scalars(
                select(VaultHpkeKey).where(
                    VaultHpkeKey.accept_until.is_not(None),
                    VaultHpkeKey.accept_until <= now,
                    VaultHpkeKey.wrapped_private_key != b"",
                )
            ).all()
            for h in retired:
                h.wrapped_private_key = b""
            self._caches.drop_hpke([h.id for h in retired])
            stale = s.scalars(
                select(VaultCard).where(
                    VaultCard.shredded_at.is_(None),
                    VaultCard.exp_year * 12 + VaultCard.exp_month - 1 + grace_months < horizon,
                )
            ).all()
            for row in stale:
                self._shred_row(s, row, "retention")
                self._log(
                    s,
                    actor=actor,
                    action="shred",
                    token=row.token,
                    account_id=row.account_id,
                    reason="retention",
                )
        return {
            "cvcs_dropped": len(expired_cvcs),
            "cards_shredded": len(stale),
            "hpke_keys_destroyed": len(retired),
        }

    # ---------------------------------------------------------------- KEKs

    def rotate_kek(self, *, actor: str, reason: str | None = None) -> int:
        version = self.kms.rotate()
        with self.db.write() as s:
            self._log(s, actor=actor, action="kek_rotate", reason=reason, detail=f"v{version}")
        return version

    def rewrap_batch(self, *, actor: str, limit: int = 500) -> dict[str, int]:
        """Rewrap up to ``limit`` records to the current KEK version.

        Idempotent and resumable: it always picks records still below the
        current version, so an interrupted run continues where it stopped.
        Data keys never change, so payments running meanwhile are unaffected.
        """
        current = self.kms.current_version()
        done = 0
        if self.audit is not None:
            # The audit log's sealed signing keys move to the new KEK too, so
            # retiring the old version never locks the log out of its keys.
            done += self.audit.reseal_keys()
        with self.db.read() as s:
            cards = s.execute(
                select(VaultCard.pk, VaultCard.token, VaultCard.account_id, VaultCard.kek_version)
                .where(VaultCard.kek_version < current)
                .order_by(VaultCard.pk)
                .limit(limit)
            ).all()
            tenants = s.execute(
                select(VaultTenantKey.account_id).where(VaultTenantKey.kek_version < current)
            ).all()
            hpke_rows = s.execute(
                select(VaultHpkeKey.id).where(VaultHpkeKey.kek_version < current)
            ).all()
        for pk, token, account_id, _ in cards:
            ctx = _card_context(token, account_id)
            with self.db.write() as s:
                row = s.get(VaultCard, pk)
                if row is None or row.wrapped_key is None or row.kek_version is None:
                    continue  # shredded meanwhile
                new = self.kms.rewrap(_wrapped(row.kek_version, row.wrapped_key), context=ctx)
                row.kek_version, row.wrapped_key = new.kek_version, new.blob
            done += 1
        for (account_id,) in tenants:
            with self.db.write() as s:
                t = s.get(VaultTenantKey, account_id)
                if t is None:
                    continue
                new = self.kms.rewrap(
                    WrappedKey(t.kek_version, t.wrapped_key), context=_tenant_context(account_id)
                )
                t.kek_version, t.wrapped_key = new.kek_version, new.blob
            done += 1
        for (key_id,) in hpke_rows:
            with self.db.write() as s:
                h = s.scalar(select(VaultHpkeKey).where(VaultHpkeKey.id == key_id))
                if h is None:
                    continue
                new = self.kms.rewrap(
                    WrappedKey(h.kek_version, h.wrapped_private_key),
                    context=_hpke_context(key_id),
                )
                h.kek_version, h.wrapped_private_key = new.kek_version, new.blob
            done += 1
        remaining = self.records_below(current)
        if done:
            with self.db.write() as s:
                self._log(
                    s,
                    actor=actor,
                    action="rewrap",
                    detail=f"to=v{current} rewrapped={done} remaining={remaining}",
                )
        return {"rewrapped": done, "remaining": remaining, "version": current}

    def records_below(self, version: int) -> int:
        with self.db.read() as s:
            return int(
                (s.scalar(select(func.count()).where(VaultCard.kek_version < version)) or 0)
                + (s.scalar(select(func.count()).where(VaultTenantKey.kek_version < version)) or 0)
                + (s.scalar(select(func.count()).where(VaultHpkeKey.kek_version < version)) or 0)
            )

    def retire_below(self, *, version: int, actor: str) -> None:
        """Set the minimum decryption version; refused while records still need
        an older version (that would shred them by accident)."""
        left = self.records_below(version)
        if left:
            raise VaultError(
                f"{left} records are still wrapped below v{version}; run rewrap first.",
                status=409,
                code="rewrap_required",
            )
        self.kms.set_min_decryption_version(version)
        with self.db.write() as s:
            self._log(s, actor=actor, action="kek_retire", detail=f"min_decryption=v{version}")

    def key_status(self) -> dict[str, Any]:
        """Which keys protect what, and when each was rotated (for auditors)."""
        now = self._now()
        with self.db.read() as s:
            per_version: dict[int, dict[str, int]] = {}
            for table, col, name in (
                (VaultCard, VaultCard.kek_version, "cards"),
                (VaultTenantKey, VaultTenantKey.kek_version, "fingerprint_keys"),
                (VaultHpkeKey, VaultHpkeKey.kek_version, "hpke_keys"),
            ):
                for version, count in s.execute(
                    select(col, func.count()).select_from(table).group_by(col)
                ).all():
                    if version is None:
                        continue
                    per_version.setdefault(int(version), {})[name] = int(count)
            shredded = s.scalar(select(func.count()).where(VaultCard.shredded_at.is_not(None)))
            hpke_rows = s.scalars(select(VaultHpkeKey).order_by(VaultHpkeKey.pk.desc())).all()
            hpke_keys = [
                {
                    "id": h.id,
                    "created": h.created,
                    "offered_until": h.offer_until,
                    "accepted_until": h.accept_until,
                    "kek_version": h.kek_version,
                    "rotate_due": h.created + self.policy.hpke_cryptoperiod_seconds,
                }
                for h in hpke_rows
            ]
        versions = self.kms.versions()
        current = self.kms.current_version()
        latest = max((v.created_at for v in versions), default=None)
        return {
            "kms_backend": self.kms.backend,
            "kek": {
                "current_version": current,
                "min_decryption_version": self.kms.min_decryption_version(),
                "cryptoperiod_seconds": self.policy.kek_cryptoperiod_seconds,
                "rotate_due": (
                    int(latest.timestamp()) + self.policy.kek_cryptoperiod_seconds
                    if latest
                    else None
                ),
                "overdue": bool(
                    latest and latest.timestamp() + self.policy.kek_cryptoperiod_seconds < now
                ),
                "versions": [
                    {
                        "version": v.version,
                        "created": int(v.created_at.timestamp()),
                        "retired": v.retired,
                        "protects": per_version.get(v.version, {}),
                    }
                    for v in versions
                ],
            },
            "cards_shredded": int(shredded or 0),
            "hpke_keys": hpke_keys,
        }

    def access_log(
        self, *, action: str | None = None, token: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        with self.db.read() as s:
            q = select(VaultAccessLog).order_by(VaultAccessLog.pk.desc()).limit(min(limit, 1000))
            if action:
                q = q.where(VaultAccessLog.action == action)
            if token:
                q = q.where(VaultAccessLog.token == token)
            return [
                {
                    "at": r.at,
                    "actor": r.actor,
                    "action": r.action,
                    "outcome": r.outcome,
                    "token": r.token,
                    "account_id": r.account_id,
                    "request_id": r.request_id,
                    "reason": r.reason,
                    "detail": r.detail,
                }
                for r in s.scalars(q).all()
            ]
