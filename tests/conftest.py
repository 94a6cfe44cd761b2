"""Shared fixtures: a real gateway over a real database, real sandbox acquirers.

The acquirers run as real HTTP servers (uvicorn, loopback) for the whole
session; each test gets its own gateway database and its own merchants.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paywarden.acquirer_sandbox.app import create_app as create_sandbox
from paywarden.config import AcquirerConfig, Settings, load_or_create_secrets
from paywarden.core.clock import SystemClock
from paywarden.core.secrets import Secret
from paywarden.gateway.app import create_app
from paywarden.gateway.container import Gateway, build_gateway
from paywarden.migrations import upgrade
from paywarden.tenancy import service as tenancy
from tests.support.servers import run_app_in_thread

ACQUIRER_TOKEN = "test-acquirer-token-" + "x" * 16


@dataclass
class Acquirers:
    urls: dict[str, str]

    def control(self, name: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = httpx.post(
            f"{self.urls[name]}{path}",
            json=body or {},
            headers={"Authorization": f"Bearer {ACQUIRER_TOKEN}"},
            timeout=5,
        )
        r.raise_for_status()
        return r.json()

    def faults(self, name: str, **spec: Any) -> None:
        self.control(name, "/_control/faults", spec)

    def reset(self) -> None:
        for name in self.urls:
            self.control(name, "/_control/reset")

    def stats(self, name: str) -> Any:
        r = httpx.get(
            f"{self.urls[name]}/_control/stats",
            headers={"Authorization": f"Bearer {ACQUIRER_TOKEN}"},
            timeout=5,
        )
        return r.json()


@pytest.fixture(scope="session")
def acquirers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acquirers]:
    base = tmp_path_factory.mktemp("acquirers")
    apps = {
        name: create_sandbox(
            name=name, db_path=str(base / f"{name}.db"), token=ACQUIRER_TOKEN, public_url=""
        )
        for name in ("sandbox_a", "sandbox_b")
    }
    with run_app_in_thread(apps["sandbox_a"]) as a, run_app_in_thread(apps["sandbox_b"]) as b:
        yield Acquirers({"sandbox_a": a, "sandbox_b": b})


@dataclass
class VaultServer:
    """A real vault process-equivalent: its own database and keyring, served
    over mutual TLS by uvicorn on loopback."""

    url: str
    settings: Settings
    service: Any  # paywarden.vault.service.VaultService

    @property
    def pki_dir(self) -> Path:
        return self.settings.resolved_pki_dir

    def client(self, identity: str | None = "gateway") -> httpx.Client:
        from paywarden.vault.tlsserver import client_ssl_context

        pki = self.pki_dir
        ctx = client_ssl_context(
            cert=pki / f"{identity}.pem" if identity else None,
            key=pki / f"{identity}.key" if identity else None,
            ca_bundle=pki / "ca-bundle.pem",
        )
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10, trust_env=False)


@contextlib.contextmanager
def serve_vault(
    home: Path, acquirer_urls: dict[str, str], *, port: int = 0
) -> Iterator[VaultServer]:
    from paywarden.vault.app import create_vault_app
    from paywarden.vault.server import build_vault, ensure_pki, revocation_check
    from paywarden.vault.tlsserver import make_uvicorn_config

    vs = Settings(
        home=home,
        acquirers=[
            AcquirerConfig(name=n, url=u, priority=i)
            for i, (n, u) in enumerate(acquirer_urls.items())
        ],
        acquirer_timeout_seconds=1.0,
    )
    pki = ensure_pki(vs)
    service = build_vault(vs)
    server_cert = pki.cert_for("vault")

    def config(app: Any) -> Any:
        return make_uvicorn_config(
            app,
            host="127.0.0.1",
            port=0,
            cert=server_cert.cert_path,
            key=server_cert.key_path,
            ca_bundle=pki.ca_bundle_path(),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )

    try:
        with run_app_in_thread(
            create_vault_app(service, revoked=revocation_check(pki)),
            config=config,
            scheme="https",
            port=port,
        ) as url:
            yield VaultServer(url=url, settings=vs, service=service)
    finally:
        service.close()
        service.db.dispose()


@pytest.fixture(scope="session")
def vault(tmp_path_factory: pytest.TempPathFactory, acquirers: Acquirers) -> Iterator[VaultServer]:
    with serve_vault(tmp_path_factory.mktemp("vault"), acquirers.urls) as v:
        yield v


@pytest.fixture
def clean_acquirers(acquirers: Acquirers) -> Iterator[Acquirers]:
    acquirers.reset()
    yield acquirers
    acquirers.reset()


def pg_url() -> str:
    return os.environ.get(
        "PAYWARDEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


def redis_url() -> str:
    return os.environ.get("PAYWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_service(name: str, probe: Any) -> None:
    """Skip when a scale-out service is missing, except in CI, where it must be there."""
    try:
        probe()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI but unreachable: {exc}")
        pytest.skip(f"{name} not reachable ({type(exc).__name__}); set CI=true to require it")


def _probe_pg() -> None:
    import psycopg

    psycopg.connect(_pg_dsn(), connect_timeout=2).close()


def _pg_dsn() -> str:
    return pg_url().replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema; yields a URL whose search_path points at it."""
    import psycopg

    require_service("PostgreSQL", _probe_pg)
    name = f"pw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in pg_url() else "?"
    try:
        yield f"{pg_url()}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(_pg_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Every API test runs on both storage backends."""
    if request.param == "sqlite":
        yield None
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def settings(
    tmp_path: Path, clean_acquirers: Acquirers, database_url: str | None, vault: VaultServer
) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        vault_url=vault.url,
        pki_dir=vault.pki_dir,
        acquirers=[
            AcquirerConfig(name=n, url=u, priority=i)
            for i, (n, u) in enumerate(clean_acquirers.urls.items())
        ],
        acquirer_timeout_seconds=1.0,
        reconcile_grace_seconds=0,
        circuit_failure_threshold=3,
        circuit_reset_seconds=60,
    )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    secrets = dataclasses.replace(
        load_or_create_secrets(settings.home),
        acquirer_token=Secret(ACQUIRER_TOKEN, "acquirer_token"),
    )
    upgrade(settings.resolved_database_url)
    gw = build_gateway(settings, secrets, clock=SystemClock())
    yield gw
    gw.close()


@dataclass
class Merchant:
    account_id: str
    secret_key: str
    publishable_key: str
    gw: Gateway

    def restricted(self, scopes: dict[str, str], livemode: bool = False) -> str:
        with self.gw.db.write() as s:
            k = tenancy.create_key(
                s,
                account_id=self.account_id,
                kind="restricted",
                livemode=livemode,
                pepper=self.gw.secrets.api_key_pepper,
                now=int(time.time()),
                scopes=scopes,
            )
            return k.secret.reveal()

    def key(self, kind: str, livemode: bool) -> str:
        with self.gw.db.write() as s:
            k = tenancy.create_key(
                s,
                account_id=self.account_id,
                kind=kind,
                livemode=livemode,
                pepper=self.gw.secrets.api_key_pepper,
                now=int(time.time()),
            )
            return k.secret.reveal()


def make_merchant(gw: Gateway, name: str = "Acme") -> Merchant:
    with gw.db.write() as s:
        acct, sk, pk = tenancy.create_merchant(
            s,
            name=name,
            email=None,
            pepper=gw.secrets.api_key_pepper,
            now=int(time.time()),
            key_name="test",
        )
        return Merchant(acct.id, sk.secret.reveal(), pk.secret.reveal(), gw)


@pytest.fixture
def merchant(gateway: Gateway) -> Merchant:
    return make_merchant(gateway)


class Api:
    """A thin client speaking Stripe's form encoding, as the SDKs do."""

    def __init__(self, client: httpx.Client, key: str | None) -> None:
        self.client = client
        self.key = key

    def _headers(self, key: str | None, idem: str | None) -> dict[str, str]:
        h = {}
        k = key if key is not None else self.key
        if k:
            h["Authorization"] = f"Bearer {k}"
        if idem:
            h["Idempotency-Key"] = idem
        return h

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        idem: str | None = None,
    ) -> httpx.Response:
        return self.client.post(path, data=flatten(data or {}), headers=self._headers(key, idem))

    def get(
        self, path: str, params: dict[str, Any] | None = None, *, key: str | None = None
    ) -> httpx.Response:
        return self.client.get(path, params=flatten(params or {}), headers=self._headers(key, None))

    def delete(self, path: str, *, key: str | None = None) -> httpx.Response:
        return self.client.delete(path, headers=self._headers(key, None))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        name = f"{prefix}[{k}]" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, name))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    out.update(flatten(item, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = str(item)
        elif isinstance(v, bool):
            out[name] = "true" if v else "false"
        else:
            out[name] = str(v)
    return out


@pytest.fixture
def gateway_url(gateway: Gateway) -> Iterator[str]:
    """The gateway served by uvicorn on loopback, as in production."""
    with run_app_in_thread(create_app(gateway)) as url:
        gateway.payments.base_url = url  # 3-D Secure return links point here
        yield url


@pytest.fixture
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30) as c:
        yield c


@pytest.fixture
def api(client: httpx.Client, merchant: Merchant) -> Api:
    return Api(client, merchant.secret_key)
