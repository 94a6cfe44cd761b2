"""``paywarden`` command line: run the stack, manage merchants and keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from paywarden.config import Settings, ensure_home, load_or_create_secrets, write_private_json
from paywarden.db import Database
from paywarden.migrations import upgrade
from paywarden.tenancy import service as tenancy
from paywarden.tenancy.scopes import parse_scope_args


def _settings() -> Settings:
    # Everything Paywarden writes (databases, logs, keys) is private to its user.
    os.umask(0o077)
    s = Settings()
    ensure_home(s.home)
    return s


def _audit(
    settings: Settings,
    event: str,
    *,
    resource: tuple[str, str | None],
    account: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record a CLI action (merchants, API keys) in the gateway's audit log,
    *before* its transaction commits: if the entry cannot be written, the
    action does not happen (no unaudited credential change)."""
    import getpass

    from paywarden.audit import Actor, AuditError, Resource
    from paywarden.audit.service import open_reader

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    log = open_reader(settings, "gateway")
    try:
        log.record(
            event=event,
            outcome="success",
            actor=Actor.cli(user),
            resource=Resource(*resource),
            account=account,
            details=details,
        )
    except AuditError as exc:
        raise click.ClickException(f"the audit log is unavailable: {exc}") from exc
    finally:
        log.close()


def _db(settings: Settings) -> Database:
    upgrade(settings.resolved_database_url)
    return Database(settings.resolved_database_url)


@click.group()
def main() -> None:
    """Paywarden: a security-first, Stripe-compatible payment gateway."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    s = _settings()
    upgrade(s.resolved_database_url)
    click.echo("database is at the latest schema")


@main.group()
def merchants() -> None:
    """Merchants (accounts)."""


@merchants.command("create")
@click.option("--name", required=True)
@click.option("--email", default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output")
def merchants_create(name: str, email: str | None, as_json: bool) -> None:
    """Create a merchant with test-mode secret and publishable keys."""
    s = _settings()
    secrets = load_or_create_secrets(s.home)
    database = _db(s)
    now = int(time.time())
    with database.write() as sess:
        acct, sk, pk = tenancy.create_merchant(
            sess,
            name=name,
            email=email,
            pepper=secrets.api_key_pepper,
            now=now,
            key_name="default",
        )
        _audit(s, "merchant.created", resource=("account", acct.id), account=acct.id)
        out = {
            "account": acct.id,
            "secret_key": sk.secret.reveal(),
            "publishable_key": pk.secret.reveal(),
        }
    _print_keys(out, as_json)


def _print_keys(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(out))
        return
    for k, v in out.items():
        click.echo(f"{k:>16}: {v}")
    click.echo("Keys are shown once; only their keyed hashes are stored.", err=True)


@main.group()
def keys() -> None:
    """API keys: create, list, roll, revoke."""


@keys.command("create")
@click.option("--account", required=True)
@click.option("--kind", type=click.Choice(["secret", "publishable", "restricted"]), required=True)
@click.option("--live", is_flag=True, help="Live mode (default: test)")
@click.option("--name", default=None)
@click.option("--scope", "scopes", multiple=True, help="resource:read|write (restricted keys)")
@click.option("--json", "as_json", is_flag=True)
def keys_create(
    account: str, kind: str, live: bool, name: str | None, scopes: tuple[str, ...], as_json: bool
) -> None:
    s = _settings()
    secrets = load_or_create_secrets(s.home)
    database = _db(s)
    try:
        scope_map = parse_scope_args(list(scopes)) if scopes else None
        with database.write() as sess:
            if tenancy.get_account(sess, account) is None:
                raise click.ClickException(f"no such account {account}")
            k = tenancy.create_key(
                sess,
                account_id=account,
                kind=kind,
                livemode=live,
                pepper=secrets.api_key_pepper,
                now=int(time.time()),
                name=name,
                scopes=scope_map,
            )
            _audit(
                s,
                "api_key.created",
                resource=("api_key", k.record_id),
                account=account,
                details={"kind": kind, "livemode": live, "scopes": scope_map},
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_keys({"id": k.record_id, "key": k.secret.reveal()}, as_json)


@keys.command("list")
@click.option("--account", required=True)
def keys_list(account: str) -> None:
    s = _settings()
    database = _db(s)
    now = int(time.time())
    with database.read() as sess:
        for k in tenancy.list_keys(sess, account_id=account):
            state = (
                "revoked"
                if k.revoked_at
                else (
                    "expired"
                    if k.expires_at and k.expires_at <= now
                    else f"expires {k.expires_at}"
                    if k.expires_at
                    else "active"
                )
            )
            scopes = ",".join(f"{r}:{lvl}" for r, lvl in (k.scopes or {}).items())
            mode = "live" if k.livemode else "test"
            click.echo(f"{k.id}  {k.kind:<11} {mode}  {k.hint}  {state}  {scopes}")


@keys.command("roll")
@click.option("--account", required=True)
@click.option("--key", "key_id", required=True)
@click.option(
    "--overlap",
    "overlap",
    type=int,
    default=None,
    help="Seconds the old key keeps working (default from settings)",
)
@click.option("--json", "as_json", is_flag=True)
def keys_roll(account: str, key_id: str, overlap: int | None, as_json: bool) -> None:
    s = _settings()
    secrets = load_or_create_secrets(s.home)
    database = _db(s)
    try:
        with database.write() as sess:
            k = tenancy.roll_key(
                sess,
                account_id=account,
                key_id=key_id,
                pepper=secrets.api_key_pepper,
                now=int(time.time()),
                overlap_seconds=s.key_roll_default_overlap_seconds if overlap is None else overlap,
            )
            _audit(
                s,
                "api_key.rolled",
                resource=("api_key", key_id),
                account=account,
                details={"new_key": k.record_id, "overlap_seconds": overlap},
            )
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_keys({"id": k.record_id, "key": k.secret.reveal(), "old_key_id": key_id}, as_json)


@keys.command("revoke")
@click.option("--account", required=True)
@click.option("--key", "key_id", required=True)
def keys_revoke(account: str, key_id: str) -> None:
    s = _settings()
    database = _db(s)
    try:
        with database.write() as sess:
            tenancy.revoke_key(sess, account_id=account, key_id=key_id, now=int(time.time()))
            _audit(s, "api_key.revoked", resource=("api_key", key_id), account=account)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {key_id}")


def ensure_dev_merchant(settings: Settings, database: Database) -> dict[str, Any]:
    """The dev merchant and its test keys, created once; the clear keys live only
    in ``dev-credentials.json`` (mode 0600) in the data directory."""
    path = settings.home / "dev-credentials.json"
    secrets = load_or_create_secrets(settings.home)
    if path.exists():
        creds: dict[str, Any] = json.loads(path.read_text())
        with database.read() as sess:
            if tenancy.get_account(sess, creds.get("account", "")) is not None:
                creds["gateway_url"] = settings.base_url
                write_private_json(path, creds)
                return creds
    now = int(time.time())
    with database.write() as sess:
        acct, sk, pk = tenancy.create_merchant(
            sess,
            name="Dev Merchant",
            email="dev@example.com",
            pepper=secrets.api_key_pepper,
            now=now,
            key_name="dev",
        )
        _audit(settings, "merchant.created", resource=("account", acct.id), account=acct.id)
        creds = {
            "gateway_url": settings.base_url,
            "account": acct.id,
            "secret_key": sk.secret.reveal(),
            "publishable_key": pk.secret.reveal(),
        }
    write_private_json(path, creds)
    return creds


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 30, verify: Any = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"process for {url} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"{url} did not come up in {timeout:.0f}s")


def start_acquirers(
    settings: Settings, token_file: Path, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for a in settings.acquirer_list():
        port = a.url.rsplit(":", 1)[-1].rstrip("/")
        log = open(log_dir / f"{a.name}.log", "ab")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
            [
                sys.executable,
                "-m",
                "paywarden.acquirer_sandbox",
                "--name",
                a.name,
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--db",
                str((settings.home / f"acquirer-{a.name}.db").resolve()),
                "--token-file",
                str(token_file),
                "--public-url",
                a.url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(p)
        _wait_http(f"{a.url}/healthz", p)
    return procs


def start_vault(settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    """The card vault as its own process, on mutual TLS."""
    from paywarden.vault.server import ensure_pki, pki_paths
    from paywarden.vault.tlsserver import client_ssl_context

    ensure_pki(settings)
    log = open(log_dir / "vault.log", "ab")  # noqa: SIM115 - owned by the child
    env = {**os.environ, "PAYWARDEN_HOME": str(settings.home.resolve())}
    p = subprocess.Popen(
        [sys.executable, "-m", "paywarden.cli.main", "vault", "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    paths = pki_paths(settings)
    ctx = client_ssl_context(
        cert=paths["gateway_cert"], key=paths["gateway_key"], ca_bundle=paths["ca_bundle"]
    )
    _wait_http(f"{vault_url(settings)}/healthz", p, verify=ctx)
    return p


def vault_url(settings: Settings) -> str:
    return settings.vault_url or f"https://127.0.0.1:{settings.vault_port}"


def shared_state_warning(workers: int, redis_url: str | None) -> str | None:
    """What an operator must know before running several workers on one node."""
    if workers <= 1 or redis_url:
        return None
    return (
        f"Warning: {workers} workers without PAYWARDEN_REDIS_URL: each keeps its own fraud "
        "velocity counters and failed-authentication limits, so an attacker spread over "
        "the workers gets that many times the budget. Set PAYWARDEN_REDIS_URL to share them."
    )


@main.command("run")
@click.option("--workers", type=int, default=None, help="Gateway worker processes")
@click.option("--no-acquirers", is_flag=True, help="Do not start the sandbox acquirers")
@click.option("--no-vault", is_flag=True, help="Do not start the card vault (raw cards refused)")
def run(workers: int | None, no_acquirers: bool, no_vault: bool) -> None:
    """Start the sandbox acquirers, the card vault and the gateway; print the dev
    merchant's keys."""
    settings = _settings()
    secrets = load_or_create_secrets(settings.home)
    database = _db(settings)
    creds = ensure_dev_merchant(settings, database)
    database.dispose()
    token_file = settings.home / "acquirer-token"
    if not token_file.exists():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.acquirer_token.reveal())
    log_dir = settings.home / "logs"
    log_dir.mkdir(exist_ok=True, mode=0o700)
    procs: list[subprocess.Popen[bytes]] = []
    if not no_acquirers:
        procs = start_acquirers(settings, token_file, log_dir)
    env = {**os.environ, "PAYWARDEN_HOME": str(settings.home.resolve())}
    if not no_vault:
        procs.append(start_vault(settings, log_dir))
        env["PAYWARDEN_VAULT_URL"] = vault_url(settings)
    gateway = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "paywarden.gateway.asgi:app_factory",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--workers",
            str(workers or settings.workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    procs.append(gateway)
    try:
        _wait_http(f"{settings.base_url}/healthz", gateway)
        click.echo("")
        click.echo(f"Paywarden gateway   {settings.base_url}")
        for a in settings.acquirer_list():
            click.echo(f"Sandbox acquirer    {a.url}  ({a.name})")
        if not no_vault:
            click.echo(f"Card vault (mTLS)   {vault_url(settings)}")
        click.echo(f"Dev merchant        {creds['account']}")
        click.echo(f"Secret key          {creds['secret_key']}")
        click.echo(f"Publishable key     {creds['publishable_key']}")
        click.echo(f"Credentials file    {(settings.home / 'dev-credentials.json').resolve()}")
        warning = shared_state_warning(workers or settings.workers, settings.redis_url)
        if warning:
            click.echo(warning, err=True)
        click.echo("Press Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        raise click.ClickException("a Paywarden process exited unexpectedly; see .paywarden/logs")
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@main.command("reconcile")
def reconcile_once() -> None:
    """Settle acquirer attempts with unknown outcomes once, then exit."""
    from paywarden.gateway.container import build_gateway
    from paywarden.payments.reconcile import Reconciler

    settings = _settings()
    upgrade(settings.resolved_database_url)
    gw = build_gateway(settings, load_or_create_secrets(settings.home))
    n = Reconciler(gw.payments, interval=0).run_once()
    gw.close()
    click.echo(f"settled {n} attempt(s)")


def _register_vault() -> None:
    from paywarden.cli.audit import register as register_audit
    from paywarden.cli.vault import register

    register(main, _settings)
    register_audit(main, _settings)


@main.group()
def fraud() -> None:
    """The fraud engine: train the risk model, backtest on labelled history."""


@fraud.command(
    "backtest",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fraud_backtest(args: tuple[str, ...]) -> None:
    """Replay labelled transactions through the live feature code; print metrics
    (run with --help for the options)."""
    from paywarden.fraud.backtest import backtest_main

    sys.exit(backtest_main(list(args)))


@fraud.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file (the columns `fraud train` and `fraud backtest` read).",
)
@click.option("--live", is_flag=True, help="Live-mode charges (default: test mode).")
def fraud_export(out: Path, live: bool) -> None:
    """Labelled history from this gateway's charges and reports, for training."""
    from paywarden.fraud.engine import USD_PER_UNIT, RatesError, load_usd_rates
    from paywarden.fraud.labels import export_csv

    s = _settings()
    try:
        rates = load_usd_rates(s.fraud_usd_rates_path) if s.fraud_usd_rates_path else USD_PER_UNIT
    except RatesError as exc:
        raise click.ClickException(str(exc)) from None
    with out.open("w", encoding="utf-8", newline="") as fh:
        n = export_csv(_db(s), fh, livemode=live, rates=rates)
    click.echo(f"wrote {n} labelled transaction(s) to {out}")


@fraud.command(
    "train",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fraud_train(args: tuple[str, ...]) -> None:
    """Train the risk model artifact the server loads (run with --help for the options)."""
    from paywarden.fraud.backtest import train_main

    sys.exit(train_main(list(args)))


_register_vault()

if __name__ == "__main__":
    main()
