"""Webhook endpoints: validation and persistence (Stripe's ``webhook_endpoint`` object).

Functions here take the caller's SQLAlchemy session and never commit. Signing
secrets are stored only as Fernet ciphertext; the clear secret is returned on
create and on roll, and nowhere else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from paywarden.core.errors import ParameterError, ResourceMissingError
from paywarden.core.ids import new_id
from paywarden.webhooks.event_types import is_valid_event_type
from paywarden.webhooks.models import WebhookEndpoint
from paywarden.webhooks.secretbox import SecretBox
from paywarden.webhooks.signing import generate_secret

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 5000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_ROLL_EXPIRY_SECONDS = 7 * 24 * 3600
_API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z_]{1,16})?$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ``metadata=""`` clears every key, as in Stripe's API.
MetadataParam = Mapping[str, str] | Literal[""]


# --------------------------------------------------------------------------- url


def _is_public(ip: IpAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _is_public(mapped)
        if ip.teredo is not None:
            return all(_is_public(part) for part in ip.teredo)
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    out: list[IpAddress] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        try:
            out.append(ipaddress.ip_address(addr))
        except ValueError:
            continue
    return out


def validate_url(url: object, *, allow_private_urls: bool) -> str:
    """Return ``url`` if it is an acceptable webhook target, else raise (param ``url``).

    With ``allow_private_urls`` false the host, and every address it resolves to,
    must be globally routable: no loopback, private, link-local, CGNAT, multicast
    or reserved targets (SSRF guard).
    """

    def bad(message: str) -> ParameterError:
        return ParameterError(message, param="url")

    if not isinstance(url, str) or not url:
        raise bad("Invalid URL: a URL is required.")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"Invalid URL: must be at most {MAX_URL_LENGTH} characters.")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise bad("Invalid URL: must not contain whitespace, control or non-ASCII characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad("Invalid URL: could not be parsed.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise bad("Invalid URL: must use the http or https scheme.")
    if "@" in parts.netloc:
        raise bad("Invalid URL: must not contain a username or password.")
    host = parts.hostname
    if not host:
        raise bad("Invalid URL: a host is required.")
    if allow_private_urls:
        return url
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    addresses = _resolve(host, port)
    if not addresses:
        raise bad("Invalid URL: the host could not be resolved.")
    if not all(_is_public(ip) for ip in addresses):
        raise bad("Invalid URL: must not point to a loopback, private or link-local address.")
    return url


def pinned_target(url: str) -> tuple[str, str, str]:
    """Resolve ``url`` once, check every address is public, and return
    ``(url with the host replaced by one checked address, Host header, TLS
    server name)``. Connecting to the checked address closes the DNS-rebinding
    gap between the check and the connection."""
    validate_url(url, allow_private_urls=False)
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = _resolve(host, port)
    if not addresses or not all(_is_public(ip) for ip in addresses):
        raise ParameterError("Invalid URL: must not point to a private address.", param="url")
    ip = addresses[0]
    literal = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return urlunsplit(parts._replace(netloc=netloc)), parts.netloc, host


# ----------------------------------------------------------------------- params


def _validate_enabled_events(value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ParameterError(
            "enabled_events must be a non-empty list of event types.", param="enabled_events"
        )
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not is_valid_event_type(item):
            shown = item if isinstance(item, str) and len(item) <= 64 else "<invalid>"
            raise ParameterError(
                f"Invalid event type in enabled_events: '{shown}'.", param="enabled_events"
            )
        if item not in out:
            out.append(item)
    return out


def _validate_description(value: object) -> str | None:
    if not isinstance(value, str):
        raise ParameterError("description must be a string.", param="description")
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise ParameterError(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters.",
            param="description",
        )
    return value or None


def _validate_api_version(value: object) -> str:
    if not isinstance(value, str) or not _API_VERSION_RE.fullmatch(value):
        raise ParameterError("Invalid api_version.", param="api_version")
    return value


def _merge_metadata(current: Mapping[str, Any], update: object) -> dict[str, Any]:
    """Stripe's semantics: keys set to ``""`` are removed; ``""`` alone clears all."""
    if update == "":
        return {}
    if not isinstance(update, Mapping):
        raise ParameterError("metadata must be an object.", param="metadata")
    merged = dict(current)
    for key, value in update.items():
        if not isinstance(key, str) or not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise ParameterError(
                f"Metadata keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters.",
                param="metadata",
            )
        if not isinstance(value, str):
            raise ParameterError("Metadata values must be strings.", param=f"metadata[{key}]")
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise ParameterError(
                f"Metadata values must be at most {MAX_METADATA_VALUE_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_KEYS:
        raise ParameterError(
            f"Metadata can have at most {MAX_METADATA_KEYS} keys.", param="metadata"
        )
    return merged


# ---------------------------------------------------------------------- service


def create_endpoint(
    session: Session,
    *,
    account_id: str,
    livemode: bool,
    url: str,
    enabled_events: Sequence[str],
    description: str | None,
    metadata: MetadataParam | None,
    api_version: str | None,
    box: SecretBox,
    now: int,
    allow_private_urls: bool,
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; returns it and its clear signing secret (shown once)."""
    clean_url = validate_url(url, allow_private_urls=allow_private_urls)
    events = _validate_enabled_events(enabled_events)
    desc = None if description is None else _validate_description(description)
    meta = {} if metadata is None else _merge_metadata({}, metadata)
    version = None if api_version is None else _validate_api_version(api_version)
    secret = generate_secret()
    ep = WebhookEndpoint(
        id=new_id("we"),
        account_id=account_id,
        livemode=livemode,
        created=int(now),
        url=clean_url,
        enabled_events=events,
        status="enabled",
        description=desc,
        api_version=version,
        metadata_=meta,
        secret_ciphertext=box.encrypt(secret),
        previous_secret_ciphertext=None,
        previous_secret_expires=None,
        deleted=False,
    )
    session.add(ep)
    session.flush()
    return ep, secret


def get_endpoint(
    session: Session, *, account_id: str, livemode: bool, endpoint_id: str
) -> WebhookEndpoint:
    """The caller's endpoint, or ``ResourceMissingError`` (also for other tenants/modes)."""
    ep = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.account_id == account_id,
            WebhookEndpoint.livemode == livemode,
            WebhookEndpoint.deleted.is_(False),
        )
    ).one_or_none()
    if ep is None:
        raise ResourceMissingError("webhook_endpoint", endpoint_id)
    return ep


def update_endpoint(
    session: Session,
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    enabled_events: Sequence[str] | None = None,
    description: str | None = None,
    metadata: MetadataParam | None = None,
    disabled: bool | None = None,
    allow_private_urls: bool,
) -> WebhookEndpoint:
    """Apply the given changes (``None`` = unchanged); validates everything first."""
    if endpoint.deleted:
        raise ResourceMissingError("webhook_endpoint", endpoint.id)
    new_url = None if url is None else validate_url(url, allow_private_urls=allow_private_urls)
    new_events = None if enabled_events is None else _validate_enabled_events(enabled_events)
    new_desc = None if description is None else _validate_description(description)
    new_meta = None if metadata is None else _merge_metadata(endpoint.metadata_, metadata)
    if disabled is not None and not isinstance(disabled, bool):
        raise ParameterError("disabled must be a boolean.", param="disabled")

    if new_url is not None:
        endpoint.url = new_url
    if new_events is not None:
        endpoint.enabled_events = new_events
    if description is not None:
        endpoint.description = new_desc
    if new_meta is not None:
        endpoint.metadata_ = new_meta
    if disabled is not None:
        endpoint.status = "disabled" if disabled else "enabled"
    session.flush()
    return endpoint


def delete_endpoint(session: Session, *, endpoint: WebhookEndpoint) -> dict[str, Any]:
    """Soft-delete; pending deliveries to it are failed by the dispatcher, unsent."""
    endpoint.deleted = True
    endpoint.status = "disabled"
    session.flush()
    return {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}


def roll_secret(
    session: Session,
    *,
    endpoint: WebhookEndpoint,
    box: SecretBox,
    now: int,
    expires_in_seconds: int,
) -> str:
    """Replace the signing secret and return the new one in clear.

    The current secret becomes the previous one and keeps signing (alongside the
    new one) for ``expires_in_seconds``; 0 drops it at once. A still-valid older
    previous secret is dropped.
    """
    if (
        isinstance(expires_in_seconds, bool)
        or not isinstance(expires_in_seconds, int)
        or not 0 <= expires_in_seconds <= MAX_ROLL_EXPIRY_SECONDS
    ):
        raise ParameterError(
            f"expires_in_seconds must be an integer from 0 to {MAX_ROLL_EXPIRY_SECONDS}.",
            param="expires_in_seconds",
        )
    secret = generate_secret()
    if expires_in_seconds > 0:
        endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
        endpoint.previous_secret_expires = int(now) + expires_in_seconds
    else:
        endpoint.previous_secret_ciphertext = None
        endpoint.previous_secret_expires = None
    endpoint.secret_ciphertext = box.encrypt(secret)
    session.flush()
    return secret


def signing_secrets(endpoint: WebhookEndpoint, *, box: SecretBox, now: float) -> list[str]:
    """The secrets that sign a delivery now: current first, then an unexpired previous."""
    out = [box.decrypt(endpoint.secret_ciphertext)]
    if (
        endpoint.previous_secret_ciphertext is not None
        and endpoint.previous_secret_expires is not None
        and now < endpoint.previous_secret_expires
    ):
        out.append(box.decrypt(endpoint.previous_secret_ciphertext))
    return out


def render_endpoint(ep: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ep.id,
        "object": "webhook_endpoint",
        "api_version": ep.api_version,
        "application": None,
        "created": ep.created,
        "description": ep.description,
        "enabled_events": list(ep.enabled_events),
        "livemode": ep.livemode,
        "metadata": dict(ep.metadata_),
        "status": ep.status,
        "url": ep.url,
    }
    if secret is not None:
        out["secret"] = secret
    return out
