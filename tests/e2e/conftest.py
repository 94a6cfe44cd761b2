"""End-to-end fixtures: the real ``paywarden run`` stack as a separate process.

``stack`` (session scope) starts ``python -m paywarden.cli.main run`` in its own
process group with a temporary ``PAYWARDEN_HOME`` and free loopback ports, waits
for ``dev-credentials.json`` and ``/healthz``, and stops the whole group at the
end. Tests talk to it only over HTTP (the official ``stripe`` SDK, ``httpx``)
and through the ``paywarden`` CLI, exactly as a merchant would.

When a test that uses a stack fails, the tail of ``$PAYWARDEN_HOME/logs/*.log``
is attached to the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 15.0
LOG_TAIL_LINES = 60
LEAK_TEST_NAME = "test_zz_no_secret_in_logs_or_database"


# ------------------------------------------------------------------ free ports
def _bind(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def free_ports() -> tuple[int, int]:
    """A free port for the gateway and a free pair ``(p, p+1)`` for the acquirers.

    All sockets are held until every port is chosen, so the three are distinct;
    they are released just before the stack binds them (a small, accepted race).
    """
    held: list[socket.socket] = []
    try:
        gateway = _bind(0)
        assert gateway is not None
        held.append(gateway)
        for _ in range(200):
            first = _bind(0)
            assert first is not None
            base = first.getsockname()[1]
            second = _bind(base + 1) if base < 65535 else None
            if second is not None:
                held += [first, second]
                return gateway.getsockname()[1], base
            first.close()
        raise RuntimeError("no two consecutive free ports on 127.0.0.1")
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------------- stack
@dataclass
class Stack:
    home: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False)
    gateway_url: str
    account: str
    secret_key: str = field(repr=False)
    publishable_key: str = field(repr=False)
    acquirer_urls: dict[str, str]
    acquirer_token: str = field(repr=False)
    # Every secret handed to a test (API keys, webhook signing secrets): the leak
    # check looks for each of them in the logs and the database files.
    issued_secrets: list[str] = field(default_factory=list, repr=False)

    # ----------------------------------------------------------- clients
    def client(self, key: str | None = None) -> stripe.StripeClient:
        return stripe.StripeClient(
            key or self.secret_key,
            base_addresses={"api": self.gateway_url},
            max_network_retries=0,
        )

    def cli(self, *args: str) -> str:
        """Run ``paywarden <args>`` against this stack's home; return stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "paywarden.cli.main", *args],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(
                f"paywarden {' '.join(args)} exited {out.returncode}: "
                f"{out.stderr.decode(errors='replace')[-2000:]}"
            )
        return out.stdout.decode()

    def restricted_key(self, *scopes: str) -> str:
        args = ["keys", "create", "--account", self.account, "--kind", "restricted", "--json"]
        for sc in scopes:
            args += ["--scope", sc]
        key = str(json.loads(self.cli(*args))["key"])
        self.issued_secrets.append(key)
        return key

    # ------------------------------------------------- sandbox acquirers
    def _acq(self, name: str) -> str:
        return self.acquirer_urls[name]

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.acquirer_token}"}

    def faults(self, name: str, **spec: Any) -> dict[str, Any]:
        r = httpx.post(
            f"{self._acq(name)}/_control/faults", json=spec, headers=self._auth(), timeout=5
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def fault_plan(self, name: str) -> dict[str, Any]:
        r = httpx.get(f"{self._acq(name)}/_control/faults", headers=self._auth(), timeout=5)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def reset_faults(self) -> None:
        for url in self.acquirer_urls.values():
            httpx.post(f"{url}/_control/reset", headers=self._auth(), timeout=5).raise_for_status()

    def stats(self, name: str) -> dict[str, Any]:
        r = httpx.get(f"{self._acq(name)}/_control/stats", headers=self._auth(), timeout=5)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def authorizations_total(self, name: str) -> int:
        return int(self.stats(name)["authorizations"]["total"])

    # ---------------------------------------------------------- logs
    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for path in sorted((self.home / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {path.name} <==\n" + "\n".join(text))
        return "\n".join(parts) or "(no log files)"


def _base_env() -> dict[str, str]:
    # Nothing from the outer environment may reconfigure the stack under test.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PAYWARDEN_") and not k.startswith("STRIPE_")
    }


def _wait_ready(
    home: Path, proc: subprocess.Popen[bytes], gateway_url: str, tail: Callable[[], str]
) -> dict[str, Any]:
    creds_path = home / "dev-credentials.json"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"paywarden run exited with {proc.returncode}\n{tail()}")
        if creds_path.exists():
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{gateway_url}/healthz", timeout=1).status_code == 200:
                    creds: dict[str, Any] = json.loads(creds_path.read_text())
                    return creds
        time.sleep(0.1)
    raise RuntimeError(f"the stack did not come up in {STARTUP_TIMEOUT:.0f}s\n{tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # The run process stops its children; anything left in the group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def run_stack(base: Path, **overrides: str) -> Iterator[Stack]:
    """Start ``paywarden run`` under ``base``; ``overrides`` are PAYWARDEN_* settings
    (lower-case names without the prefix)."""
    home = base / "home"
    logs = home / "logs"
    logs.mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    port, acq_base = free_ports()
    vault_sock = _bind(0)
    assert vault_sock is not None
    vault_port = vault_sock.getsockname()[1]
    vault_sock.close()
    settings = {
        "vault_port": str(vault_port),
        "home": str(home),
        "host": "127.0.0.1",
        "port": str(port),
        "acquirer_base_port": str(acq_base),
        "acquirer_timeout_seconds": "1",
        "acquirer_connect_timeout_seconds": "1",
        "webhook_poll_seconds": "0.1",
        "webhook_backoff_base_seconds": "0.5",
        "webhook_timeout_seconds": "5",
        "reconcile_interval_seconds": "0.5",
        "reconcile_grace_seconds": "1",
        # The failover tests must not trip the breaker for the tests after them.
        "circuit_failure_threshold": "1000",
        **overrides,
    }
    env = {**_base_env(), **{f"PAYWARDEN_{k.upper()}": v for k, v in settings.items()}}
    # stdout carries the dev keys by design (the banner); it is kept outside logs/.
    # stderr carries the gateway's log lines: it goes to logs/, where the leak
    # check looks.
    with (
        (base / "run-stdout.txt").open("wb") as out,
        (logs / "gateway-stderr.log").open("wb") as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "paywarden.cli.main", "run"],
            env=env,
            cwd=base,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    gateway_url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return "\n".join(
            f"==> {p.name} <==\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
            for p in sorted(logs.glob("*.log"))
        )

    try:
        creds = _wait_ready(home, proc, gateway_url, tail)
        stack = Stack(
            home=home,
            proc=proc,
            env=env,
            gateway_url=str(creds["gateway_url"]),
            account=str(creds["account"]),
            secret_key=str(creds["secret_key"]),
            publishable_key=str(creds["publishable_key"]),
            acquirer_urls={
                "sandbox_a": f"http://127.0.0.1:{acq_base}",
                "sandbox_b": f"http://127.0.0.1:{acq_base + 1}",
            },
            acquirer_token=(home / "acquirer-token").read_text().strip(),
        )
        stack.issued_secrets += [stack.secret_key, stack.publishable_key]
        assert stack.gateway_url == gateway_url
        yield stack
        if proc.poll() is not None:
            raise RuntimeError(f"paywarden run died during the tests\n{tail()}")
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("paywarden-e2e")) as s:
        yield s


@pytest.fixture
def client(stack: Stack) -> stripe.StripeClient:
    return stack.client()


# ---------------------------------------------------------------- reporting
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    if rep.failed:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {}) or {}
        for name, value in funcargs.items():
            if isinstance(value, Stack):
                rep.sections.append((f"paywarden logs ({name})", value.log_tail()))
    return rep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The leak checks (``test_zz_*``) read what every other test left behind:
    run them last."""
    last = [i for i in items if i.name.startswith("test_zz_")]
    if last:
        items[:] = [i for i in items if not i.name.startswith("test_zz_")] + last
