"""``paywarden audit …``: verify, prove, export and maintain the audit logs.

Read commands open the store without the signing key and record their own
access (``audit.accessed``, ``audit.verified``: PCI DSS 10.2.1.3, access to
audit logs) with the CLI user as the actor. Commands that sign (``sth --sign``,
``keys rotate``, ``archive``) need the service's key: the gateway's storage
key from ``secrets.json``, or the vault's keyring/Transit (run those as the
vault's user).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from paywarden.audit.entry import Actor, Entry
from paywarden.audit.errors import AuditError
from paywarden.audit.log import AuditLog
from paywarden.config import Settings

SERVICE = click.option(
    "--service",
    type=click.Choice(["gateway", "vault"]),
    default="gateway",
    show_default=True,
    help="Which service's audit log",
)


def _actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor.cli(user)


@contextmanager
def _reader(settings: Settings, service: str) -> Iterator[AuditLog]:
    from paywarden.audit.service import open_reader

    log = open_reader(settings, service)
    try:
        yield log
    finally:
        log.close()


@contextmanager
def _signing_log(settings: Settings, service: str) -> Iterator[AuditLog]:
    from paywarden.audit.service import open_gateway_audit, open_vault_audit

    if service == "gateway":
        from paywarden.config import load_or_create_secrets

        log = open_gateway_audit(
            settings, load_or_create_secrets(settings.home), lifecycle=False, sign_interval=None
        )
    else:
        from paywarden.vault.server import build_kms

        log = open_vault_audit(settings, build_kms(settings), lifecycle=False, sign_interval=None)
    try:
        yield log
    finally:
        log.close()


def _accessed(log: AuditLog, command: str, **details: Any) -> None:
    log.record(
        event="audit.accessed",
        outcome="success",
        actor=_actor(),
        details={"command": command, **details},
    )


def _archive_dir(settings: Settings, service: str) -> Path:
    from paywarden.audit.service import gateway_archive_dir, vault_archive_dir

    return gateway_archive_dir(settings) if service == "gateway" else vault_archive_dir(settings)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def register(main: click.Group, settings_factory: Any) -> None:
    @main.group()
    def audit() -> None:
        """Tamper-evident audit logs: verify, proofs, tree heads, export, retention."""

    @audit.command("verify")
    @SERVICE
    @click.option("--from", "start", type=int, default=None, help="First seq (default: all)")
    @click.option("--to", "stop", type=int, default=None, help="Stop before this seq")
    def verify(service: str, start: int | None, stop: int | None) -> None:
        """Re-verify every entry, tree head and archive; name each bad entry."""
        from paywarden.audit.verify import verify_store

        settings = settings_factory()
        with _reader(settings, service) as log:
            state = {"done": 0}
            with click.progressbar(length=1, label=f"verifying {service}", file=sys.stderr) as bar:

                def progress(done: int, total: int) -> None:
                    bar.length = max(total, 1)
                    bar.update(done - state["done"])
                    state["done"] = done

                report = verify_store(
                    log.store,
                    service=service,
                    start=start,
                    stop=stop,
                    archive_directory=_archive_dir(settings, service),
                    progress=progress,
                )
            log.record(
                event="audit.verified",
                outcome="success" if report.ok else "failure",
                actor=_actor(),
                details={
                    "start": report.start,
                    "stop": report.stop,
                    "entries": report.entries_checked,
                    "archived": report.archived_checked,
                    "heads": report.heads_checked,
                    "findings": len(report.findings),
                },
            )
        for note in report.notes:
            click.echo(f"note: {note}")
        for finding in report.findings:
            click.echo(f"BAD {finding}")
        click.echo(
            f"{service}: {report.entries_checked} online and {report.archived_checked} archived "
            f"entries, {report.heads_checked} signed tree heads checked: "
            + ("OK" if report.ok else f"{len(report.findings)} problem(s)")
        )
        if not report.ok:
            raise SystemExit(1)

    @audit.group("proof")
    def proof() -> None:
        """Inclusion and consistency proofs (JSON the standalone verifier accepts)."""

    @proof.command("inclusion")
    @SERVICE
    @click.argument("seq", type=int)
    @click.option("--size", type=int, default=None, help="Tree size (default: latest head)")
    def proof_inclusion(service: str, seq: int, size: int | None) -> None:
        """Prove entry SEQ is in the log."""
        with _reader(settings_factory(), service) as log:
            try:
                out = log.inclusion_proof(seq, size)
            except (ValueError, AuditError) as exc:
                raise click.ClickException(str(exc)) from None
            _accessed(log, "proof inclusion", seq=seq)
        _echo_json(out.to_json())

    @proof.command("consistency")
    @SERVICE
    @click.argument("old", type=int)
    @click.argument("new", type=int, required=False)
    def proof_consistency(service: str, old: int, new: int | None) -> None:
        """Prove the log at NEW (default: latest head) extends the log at OLD."""
        with _reader(settings_factory(), service) as log:
            try:
                out = log.consistency_proof(old, new)
            except (ValueError, AuditError) as exc:
                raise click.ClickException(str(exc)) from None
            _accessed(log, "proof consistency", old=old, new=out.new_size)
        _echo_json(out.to_json())

    @audit.command("sth")
    @SERVICE
    @click.option("--sign", is_flag=True, help="Sign a fresh tree head now (needs the key)")
    def sth(service: str, sign: bool) -> None:
        """Print the latest signed tree head (save it somewhere safe)."""
        settings = settings_factory()
        if sign:
            with _signing_log(settings, service) as log:
                head = log.sign_tree_head()
        else:
            with _reader(settings, service) as log:
                latest = log.latest_tree_head()
                if latest is None:
                    raise click.ClickException("no signed tree head yet (try --sign)")
                head = latest
        _echo_json(head.to_json())

    @audit.command("export")
    @SERVICE
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "ocsf"]), default="jsonl")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
    @click.option("--from", "start", type=int, default=0)
    @click.option("--to", "stop", type=int, default=None)
    def export(service: str, fmt: str, out: Path | None, start: int, stop: int | None) -> None:
        """Entries (archived and online) as JSON Lines: the exact leaf bytes
        (verifiable with `python -m paywarden.audit.verifier log`) or OCSF events."""
        from paywarden.audit.archive import archived_bodies
        from paywarden.audit.ocsf import to_ocsf

        settings = settings_factory()
        with _reader(settings, service) as log:
            _accessed(log, "export", format=fmt, start=start, stop=stop)
            sink: IO[bytes] = out.open("wb") if out else sys.stdout.buffer
            try:
                count = 0
                for _seq, body in _all_bodies(log, archived_bodies, settings, service, start, stop):
                    if fmt == "jsonl":
                        sink.write(body + b"\n")
                    else:
                        line = json.dumps(to_ocsf(Entry.from_body(body)), sort_keys=True)
                        sink.write(line.encode("utf-8") + b"\n")
                    count += 1
            finally:
                if out:
                    sink.close()
        if out:
            click.echo(f"{count} entries written to {out}", err=True)

    def _all_bodies(
        log: AuditLog,
        archived: Any,
        settings: Settings,
        service: str,
        start: int,
        stop: int | None,
    ) -> Iterator[tuple[int, bytes]]:
        directory = _archive_dir(settings, service)
        for seq, body in archived(log.store, directory):
            if seq >= start and (stop is None or seq < stop):
                yield seq, body
        yield from log.raw_entries(start, stop)

    @audit.command("tail")
    @SERVICE
    @click.option("-n", "count", type=int, default=20, show_default=True)
    @click.option("--follow", is_flag=True, help="Keep printing new entries")
    def tail(service: str, count: int, follow: bool) -> None:
        """The last entries, one JSON object a line."""
        with _reader(settings_factory(), service) as log:
            _accessed(log, "tail")
            pos = max(log.size() - count, 0)
            while True:
                for seq, body in log.raw_entries(pos):
                    click.echo(body.decode("utf-8"))
                    pos = seq + 1
                if not follow:
                    break
                time.sleep(1.0)

    @audit.group("keys")
    def keys() -> None:
        """Tree-head signing keys."""

    @keys.command("list")
    @SERVICE
    def keys_list(service: str) -> None:
        """Every signing key, active and retired."""
        from paywarden.audit.signing import load_public_keys

        with _reader(settings_factory(), service) as log, log.store.reading() as conn:
            found = load_public_keys(conn)
        for info in found.values():
            state = "active" if info.retired_ms is None else f"retired at {info.retired_ms}"
            click.echo(f"{info.key_id}  created {info.created_ms}  {state}")

    @keys.command("rotate")
    @SERVICE
    def keys_rotate(service: str) -> None:
        """New signing key; the old public key stays for old heads."""
        with _signing_log(settings_factory(), service) as log:
            old, new = log.rotate_signing_key(actor=_actor())
        click.echo(f"signing key rotated: {old} -> {new}")

    @keys.command("export-public")
    @SERVICE
    def keys_export(service: str) -> None:
        """Public keys as JSON (give this to auditors and the verifier's --key)."""
        from paywarden.audit.crypto import public_key_pem
        from paywarden.audit.signing import load_public_keys

        with _reader(settings_factory(), service) as log, log.store.reading() as conn:
            found = load_public_keys(conn)
        _echo_json(
            {
                "service": service,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "public_key": k.public_key.hex(),
                        "public_key_pem": public_key_pem(k.public_key),
                        "created_ms": k.created_ms,
                        "retired_ms": k.retired_ms,
                    }
                    for k in found.values()
                ],
            }
        )

    @audit.command("archive")
    @SERVICE
    @click.option("--online-days", type=int, default=90, show_default=True)
    @click.option("--retention-days", type=int, default=365, show_default=True)
    def archive(service: str, online_days: int, retention_days: int) -> None:
        """Retention: archive entries older than 3 months, delete after 12."""
        from paywarden.audit.archive import run_retention

        settings = settings_factory()
        with _signing_log(settings, service) as log:
            result = run_retention(
                log,
                _archive_dir(settings, service),
                online_days=online_days,
                retention_days=retention_days,
                actor=_actor(),
            )
        for m in result.archived:
            click.echo(f"archived {m.first_seq}..{m.stop_seq - 1} -> {m.file}")
        for name in result.deleted:
            click.echo(f"deleted (retention) {name}")
        if not result.archived and not result.deleted:
            click.echo("nothing to archive")
