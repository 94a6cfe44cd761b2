#!/usr/bin/env python3
"""Audit log: durable appends per second and full verification time.

    .venv/bin/python bench/audit_log.py [--threads 64] [--per-thread 1500] [--tasks 64]
        [--per-task 1500] [--processes 2] [--verify-size 1000000] [--markdown]

What the rows mean:

- **Durable**: the call returns only after its entry's transaction has
  committed on a SQLite file in WAL mode with ``synchronous=FULL`` (the WAL is
  fsync'ed before ``COMMIT`` returns), and raises if it did not.
- **Group commit** (the ``record()`` and ``arecord()`` rows): each call submits
  *one* entry; the log's writer thread commits whatever is queued (up to
  ``max_batch=1024``) in one transaction. The batching is the writer's, not
  the caller's; "entries/commit" is the mean that resulted.
- **Caller-batched** (the ``record_many()`` row): each call submits 100
  entries, which are committed together (possibly with other callers' ones).
- **Baseline**: ``record()`` with ``max_batch=1``, one transaction per entry,
  same threads, same run; "x baseline" divides by it.

Rows:

1. ``record()``: ``--threads`` threads, each blocking until its entry commits.
2. The same from ``--processes`` processes appending to one file (as gateway
   workers); the store serialises their writers with an flock.
3. ``arecord()``: ``--tasks`` asyncio tasks on one event loop, each awaiting its
   entry; the writer settles a whole batch with one wake-up of the loop.
4. The same from ``--processes`` processes (one loop each), one file.
5. ``record_many()``: 4 threads, batches of 100.
6. Baseline: one transaction per append.
7. Build a ``--verify-size`` log with ``record_many`` (chunks of 20,000) and
   sign it; then ``verify_store`` re-verifies all of it (rows, tree, heads).

Every entry is a realistic one (origin, resource, details, one HMAC'ed
sensitive value), built by the caller as the service builds it; tree
maintenance runs in the background as in service. Prints the machine (nproc,
CPU model), the load average before and after (the machine may be shared) and
the date; ``--markdown`` prints the table as Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paywarden.audit.entry import Actor, Origin, Resource
from paywarden.audit.log import AuditLog
from paywarden.audit.sealing import FernetSealer
from paywarden.audit.signing import Signer
from paywarden.audit.store import AuditStore
from paywarden.audit.verify import verify_store

# Fixed so every bench process opens the same store's sealed signing key.
BENCH_KEY = base64.urlsafe_b64encode(b"paywarden-audit-bench-key-32byte")
ACTOR = Actor.api_key("key_bench")


def _in_threads(work: Callable[[int], None], threads: int) -> None:
    """Run ``work(t)`` for t in 0..threads-1, each on its own thread, and wait."""
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


class Commits:
    """Counts the durable transactions of one log (wraps ``store.append``)."""

    def __init__(self, log: AuditLog) -> None:
        self.transactions = 0
        self.entries = 0
        real = log.store.append

        def append(count: int, now_micros: int, build: Any) -> int:
            first = real(count, now_micros, build)
            self.transactions += 1
            self.entries += count
            return first

        log.store.append = append  # type: ignore[method-assign]


def open_log(path: Path, **kw: Any) -> AuditLog:
    store = AuditStore(f"sqlite:///{path}")
    signer = Signer(store, service="gateway", sealer=FernetSealer(BENCH_KEY))
    return AuditLog(
        store,
        service="gateway",
        signer=signer,
        pseudonym_key=os.urandom(32),
        sign_interval=60.0,
        **kw,
    )


def entry(t: int, i: int) -> dict[str, Any]:
    """One request's entry, built as the service builds it (fresh objects)."""
    return {
        "event": "payment_intent.confirmed",
        "outcome": "success",
        "actor": ACTOR,
        "origin": Origin(ip="203.0.113.10", request_id=f"req_{t}_{i}"),
        "resource": Resource("payment_intent", f"pi_{t}_{i}"),
        "account": "acct_bench",
        "details": {"amount": 1999, "currency": "eur"},
        "sensitive": {"email": f"c{t}@example.com"},
    }


@dataclass
class Result:
    entries: int
    seconds: float
    transactions: int

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def per_commit(self) -> float:
        return self.entries / max(self.transactions, 1)


def _timed(log: AuditLog, run: Callable[[], int]) -> Result:
    commits = Commits(log)
    start = time.perf_counter()
    n = run()
    elapsed = time.perf_counter() - start
    log.close()
    # close() records audit.stopped: not part of the measured work.
    return Result(n, elapsed, commits.transactions - 1)


def thread_appends(path: Path, threads: int, per_thread: int, max_batch: int = 1024) -> Result:
    """``record()`` from ``threads`` threads, one entry per call."""
    log = open_log(path, max_batch=max_batch)

    def work(t: int) -> None:
        for i in range(per_thread):
            log.record(**entry(t, i))

    def run() -> int:
        _in_threads(work, threads)
        return threads * per_thread

    return _timed(log, run)


def task_appends(path: Path, tasks: int, per_task: int) -> Result:
    """``arecord()`` from ``tasks`` tasks on one asyncio loop, one entry per call."""
    log = open_log(path)

    async def work(t: int) -> None:
        for i in range(per_task):
            await log.arecord(**entry(t, i))

    async def all_tasks() -> None:
        await asyncio.gather(*(work(t) for t in range(tasks)))

    def run() -> int:
        asyncio.run(all_tasks())
        return tasks * per_task

    return _timed(log, run)


def batched_appends(path: Path, threads: int, batches: int, batch: int) -> Result:
    """``record_many()`` of ``batch`` entries per call, from ``threads`` threads."""
    log = open_log(path)

    def work(t: int) -> None:
        for b in range(batches):
            log.record_many(
                [entry(t, b * batch + i) for i in range(batch)],
                chunk=batch,
            )

    def run() -> int:
        _in_threads(work, threads)
        return threads * batches * batch

    return _timed(log, run)


def appends_in_processes(
    path: Path, mode: str, processes: int, callers: int, per_caller: int
) -> Result:
    """Several processes (as gateway workers), each with its own group-commit
    writer, appending to one SQLite file; the store serialises them with flock."""
    AuditStore(f"sqlite:///{path}").dispose()  # migrate once, before the race
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", mode, str(path), str(callers),
             str(per_caller), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]  # fmt: skip
    outputs = [p.communicate()[0].split() for p in procs]
    end = max(float(out[0]) for out in outputs)
    transactions = sum(int(out[1]) for out in outputs)
    return Result(processes * callers * per_caller, end - start_at, transactions)


def _worker(mode: str, path: Path, callers: int, per_caller: int, start_at: float) -> None:
    time.sleep(max(start_at - time.time(), 0))
    if mode == "threads":
        result = thread_appends(path, callers, per_caller)
    else:
        result = task_appends(path, callers, per_caller)
    print(time.time(), result.transactions)


def build_and_verify(path: Path, size: int) -> tuple[float, float, int]:
    log = open_log(path, lifecycle=False)
    start = time.perf_counter()
    log.record_many(
        (
            {
                "event": "card.tokenized",
                "outcome": "success",
                "actor": ACTOR,
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
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--threads", type=int, default=64, help="record() threads (default 64)")
    ap.add_argument("--per-thread", type=int, default=1500, help="entries per thread")
    ap.add_argument("--tasks", type=int, default=64, help="arecord() tasks (default 64)")
    ap.add_argument("--per-task", type=int, default=1500, help="entries per task")
    ap.add_argument("--processes", type=int, default=2, help="processes on one file")
    ap.add_argument("--verify-size", type=int, default=1_000_000)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, path, callers, per_caller, start_at = args.worker
        _worker(mode, Path(path), int(callers), int(per_caller), float(start_at))
        return
    load_before = load_average()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="pw-audit-bench-") as tmp:
        d = Path(tmp)
        threads = thread_appends(d / "threads.sqlite", args.threads, args.per_thread)
        threads_multi = appends_in_processes(
            d / "threads-multi.sqlite", "threads", args.processes, args.threads, args.per_thread
        )
        tasks = task_appends(d / "tasks.sqlite", args.tasks, args.per_task)
        tasks_multi = appends_in_processes(
            d / "tasks-multi.sqlite", "tasks", args.processes, args.tasks, args.per_task
        )
        batched = batched_appends(d / "batched.sqlite", 4, 250, 100)
        single = thread_appends(
            d / "single.sqlite", args.threads, args.per_thread // 5, max_batch=1
        )
        build, verify, n = build_and_verify(d / "verify.sqlite", args.verify_size)
    p, th, tk = args.processes, args.threads, args.tasks
    appends = [
        (f"`record()`, {th} threads, 1 entry per call, group commit", threads),
        (f"`record()`, {p} processes x {th} threads, one file, group commit", threads_multi),
        (f"`arecord()`, {tk} tasks on one event loop, 1 entry per call, group commit", tasks),
        (f"`arecord()`, {p} processes x {tk} tasks (a loop each), one file", tasks_multi),
        ("`record_many()`, 4 threads x 100 entries per call (caller-batched)", batched),
        (f"`record()`, {th} threads, one transaction per entry (baseline)", single),
    ]
    header = ("durable appends/s", "result", "x baseline", "entries/commit")
    rows = [
        (what, f"{r.rate:,.0f}", f"{r.rate / single.rate:.1f}", f"{r.per_commit:,.1f}")
        for what, r in appends
    ]
    rows.append(
        (
            f"build {n:,} entries with `record_many` (+ node cache, signed head)",
            f"{build:.1f} s",
            "",
            "20,000",
        )
    )
    rows.append(
        (f"verify {n:,} entries (rows, leaf hashes, seq, tree, heads)", f"{verify:.1f} s", "", "")
    )
    machine = f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}"
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|---:|---:|---:|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        width = max(len(r[0]) for r in rows)
        print(f"{header[0]:<{width}}  {header[1]:>10}  {header[2]:>10}  {header[3]:>14}")
        for row in rows:
            print(f"{row[0]:<{width}}  {row[1]:>10}  {row[2]:>10}  {row[3]:>14}")
    print(
        "\ndurable: returns only after its entry's transaction committed "
        "(SQLite WAL, synchronous=FULL)."
        "\ngroup commit: one entry per call; the writer commits all queued entries "
        "(max 1,024) in one transaction."
    )
    print(f"\nmachine: {machine}\ndate: {when}\nload average before: {load_before}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
