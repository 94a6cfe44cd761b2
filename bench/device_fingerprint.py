"""Device-fingerprint quality on the labelled synthetic device set.

Usage: .venv/bin/python bench/device_fingerprint.py [--devices 5000] [--sessions 10]

Prints the collision rate (fingerprints shared by different devices) and the
split rate (devices seen under more than one fingerprint), for the default
fingerprint and for the variant that also includes the IP network.
"""

from __future__ import annotations

import argparse
import time

from paywarden.fraud.device_quality import measure, synthetic_sessions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sessions = synthetic_sessions(args.devices, args.sessions, seed=args.seed)
    print(f"{args.devices} devices x {args.sessions} sessions, seed {args.seed}")
    print("| fingerprint | fingerprints | collision rate | split rate | µs/session |")
    print("|---|---|---|---|---|")
    for label, net in (
        ("token + UA family + language (default)", False),
        ("... + IP network", True),
    ):
        t = time.perf_counter()
        q = measure(sessions, include_network=net)
        us = (time.perf_counter() - t) / len(sessions) * 1e6
        print(
            f"| {label} | {q.fingerprints:,} | {q.collision_rate:.2%} | {q.split_rate:.2%} "
            f"| {us:.1f} |"
        )


if __name__ == "__main__":
    main()
