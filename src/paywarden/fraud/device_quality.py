"""A labelled synthetic device set, and the fingerprint's quality on it.

Each synthetic *device* has stable traits drawn from realistic distributions
(screen, time zone, languages, platform, cores, memory, touch points, GPU, a
rendering hash that is identical for identical hardware and driver stacks) and
lives in a household network. Each *session* of a device perturbs what really
changes between visits: the browser version in the user agent, sometimes the IP
within the same /24, occasionally a move to another network (travel, mobile),
occasionally an extra accept-language. Popular hardware configurations are
shared by many devices, as in real fleets, which is what makes collisions
possible.

* **collision rate**: share of fingerprints that two or more different devices
  produce (false merges);
* **split rate**: share of devices that produce more than one fingerprint over
  their sessions (false splits).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from paywarden.fraud.signals import DeviceTokens, device_fingerprint

_SCREENS = [
    "1920x1080",
    "1366x768",
    "1536x864",
    "2560x1440",
    "1440x900",
    "390x844",
    "414x896",
    "360x800",
    "412x915",
    "1280x720",
]
_ZONES = [
    "Europe/Berlin",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Europe/Madrid",
    "Europe/Rome",
    "Australia/Sydney",
]
_LANGS = [
    ["en-US", "en"],
    ["de-DE", "de", "en"],
    ["fr-FR", "fr"],
    ["en-GB", "en"],
    ["es-ES", "es"],
    ["ja-JP", "ja"],
    ["it-IT", "it"],
    ["nl-NL", "nl", "en"],
]
_PLATFORMS = [
    ("Win32", "Windows NT 10.0; Win64; x64"),
    ("MacIntel", "Macintosh; Intel Mac OS X 10_15_7"),
    ("Linux x86_64", "X11; Linux x86_64"),
    ("iPhone", "iPhone; CPU iPhone OS 17_5 like Mac OS X"),
    ("Linux armv8l", "Linux; Android 14; Pixel 8"),
]
_GPUS = [
    "ANGLE (Intel, Intel(R) UHD Graphics 620)",
    "ANGLE (NVIDIA, GeForce RTX 3060)",
    "Apple GPU",
    "Adreno (TM) 740",
    "Mali-G78",
    "ANGLE (AMD, Radeon RX 6600)",
]
_BROWSERS = [("Chrome", 120), ("Firefox", 121), ("Edg", 120), ("Safari", 17)]


@dataclass(frozen=True)
class Session:
    device: int
    signals: dict[str, Any]
    ip: str
    user_agent: str
    accept_language: str


def _user_agent(platform_ua: str, browser: str, version: int) -> str:
    if browser == "Safari":
        return (
            f"Mozilla/5.0 ({platform_ua}) AppleWebKit/605.1.15 Version/{version}.0 Safari/605.1.15"
        )
    if browser == "Firefox":
        return f"Mozilla/5.0 ({platform_ua}; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"
    tail = f" Edg/{version}.0.0.0" if browser == "Edg" else ""
    return (
        f"Mozilla/5.0 ({platform_ua}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{version}.0.0.0 Safari/537.36{tail}"
    )


def synthetic_sessions(
    devices: int = 2000,
    sessions_per_device: int = 8,
    *,
    seed: int = 7,
    move_rate: float = 0.05,
    lang_change_rate: float = 0.02,
) -> list[Session]:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, reproducible by seed
    out: list[Session] = []
    # A few hundred hardware/driver stacks shared across the fleet.
    stacks = [(rng.choice(_GPUS), f"{rng.getrandbits(32):08x}") for _ in range(300)]
    for d in range(devices):
        platform, platform_ua = rng.choice(_PLATFORMS)
        gpu, canvas = rng.choice(stacks)
        traits: dict[str, Any] = {
            "screen": rng.choice(_SCREENS),
            "color_depth": rng.choice([24, 24, 24, 30]),
            "timezone": rng.choice(_ZONES),
            "languages": rng.choice(_LANGS),
            "platform": platform,
            "hardware_concurrency": rng.choice([2, 4, 8, 8, 12, 16]),
            "device_memory": rng.choice([4, 8, 8, 16]),
            "max_touch_points": 5 if platform in ("iPhone", "Linux armv8l") else 0,
            "canvas_hash": canvas,
            "webgl_renderer": gpu,
        }
        if platform == "iPhone":
            # Phones of one model are identical hardware: only the owner's time
            # zone and languages tell them apart (the hard case for collisions).
            traits.update(
                screen=rng.choice(["390x844", "414x896"]),
                hardware_concurrency=6,
                device_memory=None,
                webgl_renderer="Apple GPU",
                canvas_hash=f"apple-{rng.randint(0, 2)}",
            )
        browser, base_version = rng.choice(_BROWSERS)
        home = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
        for s in range(sessions_per_device):
            version = base_version + s // 3  # the browser updates now and then
            if rng.random() < move_rate:
                octets = (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255))
                ip = ".".join(map(str, octets)) + f".{rng.randint(1, 254)}"
            else:
                ip = f"{home}.{rng.randint(1, 254)}"
            langs = list(traits["languages"])
            if rng.random() < lang_change_rate:
                langs = ["en-US", *langs]
            signals = dict(traits)
            signals["window"] = f"{rng.randint(800, 1900)}x{rng.randint(500, 1000)}"  # volatile
            signals["battery"] = rng.random()  # volatile
            out.append(
                Session(
                    d,
                    signals,
                    ip,
                    _user_agent(platform_ua, browser, version),
                    ",".join(f"{lang};q=0.{9 - i}" if i else lang for i, lang in enumerate(langs)),
                )
            )
    return out


@dataclass(frozen=True)
class Quality:
    devices: int
    sessions: int
    fingerprints: int
    collision_rate: float
    split_rate: float


def measure(
    sessions: list[Session], *, include_network: bool = False, now: float = 1_790_000_000.0
) -> Quality:
    tokens = DeviceTokens(b"k" * 32)
    by_fp: dict[str, set[int]] = defaultdict(set)
    by_device: dict[int, set[str]] = defaultdict(set)
    for s in sessions:
        claims = tokens.verify(tokens.issue(s.signals, now=now), now=now)
        fp = device_fingerprint(
            claims,
            ip=s.ip,
            user_agent=s.user_agent,
            accept_language=s.accept_language,
            include_network=include_network,
        )
        assert fp is not None
        by_fp[fp].add(s.device)
        by_device[s.device].add(fp)
    colliding = sum(1 for devs in by_fp.values() if len(devs) > 1)
    split = sum(1 for fps in by_device.values() if len(fps) > 1)
    return Quality(
        devices=len(by_device),
        sessions=len(sessions),
        fingerprints=len(by_fp),
        collision_rate=colliding / len(by_fp),
        split_rate=split / len(by_device),
    )
