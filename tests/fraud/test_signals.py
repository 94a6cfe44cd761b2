"""Fraud signals: offline IP geolocation, signed device tokens, device fingerprints."""

from __future__ import annotations

import pytest

from paywarden.fraud.device_quality import measure, synthetic_sessions
from paywarden.fraud.signals import (
    DeviceTokens,
    IpGeo,
    device_fingerprint,
    ip_network,
    primary_language,
    stable_device_hash,
    user_agent_family,
)

NOW = 1_790_000_000.0
SIGNALS = {
    "screen": "1920x1080",
    "timezone": "Europe/Berlin",
    "languages": ["de-DE", "de"],
    "platform": "Win32",
    "hardware_concurrency": 8,
    "canvas_hash": "a1b2c3",
}
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture(scope="module")
def geo() -> IpGeo:
    return IpGeo.open()


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),
        ("81.2.69.160", "GB"),  # MaxMind's own test address
        ("127.0.0.1", None),
        ("10.1.2.3", None),
        ("::1", None),
        ("not an ip", None),
        ("", None),
        (None, None),
    ],
)
def test_ip_country_is_offline_and_safe(geo: IpGeo, ip: str | None, country: str | None) -> None:
    assert geo.country(ip) == country


def test_device_token_round_trip_and_tampering() -> None:
    tokens = DeviceTokens(b"k" * 32)
    token = tokens.issue(SIGNALS, now=NOW)
    claims = tokens.verify(token, now=NOW + 60)
    assert claims is not None
    assert claims.device_hash == stable_device_hash(SIGNALS)
    assert DeviceTokens(b"x" * 32).verify(token, now=NOW) is None  # another key
    assert tokens.verify(token[:-2] + "AA", now=NOW) is None  # forged mac
    assert tokens.verify(token + "x", now=NOW) is None
    assert tokens.verify("pwdev_garbage", now=NOW) is None
    assert tokens.verify(None, now=NOW) is None
    assert tokens.verify(token, now=NOW + 31 * 86400) is None  # expired
    assert tokens.verify(token, now=NOW - 3600) is None  # from the future
    with pytest.raises(ValueError, match="16 bytes"):
        DeviceTokens(b"short")


def test_volatile_and_unknown_signals_do_not_change_the_device() -> None:
    base = stable_device_hash(SIGNALS)
    assert stable_device_hash({**SIGNALS, "window": "800x600", "battery": 0.4}) == base
    assert stable_device_hash({**SIGNALS, "timezone": "Europe/BERLIN"}) == base
    assert stable_device_hash({**SIGNALS, "timezone": "America/New_York"}) != base


def test_fingerprint_combines_token_with_request_context() -> None:
    claims = DeviceTokens(b"k" * 32).verify(
        DeviceTokens(b"k" * 32).issue(SIGNALS, now=NOW), now=NOW
    )
    fp = device_fingerprint(claims, ip="1.2.3.4", user_agent=CHROME, accept_language="de-DE,de")
    assert fp is not None and fp.startswith("dev_")
    # A browser update or another address in the network: same device.
    newer = CHROME.replace("120.0.0.0", "121.0.0.0")
    assert (
        device_fingerprint(claims, ip="1.2.3.99", user_agent=newer, accept_language="de-DE") == fp
    )
    # The same token in another browser is another device.
    firefox = "Mozilla/5.0 (Windows NT 10.0; rv:121.0) Gecko/20100101 Firefox/121.0"
    assert (
        device_fingerprint(claims, ip="1.2.3.4", user_agent=firefox, accept_language="de-DE") != fp
    )
    assert device_fingerprint(None, ip="1.2.3.4", user_agent=CHROME, accept_language="de") is None
    with_net = device_fingerprint(
        claims, ip="1.2.3.4", user_agent=CHROME, accept_language="de", include_network=True
    )
    assert with_net != device_fingerprint(
        claims, ip="9.9.9.9", user_agent=CHROME, accept_language="de", include_network=True
    )


def test_context_helpers() -> None:
    assert user_agent_family(CHROME) == "chrome/windows"
    assert user_agent_family(None) == "unknown"
    assert ip_network("192.168.1.77") == "192.168.1.0/24"
    assert ip_network("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert ip_network("nope") == "unknown"
    assert primary_language("fr-CH, fr;q=0.9, en;q=0.8") == "fr-ch"
    assert primary_language(None) == "unknown"


def test_fingerprint_quality_on_the_synthetic_device_set() -> None:
    sessions = synthetic_sessions(500, 6, seed=11)
    default = measure(sessions)
    with_network = measure(sessions, include_network=True)
    # Identical phones in one time zone and language do collide, rarely.
    assert default.collision_rate < 0.05
    # Adding the network trades splits for nothing here: it only splits more.
    assert with_network.split_rate > default.split_rate
    # Without churn there is exactly one fingerprint per device.
    still = measure(synthetic_sessions(300, 5, seed=3, move_rate=0, lang_change_rate=0))
    assert still.split_rate == 0.0
