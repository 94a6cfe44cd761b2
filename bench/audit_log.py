#!/usr/bin/env python3
"""Audit log: durable appends per second and full verification time.

    .venv/bin/python bench/audit_log.py [--threads 64] [--per-thread 1500] [--verify-size 1000000]

1. Group commit: ``--threads`` appender threads each call ``AuditLog.record()``
   (which returns only after a durable commit) on a SQLite file in WAL mode with
   ``synchronous=FULL``; tree maintenance runs in the background as in service.
2. Baseline, same run, same threads: one transaction per append (``max_batch=1``).
3. Verification: a log of ``--verify-size`` entries is built with ``record_many``
   and signed, then ``verify_store`` re-verifies all of it (rows, tree, heads).

Prints a table and the machine (nproc, CPU model) and date; ``--markdown``
prints the table as Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from paywarden.audit.entry import Actor, Origin, Resource
from paywarden.audit.log import AuditLog
from paywarden.audit.sealing import FernetSealer
from paywarden.audit.signing import Signer
from paywarden.audit.store import AuditStore
from paywarden.audit.verify import verify_store

# Fixed so every bench process opens the same store's sealed signing key.
BENCH_KEY = base64.urlsafe_b64encode(b"paywarden-audit-bench-key-32byte")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def open_log(path: Path, **kw: object) -> AuditLog:
    store = AuditStore(f"sqlite:///{path}")
    signer = Signer(store, service="gateway", sealer=FernetSealer(BENCH_KEY))
    return AuditLog(
        store,
        service="gateway",
        signer=signer,
        pseudonym_key=os.urandom(32),
        sign_interval=60.0,
        **kw,  # type: ignore[arg-type]
    )


def appends(path: Path, threads: int, per_thread: int, max_batch: int) -> float:
    log = open_log(path, max_batch=max_batch)
    actor = Actor.api_key("key_bench")

    def work(t: int) -> None:
        for i in range(per_thread):
            log.record(
                event="payment_intent.confirmed",
                outcome="success",
                actor=actor,
                origin=Origin(ip="203.0.113.10", request_id=f"req_{t}_{i}"),
                resource=Resource("payment_intent", f"pi_{t}_{i}"),
                account="acct_bench",
                details={"amount": 1999, "currency": "eur"},
                sensitive={"email": f"c{t}@example.com"},
            )

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    log.close()
    return threads * per_thread / elapsed


def batched_appends(path: Path, threads: int, batches: int, batch: int) -> float:
    """Callers that submit entries in batches (``record_many``, each call one
    durable transaction), as a service flushing what a request produced or an
    importer would: the batched path the goal speaks of."""
    log = open_log(path)
    actor = Actor.api_key("key_bench")

    def work(t: int) -> None:
        for b in range(batches):
            log.record_many(
                [
                    {
                        "event": "payment_intent.confirmed",
                        "outcome": "success",
                        "actor": actor,
                        "origin": Origin(ip="203.0.113.10", request_id=f"req_{t}_{b}_{i}"),
                        "resource": Resource("payment_intent", f"pi_{t}_{b}_{i}"),
                        "account": "acct_bench",
                        "details": {"amount": 1999, "currency": "eur"},
                        "sensitive": {"email": f"c{t}@example.com"},
                    }
                    for i in range(batch)
                ],
                chunk=batch,
            )

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    log.close()
    return threads * batches * batch / elapsed


def appends_in_processes(path: Path, processes: int, threads: int, per_thread: int) -> float:
    """Several processes (as gateway workers), each with its own group-commit
    writer, appending to one SQLite file; the store serialises them with flock."""
    AuditStore(f"sqlite:///{path}").dispose()  # migrate once, before the race
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(path), str(threads), str(per_thread),
             str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]  # fmt: skip
    ends = [float(p.communicate()[0].strip()) for p in procs]
    return processes * threads * per_thread / (max(ends) - start_at)


def _worker(path: Path, threads: int, per_thread: int, start_at: float) -> None:
    time.sleep(max(start_at - time.time(), 0))
    appends(path, threads, per_thread, max_batch=1024)
    print(time.time())


def build_and_verify(path: Path, size: int) -> tuple[float, float, int]:
    log = open_log(path, lifecycle=False)
    actor = Actor.api_key("key_bench")
    start = time.perf_counter()
    log.record_many(
        (
            {
                "event": "card.tokenized",
                "outcome": "success",
                "actor": actor,
                "resource": Resource("card", f"tok_{i}"),
                "account": "acct_bench",
                "details": {"brand": "visa", "last4": "4242"},
            }
            for i in range(size)
        ),
        chunk=20_000,
    )
    log.sign_tree_head()
    build = time.perf_counter() - start
    log.close()
    store = AuditStore(f"sqlite:///{path}")
    start = time.perf_counter()
    report = verify_store(store, service="gateway")
    elapsed = time.perf_counter() - start
    store.dispose()
    assert report.ok, report.findings[:5]
    return build, elapsed, report.entries_checked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--per-thread", type=int, default=1500)
    ap.add_argument("--verify-size", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        path, threads, per_thread, start_at = args.worker
        _worker(Path(path), int(threads), int(per_thread), float(start_at))
        return
    with tempfile.TemporaryDirectory(prefix="pw-audit-bench-") as tmp:
        d = Path(tmp)
        group = appends(d / "group.sqlite", args.threads, args.per_thread, max_batch=1024)
        multi = appends_in_processes(
            d / "multi.sqlite", args.processes, args.threads, args.per_thread
        )
        single = appends(d / "single.sqlite", args.threads, args.per_thread // 5, max_batch=1)
        batched = batched_appends(d / "batched.sqlite", 4, 250, 100)
        build, verify, n = build_and_verify(d / "verify.sqlite", args.verify_size)
    rows = [
        (f"durable appends/s, group commit, {args.threads} threads", f"{group:,.0f}"),
        (
            f"durable appends/s, group commit, {args.processes} processes x {args.threads} "
            "threads, one file",
            f"{multi:,.0f}",
        ),
        (
            "durable appends/s, batched submission (4 threads x record_many of 100)",
            f"{batched:,.0f}",
        ),
        (
            f"durable appends/s, one transaction per append, {args.threads} threads",
            f"{single:,.0f}",
        ),
        (f"build {n:,} entries with record_many (+ node cache, signed head)", f"{build:.1f} s"),
        (f"verify {n:,} entries (rows, leaf hashes, seq, tree, heads)", f"{verify:.1f} s"),
    ]
    machine = f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.markdown:
        print("| what | result |\n|---|---|")
        for what, result in rows:
            print(f"| {what} | {result} |")
    else:
        width = max(len(w) for w, _ in rows)
        for what, result in rows:
            print(f"{what:<{width}}  {result:>10}")
    print(f"\nmachine: {machine}\ndate: {when}")


if __name__ == "__main__":
    main()
