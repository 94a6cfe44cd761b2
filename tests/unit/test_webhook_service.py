"""Webhook endpoint service: validation, Stripe semantics, tenant isolation, secrets at rest."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

import paywarden.customers.models
import paywarden.events.models
import paywarden.idempotency.models
import paywarden.payments.models
import paywarden.tenancy.models  # noqa: F401 - register every table
from paywarden.core.errors import InvalidRequestError, ResourceMissingError
from paywarden.core.secrets import Secret
from paywarden.db import Base, Database
from paywarden.webhooks.event_types import EMITTED_EVENT_TYPES, EVENT_TYPES, subscribes_to
from paywarden.webhooks.models import WebhookEndpoint
from paywarden.webhooks.secretbox import SecretBox, SecretBoxError
from paywarden.webhooks.service import (
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    render_endpoint,
    roll_secret,
    signing_secrets,
    update_endpoint,
    validate_url,
)

NOW = 1_700_000_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    Base.metadata.create_all(database.write_engine)
    yield database
    database.dispose()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Secret(Fernet.generate_key().decode(), "webhook_secret_key"))


def create(session: Session, box: SecretBox, **kw: Any) -> tuple[WebhookEndpoint, str]:
    args: dict[str, Any] = {
        "account_id": "acct_A",
        "livemode": False,
        "url": "https://hooks.example.test/pw",
        "enabled_events": ["*"],
        "description": None,
        "metadata": None,
        "api_version": None,
        "box": box,
        "now": NOW,
        "allow_private_urls": True,
    }
    args.update(kw)
    return create_endpoint(session, **args)


# ------------------------------------------------------------------ create


def test_create_and_render(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, secret = create(
            s,
            box,
            enabled_events=["charge.succeeded", "charge.failed", "charge.succeeded"],
            description="orders",
            metadata={"team": "pay", "drop": ""},
            api_version="2024-06-20",
        )
    assert secret.startswith("whsec_")
    shown = render_endpoint(ep, secret=secret)
    assert shown == {
        "id": ep.id,
        "object": "webhook_endpoint",
        "api_version": "2024-06-20",
        "application": None,
        "created": NOW,
        "description": "orders",
        "enabled_events": ["charge.succeeded", "charge.failed"],
        "livemode": False,
        "metadata": {"team": "pay"},
        "status": "enabled",
        "url": "https://hooks.example.test/pw",
        "secret": secret,
    }
    assert ep.id.startswith("we_")
    assert "secret" not in render_endpoint(ep)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "example.com/hook",
        "http:///nohost",
        "https://user:pw@example.com/hook",
        "https://user@example.com/hook",
        "https://exa mple.com/hook",
        "https://example.com/\nhook",
        "https://example.com:99999/hook",
        "https://exämple.com/hook",
        "https://example.com/" + "a" * 2040,
    ],
)
def test_invalid_urls_rejected(db: Database, box: SecretBox, url: str) -> None:
    with db.write() as s, pytest.raises(InvalidRequestError) as err:
        create(s, box, url=url)
    assert err.value.param == "url"
    assert err.value.status == 400


def test_url_at_length_limit_accepted() -> None:
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert len(url) == 2048
    assert validate_url(url, allow_private_urls=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://127.9.9.9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_private_targets_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_url(url, allow_private_urls=False)
    assert err.value.param == "url"
    assert validate_url(url, allow_private_urls=True) == url


def test_public_literal_accepted_without_private() -> None:
    assert validate_url("https://8.8.8.8/hook", allow_private_urls=False)
    assert validate_url("https://[2606:4700::1111]:8443/hook", allow_private_urls=False)


def _fake_getaddrinfo(addresses: list[str]) -> Any:
    def fake(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return fake


def test_hostnames_resolved_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://hooks.merchant.test/pw"
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["93.184.216.34"]))
    assert validate_url(url, allow_private_urls=False) == url
    # Any private answer among the records refuses the host (DNS pointing inside).
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["93.184.216.34", "10.0.0.5"]))
    with pytest.raises(InvalidRequestError):
        validate_url(url, allow_private_urls=False)

    def unresolvable(*args: Any, **kw: Any) -> list[Any]:
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    with pytest.raises(InvalidRequestError, match="resolved"):
        validate_url(url, allow_private_urls=False)


def test_private_refused_on_create_and_update(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        with pytest.raises(InvalidRequestError):
            create(s, box, url="http://127.0.0.1/x", allow_private_urls=False)
        ep, _ = create(s, box, url="https://8.8.8.8/x", allow_private_urls=False)
        with pytest.raises(InvalidRequestError) as err:
            update_endpoint(s, endpoint=ep, url="http://10.0.0.1/", allow_private_urls=False)
        assert err.value.param == "url"
        assert ep.url == "https://8.8.8.8/x"


@pytest.mark.parametrize(
    ("events", "needle"),
    [
        ([], "non-empty"),
        ("*", "non-empty"),
        (["customer.created", "customer.exploded"], "customer.exploded"),
        (["payment_intent.*"], "payment_intent.*"),
        ([42], "<invalid>"),
    ],
)
def test_enabled_events_validated(db: Database, box: SecretBox, events: Any, needle: str) -> None:
    with db.write() as s, pytest.raises(InvalidRequestError) as err:
        create(s, box, enabled_events=events)
    assert err.value.param == "enabled_events"
    assert needle in err.value.message


def test_event_types_catalogue() -> None:
    assert EVENT_TYPES[0] == "*"
    assert "charge.refund.updated" in EMITTED_EVENT_TYPES
    assert "review.closed" in EMITTED_EVENT_TYPES
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES) == 26
    assert subscribes_to(["*"], "refund.failed")
    assert subscribes_to(["refund.failed"], "refund.failed")
    assert not subscribes_to(["refund.created"], "refund.failed")


def test_other_params_validated(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        with pytest.raises(InvalidRequestError) as err:
            create(s, box, description="x" * 5001)
        assert err.value.param == "description"
        with pytest.raises(InvalidRequestError) as err:
            create(s, box, api_version="yesterday")
        assert err.value.param == "api_version"
        with pytest.raises(InvalidRequestError) as err:
            create(s, box, metadata={"k": 1})
        assert err.value.param == "metadata[k]"
        with pytest.raises(InvalidRequestError) as err:
            create(s, box, metadata={"k" * 41: "v"})
        assert err.value.param == "metadata"
        with pytest.raises(InvalidRequestError):
            create(s, box, metadata={f"k{i}": "v" for i in range(51)})
        with pytest.raises(InvalidRequestError):
            create(s, box, metadata={"k": "v" * 501})


# ------------------------------------------------------------------ update


def test_metadata_merge_semantics(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, _ = create(s, box, metadata={"a": "1", "b": "2"})
        update_endpoint(s, endpoint=ep, metadata={"b": "", "c": "3"}, allow_private_urls=True)
        assert ep.metadata_ == {"a": "1", "c": "3"}
        update_endpoint(s, endpoint=ep, metadata={"a": "9"}, allow_private_urls=True)
        assert ep.metadata_ == {"a": "9", "c": "3"}
        update_endpoint(s, endpoint=ep, metadata={"gone": ""}, allow_private_urls=True)
        assert ep.metadata_ == {"a": "9", "c": "3"}
        update_endpoint(s, endpoint=ep, description="d", allow_private_urls=True)
        assert ep.metadata_ == {"a": "9", "c": "3"}  # untouched when not given
        update_endpoint(s, endpoint=ep, metadata="", allow_private_urls=True)
        assert ep.metadata_ == {}
        ep_id = ep.id
    with db.read() as s:
        stored = get_endpoint(s, account_id="acct_A", livemode=False, endpoint_id=ep_id)
        assert stored.metadata_ == {}
        assert stored.description == "d"


def test_update_fields_and_status(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, _ = create(s, box)
        update_endpoint(
            s,
            endpoint=ep,
            url="https://other.example.test/h",
            enabled_events=["refund.created"],
            description="new",
            disabled=True,
            allow_private_urls=True,
        )
        out = render_endpoint(ep)
        assert out["url"] == "https://other.example.test/h"
        assert out["enabled_events"] == ["refund.created"]
        assert out["description"] == "new"
        assert out["status"] == "disabled"
        update_endpoint(s, endpoint=ep, disabled=False, description="", allow_private_urls=True)
        assert render_endpoint(ep)["status"] == "enabled"
        assert render_endpoint(ep)["description"] is None
        with pytest.raises(InvalidRequestError):
            update_endpoint(s, endpoint=ep, enabled_events=[], allow_private_urls=True)
        assert ep.enabled_events == ["refund.created"]


# ------------------------------------------------------------ get / delete


def test_get_endpoint_isolated_by_account_and_mode(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, _ = create(s, box)
        ep_id = ep.id
    with db.read() as s:
        assert get_endpoint(s, account_id="acct_A", livemode=False, endpoint_id=ep_id).id == ep_id
        for account_id, livemode, eid in [
            ("acct_B", False, ep_id),
            ("acct_A", True, ep_id),
            ("acct_A", False, "we_doesnotexist"),
        ]:
            with pytest.raises(ResourceMissingError) as err:
                get_endpoint(s, account_id=account_id, livemode=livemode, endpoint_id=eid)
            assert err.value.status == 404
            assert err.value.code == "resource_missing"
            assert "webhook_endpoint" in err.value.message


def test_delete_endpoint(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, _ = create(s, box)
        ep_id = ep.id
        assert delete_endpoint(s, endpoint=ep) == {
            "id": ep_id,
            "object": "webhook_endpoint",
            "deleted": True,
        }
        with pytest.raises(ResourceMissingError):
            update_endpoint(s, endpoint=ep, description="x", allow_private_urls=True)
    with db.read() as s, pytest.raises(ResourceMissingError):
        get_endpoint(s, account_id="acct_A", livemode=False, endpoint_id=ep_id)


# --------------------------------------------------------------- secrets


def test_roll_secret_keeps_previous_until_expiry(db: Database, box: SecretBox) -> None:
    with db.write() as s:
        ep, first = create(s, box)
        assert signing_secrets(ep, box=box, now=NOW) == [first]
        second = roll_secret(s, endpoint=ep, box=box, now=NOW, expires_in_seconds=3600)
        assert second != first
        assert signing_secrets(ep, box=box, now=NOW + 3599) == [second, first]
        assert signing_secrets(ep, box=box, now=NOW + 3600) == [second]
        third = roll_secret(s, endpoint=ep, box=box, now=NOW + 10, expires_in_seconds=0)
        assert signing_secrets(ep, box=box, now=NOW + 10) == [third]
        for bad in (-1, 8 * 24 * 3600):
            with pytest.raises(InvalidRequestError) as err:
                roll_secret(s, endpoint=ep, box=box, now=NOW, expires_in_seconds=bad)
            assert err.value.param == "expires_in_seconds"
        assert signing_secrets(ep, box=box, now=NOW + 10) == [third]


def test_secrets_stored_encrypted(db: Database, box: SecretBox, tmp_path: Path) -> None:
    with db.write() as s:
        ep, secret = create(s, box)
        rolled = roll_secret(s, endpoint=ep, box=box, now=NOW, expires_in_seconds=60)
        ep_id = ep.id
    with db.read() as s:
        row = s.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id == ep_id)).one()
        assert box.decrypt(row.secret_ciphertext) == rolled
        assert row.previous_secret_ciphertext is not None
        assert box.decrypt(row.previous_secret_ciphertext) == secret
    db.dispose()
    files = list(tmp_path.glob("gateway.db*"))
    raw = b"".join(p.read_bytes() for p in files)
    assert ep_id.encode() in raw  # sanity: the row is in these bytes
    for clear in (secret, rolled):
        assert clear.encode() not in raw
        assert clear.split("_", 1)[1].encode() not in raw


def test_secretbox_rejects_wrong_key_and_bad_key(box: SecretBox) -> None:
    token = box.encrypt("whsec_abc")
    other = SecretBox(Secret(Fernet.generate_key().decode()))
    with pytest.raises(SecretBoxError):
        other.decrypt(token)
    with pytest.raises(SecretBoxError):
        box.decrypt("not-a-token")
    with pytest.raises(SecretBoxError):
        SecretBox(Secret("too-short"))
    assert "whsec" not in repr(box)
    assert box.decrypt(token) == "whsec_abc"


def test_pinned_target_connects_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from paywarden.core.errors import ParameterError
    from paywarden.webhooks.service import pinned_target

    answers = {"addr": "93.184.216.34"}

    def fake_getaddrinfo(host: str, port: int, *args: object, **kw: object) -> list[object]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["addr"], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    url, host_header, sni = pinned_target("https://hooks.example.com:8443/pw?x=1")
    assert url == "https://93.184.216.34:8443/pw?x=1"
    assert host_header == "hooks.example.com:8443"
    assert sni == "hooks.example.com"
    # DNS now answers with a private address (rebinding): refused at send time.
    answers["addr"] = "169.254.169.254"
    with pytest.raises(ParameterError):
        pinned_target("https://hooks.example.com/pw")
