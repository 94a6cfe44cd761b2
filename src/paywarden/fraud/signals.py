"""Request signals for the fraud engine: IP country from an offline database,
and device fingerprints from a signed device token plus the request's context.

**IP to country.** :class:`IpGeo` reads a MaxMind DB file. The default is the
GeoLite2 file shipped by the ``maxminddb-geolite2`` package (old, but offline);
``PAYWARDEN_FRAUD_GEOIP_PATH`` points at a current one. Nothing is ever looked
up over the network. Private, loopback and malformed addresses have no country.

**Devices.** A checkout page collects *stable* device signals (screen size,
colour depth, time zone, languages, platform, hardware concurrency, device
memory, touch points, a canvas/WebGL rendering hash) and sends them to the
gateway, which returns a signed device token (:class:`DeviceTokens`): an HMAC
over a canonical hash of those signals and the issue time. The merchant passes
the token on confirm. Server-side, :func:`device_fingerprint` combines the
token's device hash with what the request itself shows — the user agent's
browser family and OS and the primary accept-language — so a token replayed
from another browser yields another device. The IP network (/24 or /48) can be
added (``include_network``), but is not by default: a phone changes networks
all day, and the IP address is counted as an entity of its own (BENCHMARKS.md
has the collision and split rates of both).
Volatile signals (exact browser version, battery, window size) are left out on
purpose: they split one device into many.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The signals that identify a device and survive browser updates and restarts.
STABLE_SIGNALS = (
    "screen",  # "1920x1080"
    "color_depth",
    "timezone",  # IANA name
    "languages",  # list
    "platform",
    "hardware_concurrency",
    "device_memory",
    "max_touch_points",
    "canvas_hash",
    "webgl_renderer",
)
TOKEN_PREFIX = "pwdev_"  # noqa: S105 - a public prefix, not a secret
_MAX_SIGNAL_LENGTH = 200


class IpGeo:
    """IP address → ISO 3166-1 alpha-2 country, from an offline MaxMind DB."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    @classmethod
    def open(cls, path: Path | None = None) -> IpGeo:
        import maxminddb

        if path is None:
            from geolite2 import geolite2  # the packaged (old) GeoLite2 City file

            # A reader of our own: the package's shared one would be closed for
            # every user in the process when one of them closes.
            path = Path(geolite2.filename)
        return cls(maxminddb.open_database(str(path)))

    def country(self, ip: str | None) -> str | None:
        if not ip:
            return None
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if not addr.is_global:
            return None
        try:
            record = self._reader.get(str(addr))
        except (ValueError, OSError):
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            iso = (record.get(key) or {}).get("iso_code")
            if isinstance(iso, str) and len(iso) == 2:
                return iso.upper()
        return None

    def close(self) -> None:
        close = getattr(self._reader, "close", None)
        if close is not None:
            close()


def stable_device_hash(signals: Mapping[str, Any]) -> str:
    """A canonical hash of the stable signals; unknown and volatile keys are ignored."""
    canonical: dict[str, Any] = {}
    for name in STABLE_SIGNALS:
        value = signals.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = [str(v)[:_MAX_SIGNAL_LENGTH].lower() for v in value[:10]]
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        else:
            value = str(value)[:_MAX_SIGNAL_LENGTH].lower()
        canonical[name] = value
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class DeviceClaims:
    device_hash: str
    issued_at: int


class DeviceTokens:
    """Signed device tokens: ``pwdev_<base64url(device_hash.issued_at)>.<mac>``."""

    def __init__(self, key: bytes, *, max_age_seconds: int = 30 * 86400) -> None:
        if len(key) < 16:
            raise ValueError("the device token key must be at least 16 bytes")
        self._key = key
        self.max_age_seconds = max_age_seconds

    def _mac(self, body: str) -> str:
        mac = hmac.new(self._key, b"pw-device-v1|" + body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")

    def issue(self, signals: Mapping[str, Any], *, now: float) -> str:
        body = f"{stable_device_hash(signals)}.{int(now)}"
        encoded = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{TOKEN_PREFIX}{encoded}.{self._mac(body)}"

    def verify(self, token: str | None, *, now: float) -> DeviceClaims | None:
        """The token's claims, or None if it is missing, forged, malformed or expired."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        encoded, _, mac = token[len(TOKEN_PREFIX) :].partition(".")
        try:
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        device_hash, _, issued = body.partition(".")
        if not re.fullmatch(r"[0-9a-f]{32}", device_hash) or not issued.isdigit():
            return None
        issued_at = int(issued)
        if issued_at > now + 300 or now - issued_at > self.max_age_seconds:
            return None
        return DeviceClaims(device_hash=device_hash, issued_at=issued_at)


_BROWSERS = (
    ("edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("opera", re.compile(r"OPR/|Opera")),
    ("samsung", re.compile(r"SamsungBrowser/")),
    ("chrome", re.compile(r"Chrome/|CriOS/")),
    ("firefox", re.compile(r"Firefox/|FxiOS/")),
    ("safari", re.compile(r"Safari/")),
)
_SYSTEMS = (
    ("ios", re.compile(r"iPhone|iPad|iPod")),
    ("android", re.compile(r"Android")),
    ("windows", re.compile(r"Windows")),
    ("macos", re.compile(r"Mac OS X|Macintosh")),
    ("linux", re.compile(r"Linux|X11")),
)


def user_agent_family(user_agent: str | None) -> str:
    """Browser family and OS, without versions (versions change with updates)."""
    if not user_agent:
        return "unknown"
    ua = user_agent[:512]
    browser = next((name for name, rx in _BROWSERS if rx.search(ua)), "other")
    system = next((name for name, rx in _SYSTEMS if rx.search(ua)), "other")
    return f"{browser}/{system}"


def ip_network(ip: str | None) -> str:
    """The /24 (IPv4) or /48 (IPv6) network: stable across a household's DHCP."""
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return "unknown"
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def primary_language(accept_language: str | None) -> str:
    if not accept_language:
        return "unknown"
    first = accept_language.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return first[:16] or "unknown"


def device_fingerprint(
    claims: DeviceClaims | None,
    *,
    ip: str | None,
    user_agent: str | None,
    accept_language: str | None,
    include_network: bool = False,
) -> str | None:
    """The device identifier the fraud engine counts by; None without a valid token.

    By default the IP network is not part of it: a phone changes networks all
    the time, and the IP is counted as its own entity anyway. With
    ``include_network`` a token replayed from another network becomes another
    device, at the price of more splits (see ``bench/device_fingerprint.py``).
    """
    if claims is None:
        return None
    parts = [claims.device_hash, user_agent_family(user_agent), primary_language(accept_language)]
    if include_network:
        parts.append(ip_network(ip))
    material = "|".join(parts)
    return "dev_" + hashlib.sha256(material.encode()).hexdigest()[:24]
