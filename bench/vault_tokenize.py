#!/usr/bin/env python3
"""Card vault tokenization: crypto floor, in-process service, and HTTP over mutual TLS.

Three measurements in one run, each with a baseline from the same run:

1. **Crypto floor.** The recipes a tokenization cannot avoid, per operation (best
   of five windows): HPKE open of the card JSON a card element seals (112 bytes)
   with the private key loaded once (as the vault caches it),
   the HMAC-SHA256 fingerprint, the AES-256-GCM seal of the card record, and the
   KEK wrap of the 32-byte data key (``LocalKeyring.wrap``). Card-path floor =
   HMAC + seal + wrap; HPKE-path floor = HPKE open + the same.
2. **In process.** ``VaultService.tokenize`` and ``tokenize_encrypted`` as
   ``build_vault`` wires them (the vault's own SQLite settings, local keyring,
   vault audit log) in a temporary directory, called back to back by one thread
   (sequential) and by ``--threads`` threads at once (the group commit batches
   what queues up during one durable commit); the same service on a WAL
   database, with the same audit log, for comparison; and the **pipeline
   without storage**: the same service with its group-commit writer stubbed
   out, so everything but the database transaction and the audit commit runs
   as in production (parse and validate, BIN lookup, brand, fingerprint, token
   id, data key, wrap, seals of record and CVC, audit entry built; for HPKE
   also open, replay digest and binding checks). Each is reported as a ratio to
   its floor; cProfile splits the service's time and the pipeline's.
3. **HTTP.** ``paywarden vault serve`` in its own process (uvicorn, mutual TLS),
   driven at 16 keep-alive connections with the gateway's client certificate:
   ``GET /healthz`` (the no-op), ``POST /v1/cards`` with a card and with an
   HPKE-encrypted card (every request its own payload, sealed beforehand). The
   main client is a minimal HTTP/1.1 client on asyncio streams and uvloop, because
   httpx.AsyncClient costs about 1 ms of CPU per request and cannot load the
   no-op; httpx rows follow for comparison. Server and client CPU are read over
   each window, and a pass with two client processes (8 connections each) shows
   whether the client limits.

    .venv/bin/python bench/vault_tokenize.py [--duration 10] [--pin 1] [--threads 16]

``--pin CPU`` keeps the floor and the in-process phases on one CPU (the machine
is shared; the same as ``taskset -c``) and lets the HTTP phase use them all.

Prints Markdown tables (for BENCHMARKS.md) and writes JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import cProfile
import itertools
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from paywarden.config import Settings
from paywarden.core.clock import SystemClock
from paywarden.core.ids import new_id
from paywarden.db import Database
from paywarden.vault.crypto import aead, hpke
from paywarden.vault.groupcommit import GroupCommit
from paywarden.vault.kms import LocalKeyring
from paywarden.vault.migrations import upgrade
from paywarden.vault.server import build_vault, ensure_pki, pki_paths
from paywarden.vault.service import VaultService

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "acct_bench"
ACTOR = "gateway"
# Stripe's public test card; never a real PAN.
VISA = "4242424242424242"
EXP_MONTH, EXP_YEAR, CVC = 12, 2034, "123"
CARD = {"number": VISA, "exp_month": EXP_MONTH, "exp_year": EXP_YEAR, "cvc": CVC}
CONCURRENCY = 16
# Payloads are sealed before timing starts. The vault accepts each payload once,
# so every tokenization gets its own; the pipeline without storage reuses a pool.
HPKE_POOL = 1000


def card_json() -> bytes:
    """What a card element seals (``paywarden.clients.e2e``): the card, the merchant
    account it was sealed for and the time, as compact JSON (112 bytes here)."""
    sealed = {**CARD, "account": ACCOUNT, "iat": int(time.time())}
    return json.dumps(sealed, separators=(",", ":")).encode()


def seal_payloads(public: bytes, key_id: str, count: int) -> list[str]:
    info = hpke.info_for(key_id)
    return [b64url(hpke.seal_to(public, card_json(), info=info)) for _ in range(count)]


def take(payloads: list[str]) -> Callable[[], str]:
    """Each payload once; running out is an error, not a silent replay."""
    it = iter(payloads)
    lock = threading.Lock()  # callers may be concurrent

    def next_payload() -> str:
        try:
            with lock:
                return next(it)
        except StopIteration:
            raise RuntimeError("out of pre-sealed HPKE payloads") from None

    return next_payload


# ------------------------------------------------------------------ helpers


def rate(fn: Callable[[], object], *, seconds: float, repeat: int, best: bool) -> float:
    """Operations per second of ``fn`` over ``repeat`` windows of ``seconds``.

    ``best`` takes the fastest window (for CPU-only work, where slower windows
    are noise); otherwise the median (for storage, where checkpoints are real cost).
    """
    n = 1
    while True:  # calibrate: a batch of n calls takes about 20 ms
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t > 0.02:
            break
        n *= 2
    rates = []
    for _ in range(repeat):
        done = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(n):
                fn()
            done += n
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        rates.append(done / elapsed)
    return max(rates) if best else statistics.median(rates)


def concurrent_rate(
    fn: Callable[[], object], *, threads: int, seconds: float, repeat: int
) -> float:
    """Operations per second of ``fn`` called by ``threads`` threads at once, each
    calling it back to back; the median of ``repeat`` windows."""
    return statistics.median(_concurrent_window(fn, threads, seconds) for _ in range(repeat))


def _concurrent_window(fn: Callable[[], object], threads: int, seconds: float) -> float:
    """One window. It ends when the last thread has finished the call it had in
    flight at ``seconds``; every completed call counts."""
    counts = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        start.wait()
        n = 0
        try:
            while time.perf_counter() < deadline[0]:
                fn()
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[k] = n

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.node()} {platform.machine()} {model}, {os.cpu_count()} cores{mem}, "
        f"Python {platform.python_version()}"
    )


# ------------------------------------------------------------ 1. crypto floor


def crypto_floor(tmp: Path, *, seconds: float) -> dict[str, float]:
    """Microseconds per operation of each primitive, best of five windows."""
    private, public = hpke.generate_keypair()
    info = hpke.info_for("ek_bench")
    sealed_card = hpke.seal_to(public, card_json(), info=info)
    tenant_key = aead.generate_key()
    data_key = aead.generate_key()
    ctx = f"card|{new_id('vtok', 24)}|{ACCOUNT}".encode()
    record = json.dumps({"number": VISA, "exp_month": EXP_MONTH, "exp_year": EXP_YEAR}).encode()
    keyring = LocalKeyring.open(tmp / "floor-keyring.json", os.urandom(32))
    pan = VISA.encode()
    loaded = hpke.PrivateKey(private)
    ops: dict[str, Callable[[], object]] = {
        # The raw key parsed on every open (how the floor was measured before the
        # vault cached loaded keys): parsing derives the public key, a second
        # X25519 scalar multiplication. Reported for comparison only.
        "hpke_open_raw": lambda: hpke.open_from(private, sealed_card, info=info),
        # The floor: the key loaded once, as the vault holds it.
        "hpke_open": lambda: hpke.open_from(loaded, sealed_card, info=info),
        "hmac": lambda: aead.hmac_sha256(tenant_key, pan),
        "seal": lambda: aead.seal(data_key, record, aad=ctx),
        "wrap": lambda: keyring.wrap(data_key, context=ctx),
    }
    us = {name: 1e6 / rate(fn, seconds=seconds, repeat=5, best=True) for name, fn in ops.items()}
    us["floor_plain"] = us["hmac"] + us["seal"] + us["wrap"]
    us["floor_hpke"] = us["hpke_open"] + us["floor_plain"]
    return us


# ------------------------------------------------------------ 2. in process


def without_storage(service: VaultService) -> VaultService:
    """The same service whose group-commit writer does nothing: the whole
    tokenization pipeline as the service runs it (parse and validate, BIN
    lookup, brand, fingerprint, token id, data key, wrap, seals of record and
    CVC, audit entry built; for HPKE also the open, the replay digest and the
    account and ``iat`` checks), minus the database transaction and the audit
    commit. The tenant key and the HPKE private key come from the service's
    caches, as they do in steady state."""
    stub = copy.copy(service)
    stub._tokenizations = GroupCommit(lambda batch: [None] * len(batch))
    return stub


def tokenize_call(service: VaultService) -> Callable[[], object]:
    def plain() -> object:
        return service.tokenize(
            account_id=ACCOUNT,
            number=VISA,
            exp_month=EXP_MONTH,
            exp_year=EXP_YEAR,
            cvc=CVC,
            actor=ACTOR,
        )

    return plain


def tokenize_encrypted_call(
    service: VaultService, *, payloads: int, reuse: bool = False
) -> Callable[[], object]:
    """Each call presents a new payload (the vault refuses a replayed one);
    ``reuse`` cycles through a pool instead, for the service without storage
    (its replay check lives in the storage step)."""
    key = service.encryption_keys()[0]
    key_id = str(key["id"])
    sealed = seal_payloads(unb64url(str(key["public_key"])), key_id, payloads)
    if reuse:
        pool = itertools.cycle(sealed)
        lock = threading.Lock()

        def next_payload() -> str:
            with lock:
                return next(pool)

    else:
        next_payload = take(sealed)

    def encrypted() -> object:
        return service.tokenize_encrypted(
            account_id=ACCOUNT,
            key_id=key_id,
            payload=next_payload(),
            actor=ACTOR,
        )

    return encrypted


def _category(key: tuple[str, int, str]) -> str | None:
    """The bucket of one profiled function; None for builtins owned by their caller."""
    filename, _line, name = key
    if "sqlite3.Connection' objects>" in name and "commit" in name:
        return "SQLite commit (journal writes, fsync)"
    if "sqlite3." in name:
        return "SQLite execute"
    if "cryptography" in name or "/cryptography/" in filename or name.endswith("posix.urandom>"):
        return "crypto (cryptography, urandom)"
    if "/sqlalchemy/" in filename:
        return "SQLAlchemy (Python)"
    if "/paywarden/" in filename:
        return "paywarden Python (parse, BIN, glue)"
    if filename == "~":
        return None
    return STDLIB


STDLIB = "stdlib (json, base64, secrets, contextlib, …)"


def _profile(fn: Callable[[], object], calls: int) -> dict[Any, Any]:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    return stats


def profile_split(fn: Callable[[], object], *, calls: int) -> dict[str, float]:
    """Share of profiled time per bucket; builtins count towards their caller's bucket."""
    buckets: dict[str, float] = {}
    for key, (_cc, _nc, tottime, _ct, callers) in _profile(fn, calls).items():
        bucket = _category(key)
        if bucket is not None:
            buckets[bucket] = buckets.get(bucket, 0.0) + tottime
            continue
        for caller, (_c1, _c2, part, _c4) in callers.items():
            owner = _category(caller) or STDLIB
            buckets[owner] = buckets.get(owner, 0.0) + part
    total = sum(buckets.values())
    return {k: v / total for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])}


def profile_top(fn: Callable[[], object], *, calls: int, top: int = 6) -> list[tuple[str, float]]:
    """The functions with the most own time: (name, share of profiled time)."""
    stats = _profile(fn, calls)
    total = sum(v[2] for v in stats.values())
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    out = []
    for (filename, _line, name), v in ranked:
        out.append((f"{_module(filename)}{name}", v[2] / total))
    return out


def _module(filename: str) -> str:
    """``paywarden.core.secrets.`` for a source file; '' for builtins."""
    if filename == "~":
        return ""
    if filename.startswith(f"{ROOT}/"):
        filename = filename.removeprefix(f"{ROOT}/").removeprefix("src/")
    for root in (
        "/src/",
        "/site-packages/",
        f"/python{sys.version_info[0]}.{sys.version_info[1]}/",
    ):
        if root in filename:
            filename = filename.rsplit(root, 1)[1]
            break
    return filename.removesuffix(".py").replace("/", ".") + "."


def _wal_service(service: VaultService, tmp: Path) -> VaultService:
    """The same service on a WAL database (``synchronous=NORMAL``, as the gateway's),
    to show what the vault's rollback journal and ``secure_delete`` cost."""
    url = f"sqlite:///{tmp / 'wal-vault.db'}"
    upgrade(url)
    return VaultService(
        db=Database(url),
        kms=service.kms,
        bins=service.bins,
        clock=SystemClock(),
        policy=service.policy,
        destinations={},
        audit=service.audit,  # the same audit commit per tokenization as the vault's rows
    )


def in_process(tmp: Path, *, seconds: float, threads: int) -> dict[str, Any]:
    settings = Settings(home=tmp / "inproc", log_level="WARNING")
    service = build_vault(settings)
    wal = _wal_service(service, tmp)
    try:
        out: dict[str, Any] = {"journal": _journal(service), "threads": threads}
        service.ensure_hpke_key()
        bare = without_storage(service)
        pipe_plain = tokenize_call(bare)
        pipe_hpke = tokenize_encrypted_call(bare, payloads=HPKE_POOL, reuse=True)
        for _ in range(100):  # fill the caches: tenant key, HPKE private key
            pipe_plain()
            pipe_hpke()
        out["pipeline_plain"] = rate(pipe_plain, seconds=seconds, repeat=3, best=True)
        out["pipeline_hpke"] = rate(pipe_hpke, seconds=seconds, repeat=3, best=True)
        out["profile_pipeline_plain"] = profile_top(
            pipe_plain, calls=int(out["pipeline_plain"] * seconds / 2)
        )
        out["profile_pipeline_hpke"] = profile_top(
            pipe_hpke, calls=int(out["pipeline_hpke"] * seconds / 2)
        )
        for name, svc in (("service", service), ("wal", wal)):
            svc.ensure_hpke_key()
            plain = tokenize_call(svc)
            for _ in range(100):  # fill the caches: tenant key
                plain()
            out[f"{name}_plain"] = rate(plain, seconds=seconds, repeat=3, best=False)
            # One-use payloads for warm-up, three windows and the profile; the HPKE
            # path does more than the card path, so the card rate bounds it.
            calls = max(100, int(out[f"{name}_plain"] * seconds / 4))
            payloads = int(out[f"{name}_plain"] * (3 * seconds + 0.5) * 1.3) + 200 + calls
            encrypted = tokenize_encrypted_call(svc, payloads=payloads)
            for _ in range(100):  # fill the caches: HPKE private key
                encrypted()
            out[f"{name}_hpke"] = rate(encrypted, seconds=seconds, repeat=3, best=False)
            if name == "service":
                out["profile_plain"] = profile_split(plain, calls=calls)
                out["profile_hpke"] = profile_split(encrypted, calls=calls)
            # Concurrent callers: the group commit puts what queues up during
            # one durable commit into the next.
            out[f"{name}_plain_conc"] = concurrent_rate(
                plain, threads=threads, seconds=seconds, repeat=3
            )
            payloads = int(out[f"{name}_plain_conc"] * (3 * seconds + 0.5) * 1.3) + 200
            encrypted = tokenize_encrypted_call(svc, payloads=payloads)
            out[f"{name}_hpke_conc"] = concurrent_rate(
                encrypted, threads=threads, seconds=seconds, repeat=3
            )
        return out
    finally:
        wal.audit = None  # shared with the vault's service, closed once
        for svc in (service, wal):
            svc.close()
            svc.db.dispose()


def _journal(service: VaultService) -> str:
    """The vault database's SQLite settings, as its connections really have them."""
    with service.db.read() as s:
        mode = s.execute(text("PRAGMA journal_mode")).scalar()
        sync = int(s.execute(text("PRAGMA synchronous")).scalar() or 0)
        secure = s.execute(text("PRAGMA secure_delete")).scalar()
    levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={mode}, synchronous={levels.get(sync, sync)}, secure_delete={secure}"


# --------------------------------------------------------------------- 3. HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _RawConnection:
    """One keep-alive HTTP/1.1 connection over TLS, with just enough parsing.

    The vault answers every request with a Content-Length (Starlette's
    JSONResponse), so no chunked decoding is needed. This client costs a few
    tens of microseconds of CPU per request, where httpx costs about a millisecond.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError("response without Content-Length")
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        await self.reader.readexactly(length)
        return status


async def _callers(
    spec: dict[str, Any], stack: contextlib.AsyncExitStack
) -> list[Callable[[bytes | None], Awaitable[int]]]:
    """One request function per connection, for the client named in ``spec``."""
    from paywarden.vault.tlsserver import client_ssl_context

    ctx = client_ssl_context(
        cert=Path(spec["cert"]), key=Path(spec["key"]), ca_bundle=Path(spec["ca"])
    )
    method, path, conns = spec["method"], spec["path"], spec["concurrency"]
    if spec["client"] == "httpx":
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=spec["url"], verify=ctx, limits=limits, timeout=30, trust_env=False
            )
        )
        headers = {"content-type": "application/json"} if method == "POST" else {}

        async def via_httpx(body: bytes | None) -> int:
            r = await client.request(method, path, content=body, headers=headers)
            return r.status_code

        return [via_httpx] * conns
    url = httpx.URL(spec["url"])
    host, port = str(url.host), int(url.port or 443)
    callers: list[Callable[[bytes | None], Awaitable[int]]] = []
    for _ in range(conns):
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        stack.callback(writer.close)
        conn = _RawConnection(reader, writer)

        async def via_raw(body: bytes | None, conn: _RawConnection = conn) -> int:
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            if body is None:
                return await conn.call(f"{head}\r\n".encode())
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            return await conn.call(head.encode() + body)

        callers.append(via_raw)
    return callers


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    bodies: list[bytes | None] = [b.encode() for b in spec["bodies"]] or [None]
    conns = spec["concurrency"]
    t_start, warmup, duration = spec["t_start"], spec["warmup"], spec["duration"]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cpu: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        callers = await _callers(spec, stack)
        await asyncio.sleep(max(0.0, t_start - time.time()))
        # Wall clock across processes, perf_counter within this one.
        now_wall, now_perf = time.time(), time.perf_counter()
        t0 = now_perf + (t_start + warmup - now_wall)
        t1 = t0 + duration

        async def mark() -> None:
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            cpu.append(time.process_time())

        async def worker(k: int) -> None:
            call, i = callers[k], k
            while True:
                start = time.perf_counter()
                if start >= t1:
                    return
                status = await call(bodies[i % len(bodies)])
                i += conns
                end = time.perf_counter()
                if t0 <= end <= t1:  # completions inside the window
                    latencies.append(end - start)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(mark(), *(worker(k) for k in range(conns)))
        cpu.append(time.process_time())
    return {
        "latencies": latencies,
        "statuses": statuses,
        "cpu_s": cpu[1] - cpu[0],
        "duration": duration,
    }


def client_main(spec_path: Path) -> int:
    """Hidden entry point: one client process; results as JSON in ``spec["out"]``."""
    import uvloop

    spec = json.loads(spec_path.read_text())
    Path(spec["out"]).write_text(json.dumps(uvloop.run(_drive(spec))))
    return 0


def http_run(
    *,
    url: str,
    settings: Settings,
    server_pid: int,
    method: str,
    path: str,
    bodies: list[str],
    client: str,
    clients: int,
    duration: float,
    warmup: float,
    tmp: Path,
) -> dict[str, Any]:
    paths = pki_paths(settings)
    t_start = time.time() + 1.5  # client processes import httpx and connect first
    procs = []
    for k in range(clients):
        spec = {
            "url": url,
            "cert": str(paths["gateway_cert"]),
            "key": str(paths["gateway_key"]),
            "ca": str(paths["ca_bundle"]),
            "client": client,
            "method": method,
            "path": path,
            # One-use HPKE payloads: each client its own share.
            "bodies": bodies[k::clients] if len(bodies) > 1 else bodies,
            "concurrency": CONCURRENCY // clients,
            "t_start": t_start,
            "warmup": warmup,
            "duration": duration,
            "out": str(tmp / f"client-{k}.out.json"),
        }
        spec_path = tmp / f"client-{k}.json"
        spec_path.write_text(json.dumps(spec))
        procs.append(subprocess.Popen([sys.executable, __file__, "--client", str(spec_path)]))
    time.sleep(max(0.0, t_start + warmup - time.time()))
    server_cpu0 = cpu_seconds(server_pid)
    time.sleep(max(0.0, t_start + warmup + duration - time.time()))
    server_cpu1 = cpu_seconds(server_pid)
    results = []
    for k, p in enumerate(procs):
        if p.wait(60) != 0:
            raise RuntimeError(f"client failed with {p.returncode}")
        results.append(json.loads((tmp / f"client-{k}.out.json").read_text()))
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {
        "client": client,
        "method": method,
        "path": path,
        "clients": clients,
        "rps": len(latencies) / duration,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "requests": len(latencies),
        "statuses": statuses,
        "server_cpu": (server_cpu1 - server_cpu0) / duration,
        "client_cpu": [r["cpu_s"] / duration for r in results],
    }


def start_server(settings: Settings, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    from paywarden.vault.tlsserver import client_ssl_context

    ensure_pki(settings)
    env = {
        **os.environ,
        "PAYWARDEN_HOME": str(settings.home),
        "PAYWARDEN_VAULT_PORT": str(settings.vault_port),
        "PAYWARDEN_LOG_LEVEL": "WARNING",
    }
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "paywarden.cli.main", "vault", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"https://127.0.0.1:{settings.vault_port}"
    paths = pki_paths(settings)
    ctx = client_ssl_context(
        cert=paths["gateway_cert"], key=paths["gateway_key"], ca_bundle=paths["ca_bundle"]
    )
    deadline = time.monotonic() + 30
    with httpx.Client(verify=ctx, timeout=2, trust_env=False) as c:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("vault exited:\n" + log_path.read_text()[-2000:])
            try:
                if c.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vault did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.2)
    return proc, url


def http_bench(tmp: Path, *, duration: float) -> dict[str, Any]:
    home = tmp / "http"
    settings = Settings(home=home, vault_port=free_port(), log_level="WARNING")
    proc, url = start_server(settings, tmp / "vault.log")
    try:
        paths = pki_paths(settings)
        from paywarden.vault.tlsserver import client_ssl_context

        ctx = client_ssl_context(
            cert=paths["gateway_cert"], key=paths["gateway_key"], ca_bundle=paths["ca_bundle"]
        )
        with httpx.Client(base_url=url, verify=ctx, trust_env=False) as c:
            r = c.get("/v1/encryption_keys")
            r.raise_for_status()
            key = r.json()["data"][0]
        public = unb64url(key["public_key"])
        card_body = json.dumps({"account_id": ACCOUNT, "card": CARD})

        def hpke_bodies(count: int) -> list[str]:
            return [
                json.dumps(
                    {"account_id": ACCOUNT, "encrypted": {"key_id": key["id"], "payload": p}}
                )
                for p in seal_payloads(public, key["id"], count)
            ]

        common: dict[str, Any] = {
            "url": url,
            "settings": settings,
            "server_pid": proc.pid,
            "tmp": tmp,
        }
        noop: dict[str, Any] = {"method": "GET", "path": "/healthz", "bodies": []}
        card: dict[str, Any] = {"method": "POST", "path": "/v1/cards", "bodies": [card_body]}
        enc: dict[str, Any] = {"method": "POST", "path": "/v1/cards", "bodies": []}
        full, half = duration, duration / 2
        plan: list[tuple[str, dict[str, Any], str, int, float]] = [
            ("noop", noop, "raw", 1, full),
            ("card", card, "raw", 1, full),
            ("hpke", enc, "raw", 1, full),
            # The same 16 connections split over two client processes: if one
            # client process were the limit, these would go faster.
            ("noop_2c", noop, "raw", 2, half),
            ("card_2c", card, "raw", 2, half),
            # The client the gateway really uses, for comparison.
            ("noop_httpx", noop, "httpx", 1, half),
            ("card_httpx", card, "httpx", 1, half),
        ]
        runs: dict[str, dict[str, Any]] = {}
        for name, planned, client, clients, seconds in plan:
            print(f"  {name}…", file=sys.stderr, flush=True)
            what = planned
            if planned is enc:
                # One payload per request: no faster than the card path, plus margin.
                count = int(runs["card"]["rps"] * (seconds + 1.0) * 1.5) + 500
                what = {**enc, "bodies": hpke_bodies(count)}
            runs[name] = http_run(
                **common, **what, client=client, clients=clients, duration=seconds, warmup=1.0
            )
        return runs
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------- reporting


def _n(x: float) -> str:
    return f"{x:,.0f}"


def report(result: dict[str, Any]) -> str:
    f, ip, h = result["floor_us"], result["in_process"], result["http"]
    lines = [
        f"Machine: {result['machine']}. Date: {result['date']}. "
        f"In-process phases pinned to: {result.get('pinned') or 'not pinned'}.",
        "",
        "| crypto floor (best of 5) | µs/op | ops/s |",
        "|---|---|---|",
    ]
    for key, label in (
        (
            "hpke_open_raw",
            f"HPKE open, {len(card_json())}-byte card JSON, raw key parsed each time",
        ),
        ("hpke_open", f"HPKE open, {len(card_json())}-byte card JSON, key loaded once"),
        ("hmac", "HMAC-SHA256 fingerprint"),
        ("seal", "AES-256-GCM seal of the card record"),
        ("wrap", "KEK wrap of the data key (`LocalKeyring.wrap`)"),
        ("floor_plain", "**floor, card path** (HMAC + seal + wrap)"),
        ("floor_hpke", "**floor, HPKE path** (open with loaded key + HMAC + seal + wrap)"),
    ):
        lines.append(f"| {label} | {f[key]:.1f} | {_n(1e6 / f[key])} |")
    lines += [
        "",
        f"In process. Vault database: SQLite, {ip['journal']}. Concurrent rows: "
        f"{ip['threads']} threads calling back to back.",
        "",
        "| in process | card (`tokenize`) | HPKE (`tokenize_encrypted`) |",
        "|---|---|---|",
    ]
    floors = {p: 1e6 / f[f"floor_{p}"] for p in ("plain", "hpke")}

    def cell(key: str, path: str) -> str:
        base, _, conc = key.partition("_")
        ops = ip[f"{base}_{path}{'_' + conc if conc else ''}"]
        return f"{_n(ops)} ops/s, {1e6 / ops:,.1f} µs, **{ops / floors[path]:.3f}** of floor"

    lines.append(f"| crypto floor | {_n(floors['plain'])} ops/s | {_n(floors['hpke'])} ops/s |")
    threads = ip["threads"]
    for key, label in (
        ("pipeline", "pipeline without storage, sequential (best of 3)"),
        ("service", "`VaultService`, the vault's database, sequential (median of 3)"),
        (
            "service_conc",
            f"`VaultService`, the vault's database, {threads} threads (median of 3)",
        ),
        ("wal", "`VaultService` on WAL, `synchronous=NORMAL`, sequential (median of 3)"),
        ("wal_conc", f"`VaultService` on WAL, `synchronous=NORMAL`, {threads} threads"),
    ):
        lines.append(f"| {label} | {cell(key, 'plain')} | {cell(key, 'hpke')} |")
    storage = {p: 1e6 / ip[f"service_{p}"] - 1e6 / ip[f"pipeline_{p}"] for p in floors}
    lines.append(
        f"| storage (service minus pipeline), sequential | {storage['plain']:,.0f} µs "
        f"| {storage['hpke']:,.0f} µs |"
    )
    shared = {p: 1e6 / ip[f"service_{p}_conc"] - 1e6 / ip[f"pipeline_{p}"] for p in floors}
    lines.append(
        f"| storage per tokenization, {threads} threads | {shared['plain']:,.0f} µs "
        f"| {shared['hpke']:,.0f} µs |"
    )
    lines += [
        "",
        "| `VaultService` time, cProfile (shares) | card | HPKE |",
        "|---|---|---|",
    ]
    buckets = list(ip["profile_plain"])
    buckets += [b for b in ip["profile_hpke"] if b not in buckets]
    for b in buckets:
        lines.append(
            f"| {b} | {ip['profile_plain'].get(b, 0):.0%} | {ip['profile_hpke'].get(b, 0):.0%} |"
        )
    for path, title in (("plain", "card"), ("hpke", "HPKE")):
        lines += [
            "",
            f"| pipeline without storage, {title}: top own time (cProfile) | share |",
            "|---|---|",
        ]
        for name, share in ip[f"profile_pipeline_{path}"]:
            lines.append(f"| `{name}` | {share:.0%} |")
    if h is None:
        return "\n".join(lines)
    lines += [
        "",
        "| HTTP, mTLS, 16 connections | client | client processes | req/s | p50 / p99 ms "
        "| ratio to no-op | server CPU | client CPU | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {"noop": "`GET /healthz` (no-op)", "card": "`POST /v1/cards` card",
              "hpke": "`POST /v1/cards` HPKE"}  # fmt: skip
    for key, r in h.items():
        kind = key.split("_")[0]
        baseline = h[key.replace(kind, "noop", 1)]["rps"]
        client = "httpx" if r["client"] == "httpx" else "raw asyncio"
        client_cpu = " + ".join(f"{c:.0%}" for c in r["client_cpu"])
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items()))
        lines.append(
            f"| {labels[kind]} | {client} | {r['clients']} | {_n(r['rps'])} "
            f"| {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['rps'] / baseline:.2f} "
            f"| {r['server_cpu']:.0%} | {client_cpu} | {statuses} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10, help="seconds per HTTP measurement")
    ap.add_argument(
        "--window", type=float, default=1.0, help="seconds per in-process timing window"
    )
    ap.add_argument(
        "--threads", type=int, default=CONCURRENCY, help="callers for the concurrent rows"
    )
    ap.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run the crypto floor and in-process phases on this CPU only (as `taskset -c` "
        "would); the HTTP phase then runs on every CPU again",
    )
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP phase")
    ap.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        return client_main(args.client)
    every_cpu = os.sched_getaffinity(0)
    if args.pin is not None:
        # Threads started from now on (the audit writer, the benchmark's
        # callers) inherit this.
        os.sched_setaffinity(0, {args.pin})

    tmp = Path(tempfile.mkdtemp(prefix="pw-vault-bench-"))
    try:
        started = time.monotonic()
        print("crypto floor…", file=sys.stderr, flush=True)
        floor = crypto_floor(tmp, seconds=args.window / 5)
        print("in process…", file=sys.stderr, flush=True)
        inproc = in_process(tmp, seconds=args.window, threads=args.threads)
        os.sched_setaffinity(0, every_cpu)
        http = None
        if not args.no_http:
            print("HTTP…", file=sys.stderr, flush=True)
            http = http_bench(tmp, duration=args.duration)
        result = {
            "pinned": f"CPU {args.pin}" if args.pin is not None else None,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "duration_s": args.duration,
            "floor_us": floor,
            "in_process": inproc,
            "http": http,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        print(report(result))
        print(f"\n(run took {result['elapsed_s']} s)", file=sys.stderr)
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / f"vault-tokenize-{int(time.time())}.json").write_text(
            json.dumps(result, indent=2)
        )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
