"""Merchants and API keys: create, roll, revoke, authenticate."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from paywarden.core.errors import AuthenticationError
from paywarden.core.ids import new_id
from paywarden.core.secrets import Secret
from paywarden.tenancy.keys import generate_key, hash_key, hint, parse_key
from paywarden.tenancy.models import Account, ApiKey, SecurityEvent
from paywarden.tenancy.scopes import validate_scopes


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the tenant, the mode, the key and what it may do."""

    account_id: str
    livemode: bool
    key_id: str
    kind: str  # secret | publishable | restricted
    scopes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedKey:
    record_id: str
    kind: str
    livemode: bool
    secret: Secret  # shown once, never stored


def create_account(session: Session, *, name: str, email: str | None, now: int) -> Account:
    acct = Account(id=new_id("acct", 16), name=name, email=email, created=now, disabled=False)
    session.add(acct)
    session.flush()
    return acct


def get_account(session: Session, account_id: str) -> Account | None:
    return session.scalar(select(Account).where(Account.id == account_id))


def create_key(
    session: Session,
    *,
    account_id: str,
    kind: str,
    livemode: bool,
    pepper: Secret,
    now: int,
    name: str | None = None,
    scopes: dict[str, str] | None = None,
    expires_at: int | None = None,
) -> IssuedKey:
    if kind not in ("secret", "publishable", "restricted"):
        raise ValueError(f"unknown key kind {kind!r}")
    if kind == "restricted":
        scopes = validate_scopes(scopes or {})
        if not scopes:
            raise ValueError("a restricted key needs at least one scope")
    elif scopes:
        raise ValueError("only restricted keys carry scopes")
    raw = generate_key(kind, livemode)
    rec = ApiKey(
        id=new_id("key", 16),
        account_id=account_id,
        livemode=livemode,
        kind=kind,
        name=name,
        hint=hint(raw.reveal()),
        key_hash=hash_key(raw.reveal(), pepper),
        scopes=scopes or {},
        created=now,
        expires_at=expires_at,
        revoked_at=None,
        rolled_to=None,
        last_used=None,
    )
    session.add(rec)
    session.flush()
    return IssuedKey(record_id=rec.id, kind=kind, livemode=livemode, secret=raw)


def create_merchant(
    session: Session, *, name: str, email: str | None, pepper: Secret, now: int, key_name: str
) -> tuple[Account, IssuedKey, IssuedKey]:
    """A merchant with its first test-mode secret and publishable keys."""
    acct = create_account(session, name=name, email=email, now=now)
    keys = [
        create_key(
            session,
            account_id=acct.id,
            kind=kind,
            livemode=False,
            pepper=pepper,
            now=now,
            name=key_name,
        )
        for kind in ("secret", "publishable")
    ]
    return acct, keys[0], keys[1]


def list_keys(session: Session, *, account_id: str) -> list[ApiKey]:
    return list(
        session.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.pk))
    )


def _get_key(session: Session, account_id: str, key_id: str) -> ApiKey:
    rec = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id))
    if rec is None:
        raise LookupError(f"no key {key_id} for account {account_id}")
    return rec


def roll_key(
    session: Session,
    *,
    account_id: str,
    key_id: str,
    pepper: Secret,
    now: int,
    overlap_seconds: int,
) -> IssuedKey:
    """Issue a replacement; the old key keeps working for ``overlap_seconds``."""
    old = _get_key(session, account_id, key_id)
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise ValueError("cannot roll a revoked or expired key")
    new = create_key(
        session,
        account_id=account_id,
        kind=old.kind,
        livemode=old.livemode,
        pepper=pepper,
        now=now,
        name=old.name,
        scopes=old.scopes or None,
    )
    old.expires_at = now + max(0, overlap_seconds)
    old.rolled_to = new.record_id
    return new


def revoke_key(session: Session, *, account_id: str, key_id: str, now: int) -> ApiKey:
    rec = _get_key(session, account_id, key_id)
    if rec.revoked_at is None:
        rec.revoked_at = now
    return rec


def record_security_event(
    session: Session,
    *,
    kind: str,
    source: str,
    now: int,
    request_id: str | None,
    account_id: str | None = None,
    key_hint: str | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        SecurityEvent(
            created=now,
            kind=kind,
            source=source[:64],
            request_id=request_id,
            account_id=account_id,
            key_hint=key_hint,
            detail=(detail or "")[:255] or None,
        )
    )


def invalid_key_error(raw: str) -> AuthenticationError:
    return AuthenticationError(f"Invalid API Key provided: {hint(raw)}", code="api_key_invalid")


_AUTH_QUERY = (
    select(
        ApiKey.id,
        ApiKey.account_id,
        ApiKey.livemode,
        ApiKey.kind,
        ApiKey.hint,
        ApiKey.scopes,
        ApiKey.revoked_at,
        ApiKey.expires_at,
        Account.disabled,
    )
    .join(Account, Account.id == ApiKey.account_id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)


def authenticate(
    conn: Connection | Session, *, raw_key: str, pepper: Secret, now: int
) -> AuthContext:
    """Resolve a presented key. Every failure raises the same opaque error.

    Runs on every request, so it is one indexed Core query with no ORM objects.
    """
    parsed = parse_key(raw_key)
    if parsed is None:
        raise invalid_key_error(raw_key)
    row = conn.execute(_AUTH_QUERY, {"key_hash": hash_key(raw_key, pepper)}).first()
    if row is None:
        raise invalid_key_error(raw_key)
    key_id, account_id, livemode, kind, key_hint, scopes, revoked_at, expires_at, disabled = row
    # Belt and braces: the stored kind/mode must match what the key says.
    if kind != parsed.kind or livemode != parsed.livemode:
        raise invalid_key_error(raw_key)
    if revoked_at is not None:
        raise AuthenticationError(
            f"This API key has been revoked: {key_hint}", code="api_key_revoked"
        )
    if expires_at is not None and expires_at <= now:
        raise AuthenticationError(f"This API key has expired: {key_hint}", code="api_key_expired")
    if disabled:
        raise AuthenticationError("This account is disabled.", code="account_disabled")
    return AuthContext(
        account_id=account_id,
        livemode=livemode,
        key_id=key_id,
        kind=kind,
        scopes=dict(scopes or {}),
    )
