"""Managing what the fraud engine decides with: Radar-style value lists
(``/v1/radar/value_lists``, ``/v1/radar/value_list_items``, Stripe's shapes) and
versioned rules (``/v1/paywarden/fraud/rules``). Every rule change is recorded
with who made it, when, and why."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, false, func, or_, select
from sqlalchemy.orm import Session

from paywarden.core.errors import InvalidRequestError
from paywarden.core.ids import new_id
from paywarden.fraud.models import FraudRule, FraudRuleChange, ValueList, ValueListItem
from paywarden.fraud.velocity import normalize_email
from paywarden.listing import get_owned

# Stripe's value list item types.
ITEM_TYPES = (
    "card_bin",
    "card_fingerprint",
    "case_sensitive_string",
    "country",
    "customer_id",
    "email",
    "ip_address",
    "string",
)
MAX_ITEMS_PER_LIST = 100_000
MAX_RULES = 200


# ------------------------------------------------------------------ value lists
# How each item type compares, like Radar: text is case-insensitive except in a
# `case_sensitive_string` list. Both sides go through the same function: an
# item when it is stored (`normalize_item`), a payment's value when it is
# matched (`match_keys`).
#
# - string, card_bin: lowercased (`str.lower`, the form stored items have
#   always had).
# - card_fingerprint: lowercased. The gateway makes fingerprints in lower case
#   (hex in `payments.methods`, base32 in the vault), so folding loses nothing
#   and an item pasted in upper case still matches.
# - email: `normalize_email`, exactly what the engine does to a payment's
#   `:email:` (lowercased; for Gmail, dots and `+tag` dropped, googlemail.com
#   is gmail.com): one mailbox, one item.
# - ip_address: the canonical text of the address (IPv6 compressed, lower case).
# - country: the upper-case ISO code.
# - customer_id, case_sensitive_string: as given. Customer ids are base62, where
#   case tells ids apart (`cus_Ab…` != `cus_ab…`), and a payment's `:customer:`
#   is always the id exactly as the gateway made it and the API shows it.
_AS_GIVEN = frozenset({"case_sensitive_string", "customer_id"})
_LOWERED = frozenset({"string", "card_bin", "card_fingerprint"})


def _canonical_ip(value: str) -> str | None:
    if "%" in value:  # no IPv6 zones: they would never match a payment's address
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def normalize_item(item_type: str, value: str) -> str:
    """A value as stored: the form a payment's value is matched in (see
    :func:`match_keys`), validated for the types that have a shape."""
    v = value.strip()
    if not v or len(v) > 800:
        raise InvalidRequestError("Invalid value: must be 1 to 800 characters.", param="value")
    if item_type in _AS_GIVEN:
        return v
    if item_type == "ip_address":
        ip = _canonical_ip(v)
        if ip is None:
            raise InvalidRequestError(
                "Invalid value: not an IP address.", param="value", code="parameter_invalid"
            )
        return ip
    if item_type == "country":
        if len(v) != 2 or not v.isalpha():
            raise InvalidRequestError(
                "Invalid value: a country is a two-letter ISO code.", param="value"
            )
        return v.upper()
    if item_type == "card_bin" and (not v.isdigit() or not 6 <= len(v) <= 8):
        raise InvalidRequestError("Invalid value: a BIN is 6 to 8 digits.", param="value")
    if item_type == "email":
        if "@" not in v:
            raise InvalidRequestError("Invalid value: not an email address.", param="value")
        return normalize_email(v)
    return v.lower()


def match_keys(item_type: str, value: str) -> tuple[str, ...]:
    """The stored item values that a payment's ``value`` matches in a list of
    ``item_type``: its normalized form (as :func:`normalize_item` stores it)
    and, for card fingerprints, also the value as it is, which items stored
    before fingerprints were lowercased hold. Empty when the value cannot be
    an item of that type. Never raises."""
    v = value.strip()
    if not v or len(v) > 800:
        return ()
    if item_type in _AS_GIVEN:
        return (v,)
    if item_type in _LOWERED:
        folded = v.lower()
        return (folded, v) if item_type == "card_fingerprint" and folded != v else (folded,)
    if item_type == "email":
        return (normalize_email(v),) if "@" in v else ()
    if item_type == "country":
        return (v.upper(),) if len(v) == 2 and v.isalpha() else ()
    if item_type == "ip_address":
        ip = _canonical_ip(v) if (":" in v or v[0].isdigit()) else None
        return (ip,) if ip is not None else ()
    return (v,)  # an item type from the future: exact


def create_list(
    s: Session,
    *,
    account_id: str,
    livemode: bool,
    now: int,
    actor: str,
    alias: str,
    name: str,
    item_type: str,
    metadata: dict[str, str],
) -> ValueList:
    if alias_taken(s, account_id=account_id, livemode=livemode, alias=alias):
        raise InvalidRequestError(
            f"A value list with the alias '{alias}' already exists.",
            param="alias",
            code="resource_already_exists",
        )
    vl = ValueList(
        id=new_id("rsl", 24),
        account_id=account_id,
        livemode=livemode,
        created=now,
        alias=alias,
        name=name,
        item_type=item_type,
        created_by=actor,
        metadata_=metadata,
    )
    s.add(vl)
    s.flush()
    return vl


def alias_taken(
    s: Session, *, account_id: str, livemode: bool, alias: str, except_id: str | None = None
) -> bool:
    q = select(ValueList.id).where(
        ValueList.account_id == account_id,
        ValueList.livemode == livemode,
        ValueList.alias == alias,
    )
    if except_id:
        q = q.where(ValueList.id != except_id)
    return s.scalar(q) is not None


def get_list(
    s: Session, *, account_id: str, livemode: bool, list_id: str, param: str = "id"
) -> ValueList:
    return get_owned(
        s,
        ValueList,
        list_id,
        account_id=account_id,
        livemode=livemode,
        kind="radar.value_list",
        param=param,
    )


def delete_list(s: Session, vl: ValueList) -> None:
    """Delete a list and its items; refused while an enabled rule (active or
    shadow) names it, as Radar refuses: the rule would silently stop matching."""
    from paywarden.fraud.rules import parse_rule
    from paywarden.fraud.rules_ast import list_names
    from paywarden.fraud.rules_parser import RuleSyntaxError

    users = []
    for rule_id, _action, source, _shadow in active_rules(
        s, account_id=vl.account_id, livemode=vl.livemode
    ):
        if f"@{vl.alias}" not in source:
            continue  # cheap filter before parsing
        try:
            names = list_names(parse_rule(source.strip()).expr)
        except RuleSyntaxError:
            names = frozenset({vl.alias})  # unreadable: keep the list, to be safe
        if vl.alias in names:
            users.append(rule_id)
    if users:
        raise InvalidRequestError(
            f"The value list @{vl.alias} is used by rule(s) {', '.join(users)}; edit or "
            "disable them before deleting it.",
            param="id",
            code="resource_in_use",
        )
    s.execute(delete(ValueListItem).where(ValueListItem.value_list_id == vl.id))
    s.delete(vl)


def add_item(s: Session, *, vl: ValueList, value: str, now: int, actor: str) -> ValueListItem:
    normalized = normalize_item(vl.item_type, value)
    count = s.scalar(select(func.count()).where(ValueListItem.value_list_id == vl.id))
    if (count or 0) >= MAX_ITEMS_PER_LIST:
        raise InvalidRequestError(
            f"A value list holds at most {MAX_ITEMS_PER_LIST} items.", param="value_list"
        )
    existing = s.scalar(
        select(ValueListItem).where(
            ValueListItem.value_list_id == vl.id, ValueListItem.value == normalized
        )
    )
    if existing is not None:
        raise InvalidRequestError(
            "This value is already in the list.", param="value", code="resource_already_exists"
        )
    item = ValueListItem(
        id=new_id("rsli", 24),
        account_id=vl.account_id,
        livemode=vl.livemode,
        created=now,
        value_list_id=vl.id,
        value=normalized,
        created_by=actor,
    )
    s.add(item)
    s.flush()
    return item


def get_item(s: Session, *, account_id: str, livemode: bool, item_id: str) -> ValueListItem:
    return get_owned(
        s,
        ValueListItem,
        item_id,
        account_id=account_id,
        livemode=livemode,
        kind="radar.value_list_item",
    )


def lists_containing(value: str, *, account_id: str, livemode: bool) -> Select[Any]:
    """The ids of a tenant's lists holding ``value``, each compared the way its
    item type matches (:func:`match_keys`); for the ``contains`` filter."""
    per_type = [
        and_(ValueList.item_type == t, ValueListItem.value.in_(keys))
        for t in ITEM_TYPES
        if (keys := match_keys(t, value))
    ]
    return (
        select(ValueListItem.value_list_id)
        .join(ValueList, ValueList.id == ValueListItem.value_list_id)
        .where(
            ValueListItem.account_id == account_id,
            ValueListItem.livemode == livemode,
            or_(false(), *per_type),
        )
    )


def lookup_forms(value: str) -> tuple[str, ...]:
    """Every form :func:`match_keys` gives ``value`` for some item type (a
    superset, fast: list_hits runs on every payment)."""
    v = value.strip()
    if not v or len(v) > 800:
        return ()
    folded = v.lower()
    forms = [v] if folded == v else [v, folded]
    if "@" in v:
        forms.append(normalize_email(v))
    elif len(v) == 2 and v.isalpha():
        forms.append(v.upper())
    elif ":" in v or ("." in v and v[0].isdigit()):
        ip = _canonical_ip(v)
        if ip is not None:
            forms.append(ip)
    return tuple(forms)


# Built once: one statement object keeps SQLAlchemy's compiled-statement cache
# warm (building a select per payment cost more than running it). The values
# go in a fixed number of slots, padded with NULL (which matches nothing): an
# "expanding" IN would be re-rendered on every execution. Both run on the
# session's connection, not through the ORM's execution layer. A payment has
# about fifteen text attributes, some with a second form to look up (see
# `list_hits`): 32 slots answer it in one query.
_LIST_HIT_SLOTS = 32
_LIST_HITS = (
    select(ValueList.alias, ValueList.item_type, ValueListItem.value)
    .join(ValueListItem, ValueListItem.value_list_id == ValueList.id)
    .where(
        ValueList.account_id == bindparam("account_id"),
        ValueList.livemode == bindparam("livemode"),
        ValueListItem.value.in_([bindparam(f"v{i}") for i in range(_LIST_HIT_SLOTS)]),
    )
)
_ACTIVE_RULES = (
    select(FraudRule.id, FraudRule.action, FraudRule.source, FraudRule.mode)
    .where(
        FraudRule.account_id == bindparam("account_id"),
        FraudRule.livemode == bindparam("livemode"),
        FraudRule.enabled.is_(True),
    )
    .order_by(FraudRule.pk)
)


def list_hits(
    s: Session, *, account_id: str, livemode: bool, values: Collection[str]
) -> dict[str, set[str]]:
    """Which of ``values`` each of a tenant's lists holds, by alias.

    What the rules engine needs for one payment: a membership test of the
    payment's own values, answered by the (list, value) index, whatever the
    size of the lists (up to 100,000 items each). A value is in a list when
    one of its :func:`match_keys` for the list's item type is an item, so
    ``cus_GLJjilAbc`` is in a ``string`` list holding ``cus_gljjilabc`` and
    ``johndoe@gmail.com`` in an ``email`` list holding ``John.Doe+x@gmail.com``.
    The sets hold the payment's values as given, which is what the rules
    compare. The item types of the lists are known only from the rows, so
    every form a value could be stored in is looked up at once."""
    out: dict[str, set[str]] = {}
    if not values:
        return out
    forms: dict[str, set[str]] = {}  # a stored form -> the values that have it
    for value in set(values):
        for key in lookup_forms(value):
            forms.setdefault(key, set()).add(value)
    conn, wanted = s.connection(), sorted(forms)
    for start in range(0, len(wanted), _LIST_HIT_SLOTS):
        chunk = wanted[start : start + _LIST_HIT_SLOTS]
        params: dict[str, Any] = {"account_id": account_id, "livemode": livemode}
        params.update(
            {f"v{i}": chunk[i] if i < len(chunk) else None for i in range(_LIST_HIT_SLOTS)}
        )
        for alias, item_type, stored in conn.execute(_LIST_HITS, params):
            hits = [v for v in forms.get(stored, ()) if stored in match_keys(item_type, v)]
            if hits:
                out.setdefault(alias, set()).update(hits)
    return out


def render_item(item: ValueListItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "object": "radar.value_list_item",
        "created": item.created,
        "created_by": item.created_by,
        "livemode": item.livemode,
        "value": item.value,
        "value_list": item.value_list_id,
    }


def render_list(s: Session, vl: ValueList) -> dict[str, Any]:
    items = s.scalars(
        select(ValueListItem)
        .where(ValueListItem.value_list_id == vl.id)
        .order_by(ValueListItem.pk.desc())
        .limit(11)
    ).all()
    return {
        "id": vl.id,
        "object": "radar.value_list",
        "alias": vl.alias,
        "created": vl.created,
        "created_by": vl.created_by,
        "item_type": vl.item_type,
        "list_items": {
            "object": "list",
            "data": [render_item(i) for i in items[:10]],
            "has_more": len(items) > 10,
            "url": f"/v1/radar/value_list_items?value_list={vl.id}",
        },
        "livemode": vl.livemode,
        "metadata": vl.metadata_,
        "name": vl.name,
    }


# ------------------------------------------------------------------------ rules
def record_change(
    s: Session, rule: FraudRule, *, now: int, actor: str, reason: str, change: str
) -> None:
    s.add(
        FraudRuleChange(
            rule_id=rule.id,
            account_id=rule.account_id,
            livemode=rule.livemode,
            version=rule.version,
            at=now,
            actor=actor,
            reason=reason,
            change=change,
            source=rule.source,
            mode=rule.mode,
            enabled=rule.enabled,
        )
    )


def count_rules(s: Session, *, account_id: str, livemode: bool) -> int:
    return int(
        s.scalar(
            select(func.count()).where(
                FraudRule.account_id == account_id,
                FraudRule.livemode == livemode,
                FraudRule.enabled.is_(True),
            )
        )
        or 0
    )


def get_rule(s: Session, *, account_id: str, livemode: bool, rule_id: str) -> FraudRule:
    return get_owned(s, FraudRule, rule_id, account_id=account_id, livemode=livemode, kind="rule")


def active_rules(
    s: Session, *, account_id: str, livemode: bool
) -> list[tuple[str, str, str, bool]]:
    """(id, action, source, shadow) of every enabled rule, oldest first."""
    rows = s.connection().execute(_ACTIVE_RULES, {"account_id": account_id, "livemode": livemode})
    return [(r[0], r[1], r[2], r[3] == "shadow") for r in rows]


def render_rule(s: Session, rule: FraudRule, *, history: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rule.id,
        "object": "paywarden.fraud_rule",
        "action": rule.action,
        "rule": rule.source,
        "mode": rule.mode,
        "enabled": rule.enabled,
        "version": rule.version,
        "created": rule.created,
        "updated": rule.updated,
        "livemode": rule.livemode,
    }
    if history:
        changes = s.scalars(
            select(FraudRuleChange)
            .where(FraudRuleChange.rule_id == rule.id)
            .order_by(FraudRuleChange.pk)
        ).all()
        body["history"] = [
            {
                "version": c.version,
                "at": c.at,
                "actor": c.actor,
                "reason": c.reason,
                "change": c.change,
                "rule": c.source,
                "mode": c.mode,
                "enabled": c.enabled,
            }
            for c in changes
        ]
    return body


def known_list_aliases(s: Session, *, account_id: str, livemode: bool) -> Collection[str]:
    return set(
        s.scalars(
            select(ValueList.alias).where(
                ValueList.account_id == account_id, ValueList.livemode == livemode
            )
        )
    )
