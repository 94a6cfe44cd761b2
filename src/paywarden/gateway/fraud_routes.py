"""Fraud-engine administration over the API: Stripe's Radar value lists and
value list items (the SDK's ``client.v1.radar.value_lists``), and Paywarden's
versioned rules (``/v1/paywarden/fraud/rules``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paywarden.core.errors import InvalidRequestError
from paywarden.core.ids import new_id
from paywarden.fraud import admin, reviews
from paywarden.fraud.models import FraudRule, Review, ValueList, ValueListItem
from paywarden.fraud.rules_api import RULE_ACTIONS, check_rule
from paywarden.http.api import Call, Endpoint
from paywarden.http.params import EXPAND, PAGINATION, Param, merge_metadata
from paywarden.listing import list_response

if TYPE_CHECKING:
    from paywarden.gateway.container import Gateway

RESOURCE = "radar"

LIST_CREATE: dict[str, Param] = {
    "alias": Param("str", required=True, max_length=100),
    "name": Param("str", required=True, max_length=100),
    "item_type": Param("enum", choices=admin.ITEM_TYPES),
    "metadata": Param("metadata"),
    **EXPAND,
}
LIST_UPDATE: dict[str, Param] = {
    "alias": Param("str", max_length=100),
    "name": Param("str", max_length=100),
    "metadata": Param("metadata"),
    **EXPAND,
}
ITEM_CREATE: dict[str, Param] = {
    "value_list": Param("id", required=True),
    "value": Param("str", required=True, max_length=800),
    **EXPAND,
}
RULE_CREATE: dict[str, Param] = {
    "rule": Param("str", required=True, max_length=1000),
    "mode": Param("enum", choices=("active", "shadow")),
    "reason": Param("str", required=True, max_length=500),
    **EXPAND,
}
DEVICE_SESSION: dict[str, Param] = {
    "signals": Param(
        "dict",
        required=True,
        fields={
            "screen": Param("str", max_length=32),
            "color_depth": Param("int", min=0, max=128),
            "timezone": Param("str", max_length=64),
            "languages": Param("list", item=Param("str", max_length=35), max_items=10),
            "platform": Param("str", max_length=64),
            "hardware_concurrency": Param("int", min=0, max=4096),
            "device_memory": Param("str", max_length=8),
            "max_touch_points": Param("int", min=0, max=64),
            "canvas_hash": Param("str", max_length=64),
            "webgl_renderer": Param("str", max_length=200),
        },
    ),
}
RULE_UPDATE: dict[str, Param] = {
    "rule": Param("str", max_length=1000),
    "mode": Param("enum", choices=("active", "shadow")),
    "enabled": Param("bool"),
    "reason": Param("str", required=True, max_length=500),
    **EXPAND,
}


def _now(gw: Gateway) -> int:
    return int(gw.clock.now())


def _actor(call: Call) -> str:
    return f"api_key:{call.auth.key_id}"


def _alias(value: str) -> str:
    if not value.replace("_", "").isalnum() or not value[:1].isalpha():
        raise InvalidRequestError(
            "Invalid alias: letters, digits and underscores, starting with a letter.",
            param="alias",
        )
    return value


# ------------------------------------------------------------------ value lists
def list_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.recovered_id:
        return list_retrieve(gw, call, {}, call.recovered_id)
    with gw.db.write() as s:
        vl = admin.create_list(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            now=_now(gw),
            actor=_actor(call),
            alias=_alias(v["alias"]),
            name=v["name"],
            item_type=v.get("item_type") or "string",
            metadata=merge_metadata({}, v.get("metadata")),
        )
        call.remember(s, vl.id)
        return admin.render_list(s, vl)


def list_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        vl = admin.get_list(s, account_id=call.account_id, livemode=call.livemode, list_id=id)
        return admin.render_list(s, vl)


def list_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        vl = admin.get_list(s, account_id=call.account_id, livemode=call.livemode, list_id=id)
        if v.get("alias"):
            alias = _alias(v["alias"])
            if admin.alias_taken(
                s, account_id=vl.account_id, livemode=vl.livemode, alias=alias, except_id=vl.id
            ):
                raise InvalidRequestError(
                    f"A value list with the alias '{alias}' already exists.",
                    param="alias",
                    code="resource_already_exists",
                )
            vl.alias = alias
        if v.get("name"):
            vl.name = v["name"]
        if "metadata" in v:
            vl.metadata_ = merge_metadata(vl.metadata_, v["metadata"])
        return admin.render_list(s, vl)


def list_delete(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        vl = admin.get_list(s, account_id=call.account_id, livemode=call.livemode, list_id=id)
        admin.delete_list(s, vl)
        return {"id": id, "object": "radar.value_list", "deleted": True}


def list_list(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    filters: list[Any] = []
    if v.get("alias"):
        filters.append(ValueList.alias == v["alias"])
    if v.get("contains"):
        filters.append(
            ValueList.id.in_(
                admin.lists_containing(
                    v["contains"], account_id=call.account_id, livemode=call.livemode
                )
            )
        )
    with gw.db.read() as s:
        return list_response(
            s,
            ValueList,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="radar.value_list",
            url="/v1/radar/value_lists",
            render=lambda vl: admin.render_list(s, vl),
            filters=filters,
        )


def item_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.recovered_id:
        return item_retrieve(gw, call, {}, call.recovered_id)
    with gw.db.write() as s:
        vl = admin.get_list(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            list_id=v["value_list"],
            param="value_list",
        )
        item = admin.add_item(s, vl=vl, value=v["value"], now=_now(gw), actor=_actor(call))
        call.remember(s, item.id)
        return admin.render_item(item)


def item_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        item = admin.get_item(s, account_id=call.account_id, livemode=call.livemode, item_id=id)
        return admin.render_item(item)


def item_delete(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        item = admin.get_item(s, account_id=call.account_id, livemode=call.livemode, item_id=id)
        s.delete(item)
        return {"id": id, "object": "radar.value_list_item", "deleted": True}


def item_list(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    with gw.db.read() as s:
        vl = admin.get_list(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            list_id=v["value_list"],
            param="value_list",
        )
        filters: list[Any] = [ValueListItem.value_list_id == vl.id]
        if v.get("value"):
            # The forms the list's items are stored and matched in.
            filters.append(ValueListItem.value.in_(admin.match_keys(vl.item_type, v["value"])))
        return list_response(
            s,
            ValueListItem,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="radar.value_list_item",
            url="/v1/radar/value_list_items",
            render=admin.render_item,
            filters=filters,
        )


# ------------------------------------------------------------------------ rules
def rule_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.recovered_id:
        return rule_retrieve(gw, call, {}, call.recovered_id)
    now = _now(gw)
    with gw.db.write() as s:
        if admin.count_rules(s, account_id=call.account_id, livemode=call.livemode) >= (
            admin.MAX_RULES
        ):
            raise InvalidRequestError(f"At most {admin.MAX_RULES} rules may be enabled.")
        lists = admin.known_list_aliases(s, account_id=call.account_id, livemode=call.livemode)
        action = check_rule(v["rule"], known_lists=lists)
        rule = FraudRule(
            id=new_id("rule", 20),
            account_id=call.account_id,
            livemode=call.livemode,
            created=now,
            updated=now,
            action=action,
            source=v["rule"].strip(),
            mode=v.get("mode") or "active",
            enabled=True,
            version=1,
        )
        s.add(rule)
        s.flush()
        admin.record_change(
            s, rule, now=now, actor=_actor(call), reason=v["reason"], change="created"
        )
        call.remember(s, rule.id)
        return admin.render_rule(s, rule)


def rule_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        rule = admin.get_rule(s, account_id=call.account_id, livemode=call.livemode, rule_id=id)
        return admin.render_rule(s, rule)


def rule_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    now = _now(gw)
    with gw.db.write() as s:
        rule = admin.get_rule(s, account_id=call.account_id, livemode=call.livemode, rule_id=id)
        changed = False
        if v.get("rule") and v["rule"].strip() != rule.source:
            lists = admin.known_list_aliases(s, account_id=call.account_id, livemode=call.livemode)
            rule.action = check_rule(v["rule"], known_lists=lists)
            rule.source = v["rule"].strip()
            changed = True
        if v.get("mode") and v["mode"] != rule.mode:
            rule.mode = v["mode"]
            changed = True
        if v.get("enabled") is not None and v["enabled"] != rule.enabled:
            rule.enabled = v["enabled"]
            changed = True
        if changed and rule.enabled:
            # Checked again on every change that leaves it enabled: a list it
            # names may have been deleted while it was disabled.
            lists = admin.known_list_aliases(s, account_id=call.account_id, livemode=call.livemode)
            check_rule(rule.source, known_lists=lists)
        if changed:
            rule.version += 1
            rule.updated = now
            admin.record_change(
                s,
                rule,
                now=now,
                actor=_actor(call),
                reason=v["reason"],
                change="updated" if rule.enabled else "disabled",
            )
        return admin.render_rule(s, rule)


def rule_delete(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    """Disables the rule; it and its history stay for the record."""
    reason = v.get("reason") or "deleted through the API"
    return rule_update(gw, call, {"enabled": False, "reason": reason}, id)


def rule_list(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    with gw.db.read() as s:
        return list_response(
            s,
            FraudRule,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="rule",
            url="/v1/paywarden/fraud/rules",
            render=lambda r: admin.render_rule(s, r, history=False),
        )


# ---------------------------------------------------------------- devices
def device_session(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """A signed device token for a checkout page's stable device signals
    (publishable key); merchants pass it on confirm for the fraud engine."""
    if gw.device_tokens is None:
        raise InvalidRequestError("Device tokens are not configured.")
    now = _now(gw)
    token = gw.device_tokens.issue(v["signals"], now=now)
    return {
        "object": "paywarden.device_session",
        "token": token,
        "created": now,
        "expires_at": now + gw.device_tokens.max_age_seconds,
        "livemode": call.livemode,
    }


# ------------------------------------------------------------------ reviews
def review_list(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """Open reviews, newest first (Stripe lists only open ones)."""
    with gw.db.read() as s:
        return list_response(
            s,
            Review,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="review",
            url="/v1/reviews",
            render=reviews.render_review,
            filters=[Review.open.is_(True)],
        )


def review_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        return reviews.render_review(
            reviews.get(s, account_id=call.account_id, livemode=call.livemode, review_id=id)
        )


def review_approve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    return gw.payments.approve_review(
        account_id=call.account_id,
        livemode=call.livemode,
        review_id=id,
        actor=_actor(call),
        request_id=call.request_id,
        idempotency_key=call.idempotency_key,
    )


REPORT_CREATE: dict[str, Param] = {
    "charge": Param("id", required=True),
    "label": Param("enum", required=True, choices=("fraudulent", "safe", "dispute")),
}


def report_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """A merchant's report on a charge; fraud feeds the engine and the block lists."""
    return gw.payments.report(
        account_id=call.account_id,
        livemode=call.livemode,
        charge_id=v["charge"],
        label=v["label"],
        actor=_actor(call),
        request_id=call.request_id,
    )


def endpoints() -> list[Endpoint]:
    r, w = False, True
    items_list = {**PAGINATION, "value_list": Param("id", required=True), "value": Param("str")}
    lists_list = {**PAGINATION, "alias": Param("str", max_length=100), "contains": Param("str")}
    rule_delete_spec = {"reason": Param("str", max_length=500)}
    return [
        Endpoint("POST", "/v1/radar/value_lists", list_create, LIST_CREATE, RESOURCE, w),
        Endpoint("GET", "/v1/radar/value_lists", list_list, lists_list, RESOURCE, r),
        Endpoint("GET", "/v1/radar/value_lists/{id}", list_retrieve, EXPAND, RESOURCE, r),
        Endpoint("POST", "/v1/radar/value_lists/{id}", list_update, LIST_UPDATE, RESOURCE, w),
        Endpoint("DELETE", "/v1/radar/value_lists/{id}", list_delete, {}, RESOURCE, w),
        Endpoint("POST", "/v1/radar/value_list_items", item_create, ITEM_CREATE, RESOURCE, w),
        Endpoint("GET", "/v1/radar/value_list_items", item_list, items_list, RESOURCE, r),
        Endpoint("GET", "/v1/radar/value_list_items/{id}", item_retrieve, EXPAND, RESOURCE, r),
        Endpoint("DELETE", "/v1/radar/value_list_items/{id}", item_delete, {}, RESOURCE, w),
        Endpoint(
            "POST",
            "/v1/paywarden/device_sessions",
            device_session,
            DEVICE_SESSION,
            RESOURCE,
            w,
            publishable=True,
        ),
        Endpoint("GET", "/v1/reviews", review_list, PAGINATION, RESOURCE, r),
        Endpoint("GET", "/v1/reviews/{id}", review_retrieve, EXPAND, RESOURCE, r),
        Endpoint("POST", "/v1/reviews/{id}/approve", review_approve, EXPAND, RESOURCE, w),
        Endpoint("POST", "/v1/paywarden/fraud/reports", report_create, REPORT_CREATE, RESOURCE, w),
        Endpoint("POST", "/v1/paywarden/fraud/rules", rule_create, RULE_CREATE, RESOURCE, w),
        Endpoint("GET", "/v1/paywarden/fraud/rules", rule_list, PAGINATION, RESOURCE, r),
        Endpoint("GET", "/v1/paywarden/fraud/rules/{id}", rule_retrieve, EXPAND, RESOURCE, r),
        Endpoint("POST", "/v1/paywarden/fraud/rules/{id}", rule_update, RULE_UPDATE, RESOURCE, w),
        Endpoint(
            "DELETE", "/v1/paywarden/fraud/rules/{id}", rule_delete, rule_delete_spec, RESOURCE, w
        ),
    ]


__all__ = ["RULE_ACTIONS", "endpoints"]
