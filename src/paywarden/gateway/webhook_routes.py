"""/v1/webhook_endpoints: Stripe's endpoints plus a Paywarden secret roll."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paywarden.gateway.routes import lister
from paywarden.http.api import Call, Endpoint
from paywarden.http.params import EXPAND, PAGINATION, Param
from paywarden.webhooks import service as webhooks
from paywarden.webhooks.models import WebhookEndpoint
from paywarden.webhooks.secretbox import SecretBox

if TYPE_CHECKING:
    from paywarden.gateway.container import Gateway

EVENTS = Param("list", item=Param("str", max_length=100), max_items=100)
CREATE: dict[str, Param] = {
    "url": Param("str", required=True, max_length=2048),
    "enabled_events": Param(
        "list", required=True, item=Param("str", max_length=100), max_items=100
    ),
    "description": Param("str", max_length=5000, nullable=True),
    "metadata": Param("metadata"),
    "api_version": Param("str", max_length=32),
    "connect": Param("bool"),
    **EXPAND,
}
UPDATE: dict[str, Param] = {
    "url": Param("str", max_length=2048),
    "enabled_events": EVENTS,
    "description": Param("str", max_length=5000, nullable=True),
    "metadata": Param("metadata"),
    "disabled": Param("bool"),
    **EXPAND,
}
ROLL: dict[str, Param] = {"expires_in_seconds": Param("int", min=0, max=7 * 24 * 3600)}


def _box(gw: Gateway) -> SecretBox:
    return SecretBox(gw.secrets.storage_key)


def _metadata(v: dict[str, Any]) -> dict[str, str] | None:
    md = v.get("metadata")
    # The validator marks deletions as None; the service takes Stripe's "".
    return None if md is None else {k: ("" if val is None else val) for k, val in md.items()}


def create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.recovered_id:
        # A crashed earlier request created it; its caller never saw the secret.
        with gw.db.read() as s:
            ep = _get(gw, s, call, call.recovered_id)
            return webhooks.render_endpoint(ep, secret=_box(gw).decrypt(ep.secret_ciphertext))
    with gw.db.write() as s:
        ep, secret = webhooks.create_endpoint(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            url=v["url"],
            enabled_events=v["enabled_events"],
            description=v.get("description"),
            metadata=_metadata(v),
            api_version=v.get("api_version"),
            box=_box(gw),
            now=int(gw.clock.now()),
            allow_private_urls=gw.settings.webhook_allow_private_urls,
        )
        call.remember(s, ep.id)
        return webhooks.render_endpoint(ep, secret=secret)


def _get(gw: Gateway, s: Any, call: Call, id: str) -> WebhookEndpoint:
    return webhooks.get_endpoint(
        s, account_id=call.account_id, livemode=call.livemode, endpoint_id=id
    )


def retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        return webhooks.render_endpoint(_get(gw, s, call, id))


def update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        ep = webhooks.update_endpoint(
            s,
            endpoint=_get(gw, s, call, id),
            url=v.get("url"),
            enabled_events=v.get("enabled_events"),
            description=v.get("description"),
            metadata=_metadata(v),
            disabled=v.get("disabled"),
            allow_private_urls=gw.settings.webhook_allow_private_urls,
        )
        return webhooks.render_endpoint(ep)


def delete(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        return webhooks.delete_endpoint(s, endpoint=_get(gw, s, call, id))


def roll(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        ep = _get(gw, s, call, id)
        secret = webhooks.roll_secret(
            s,
            endpoint=ep,
            box=_box(gw),
            now=int(gw.clock.now()),
            expires_in_seconds=v.get("expires_in_seconds", 24 * 3600),
        )
        return webhooks.render_endpoint(ep, secret=secret)


list_ = lister(
    WebhookEndpoint,
    kind="webhook_endpoint",
    url="/v1/webhook_endpoints",
    render=webhooks.render_endpoint,
    by={},
    always=(WebhookEndpoint.deleted.is_(False),),
)


def endpoints() -> list[Endpoint]:
    res = "webhook_endpoints"
    return [
        Endpoint("POST", "/v1/webhook_endpoints", create, CREATE, res, True),
        Endpoint("GET", "/v1/webhook_endpoints", list_, PAGINATION, res, False),
        Endpoint("GET", "/v1/webhook_endpoints/{id}", retrieve, EXPAND, res, False),
        Endpoint("POST", "/v1/webhook_endpoints/{id}", update, UPDATE, res, True),
        Endpoint("DELETE", "/v1/webhook_endpoints/{id}", delete, {}, res, True),
        Endpoint("POST", "/v1/webhook_endpoints/{id}/roll_secret", roll, ROLL, res, True),
    ]
