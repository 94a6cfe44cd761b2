#!/usr/bin/env python3
"""Confirmed payments per second at 32 connections, against a no-op baseline.

Starts the whole stack (two sandbox acquirers and the gateway, as `make run`
does) in a temporary data directory, pre-creates payment intents, then drives
`POST /v1/payment_intents/{id}/confirm` with wrk (Debian package `wrk`) at 32
concurrent connections. In the same run it measures the authenticated no-op
endpoint `GET /v1/paywarden/ping` on the same server, and reports the ratio.

    .venv/bin/python bench/confirm_throughput.py [--workers N] [--duration S]

Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIRM_LUA = r"""
local ids = {}
local counter = 0
local key = os.getenv("PW_KEY")
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("PW_THREADS"))
  local i = 0
  for line in io.lines(os.getenv("PW_IDS")) do
    if i % nthreads == tid then table.insert(ids, line) end
    i = i + 1
  end
end

function request()
  counter = counter + 1
  local id = ids[counter]
  if id == nil then
    return wrk.format("GET", "/v1/paywarden/ping", {["Authorization"] = "Bearer " .. key})
  end
  return wrk.format("POST", "/v1/payment_intents/" .. id .. "/confirm",
    {["Authorization"] = "Bearer " .. key,
     ["Content-Type"] = "application/x-www-form-urlencoded"}, "")
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("P50_US=%d\nP99_US=%d\n", latency:percentile(50), latency:percentile(99)))
end
"""
NOOP_LUA = r"""
local key = os.getenv("PW_KEY")
function request()
  return wrk.format("GET", "/v1/paywarden/ping", {["Authorization"] = "Bearer " .. key})
end
function done(summary, latency, requests)
  io.write(string.format("P50_US=%d\nP99_US=%d\n", latency:percentile(50), latency:percentile(99)))
end
"""


def free_ports(n: int) -> int:
    """A base port with n consecutive free ports after it."""
    for base in range(18400, 19400, 10):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


def wrk(
    url: str, script: Path, env: dict[str, str], duration: int, conns: int, threads: int
) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(conns),
            "-d",
            f"{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = int(re.search(r"P50_US=(\d+)", out).group(1))  # type: ignore[union-attr]
    p99 = int(re.search(r"P99_US=(\d+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--intents", type=int, default=0, help="intents to pre-create (default: enough)"
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2

    home = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    base = free_ports(3)
    env = {
        **os.environ,
        "PAYWARDEN_HOME": str(home),
        "PAYWARDEN_PORT": str(base),
        "PAYWARDEN_ACQUIRER_BASE_PORT": str(base + 1),
        "PAYWARDEN_LOG_LEVEL": "WARNING",
        "PAYWARDEN_WEBHOOK_POLL_SECONDS": "1",
    }
    stack = subprocess.Popen(
        [sys.executable, "-m", "paywarden.cli.main", "run", "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{base}"
    try:
        creds_path = home / "dev-credentials.json"
        deadline = time.monotonic() + 60
        while True:
            if stack.poll() is not None:
                raise RuntimeError(stack.stdout.read().decode() if stack.stdout else "stack exited")
            if creds_path.exists():
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("stack did not start")
            time.sleep(0.2)
        key = json.loads(creds_path.read_text())["secret_key"]

        # Warm up and measure the no-op first (nothing else running).
        noop_script = home / "noop.lua"
        noop_script.write_text(NOOP_LUA)
        wenv = {"PW_KEY": key, "PW_THREADS": "2"}
        wrk(url, noop_script, wenv, 2, args.connections, 2)
        noop = wrk(url, noop_script, wenv, args.duration, args.connections, 2)

        n = args.intents or int(max(2000, noop["rps"] * args.duration * 1.2))
        print(f"pre-creating {n} payment intents…", flush=True)
        ids_file = home / "ids.txt"
        headers = {"Authorization": f"Bearer {key}"}
        with (
            httpx.Client(base_url=url, headers=headers, timeout=30) as c,
            ThreadPoolExecutor(16) as ex,
        ):

            def make(_: int) -> str:
                r = c.post(
                    "/v1/payment_intents",
                    data={"amount": "1099", "currency": "usd", "payment_method": "pm_card_visa"},
                )
                r.raise_for_status()
                return str(r.json()["id"])

            ids = list(ex.map(make, range(n)))
        ids_file.write_text("\n".join(ids) + "\n")
        confirm_script = home / "confirm.lua"
        confirm_script.write_text(CONFIRM_LUA)
        cenv = {**wenv, "PW_IDS": str(ids_file)}
        confirm = wrk(url, confirm_script, cenv, args.duration, args.connections, 2)
        if confirm["requests"] > n:
            print("warning: ran out of intents; raise --intents", file=sys.stderr)

        # Verify: every confirmed intent really succeeded.
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            # wrk calls request() once before the run to verify the script, on
            # thread 0's state: the first id is consumed there and never sent.
            sample = ids[1 : min(201, len(ids))]
            statuses = [c.get(f"/v1/payment_intents/{i}").json()["status"] for i in sample]
        ratio = confirm["rps"] / noop["rps"]
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "workers": args.workers,
            "connections": args.connections,
            "duration_s": args.duration,
            "noop": noop,
            "confirm": confirm,
            "ratio": round(ratio, 3),
            "sample_statuses": {s: statuses.count(s) for s in set(statuses)},
        }
        print(json.dumps(result, indent=2))
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / f"confirm-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
        return 0
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
