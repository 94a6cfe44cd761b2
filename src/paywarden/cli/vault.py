"""``paywarden vault …`` and ``paywarden certs …``: run the vault, and operate it.

Operator commands talk to the running vault over mutual TLS with the
*operator* client certificate, so the vault process stays the only owner of
its keyring and every operation lands in its access log with the operator as
the actor.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import httpx

from paywarden.config import Settings
from paywarden.vault.server import ensure_pki, pki_paths, run_vault


def _operator(settings: Settings) -> httpx.Client:
    from paywarden.vault.tlsserver import client_ssl_context

    paths = pki_paths(settings)
    ctx = client_ssl_context(
        cert=paths["operator_cert"], key=paths["operator_key"], ca_bundle=paths["ca_bundle"]
    )
    return httpx.Client(
        base_url=settings.vault_url or f"https://{settings.vault_host}:{settings.vault_port}",
        verify=ctx,
        timeout=30.0,
        trust_env=False,
    )


def _call(settings: Settings, method: str, path: str, **kw: Any) -> dict[str, Any]:
    try:
        with _operator(settings) as client:
            r = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the vault: {type(exc).__name__}") from None
    data: dict[str, Any] = r.json() if r.content else {}
    if r.status_code != 200:
        err = data.get("error", {})
        raise click.ClickException(f"vault: {err.get('code')}: {err.get('message')}")
    return data


def register(main: click.Group, settings_factory: Any) -> None:
    @main.group()
    def vault() -> None:
        """The card vault: run it, rotate keys, rewrap, reveal (operator)."""

    @vault.command("serve")
    def serve() -> None:
        """Run the vault over mutual TLS (make run starts it for you)."""
        run_vault(settings_factory())

    @vault.command("status")
    def status() -> None:
        """Which keys protect what, and when each is due for rotation."""
        click.echo(json.dumps(_call(settings_factory(), "GET", "/v1/admin/keys"), indent=2))

    @vault.command("rotate-kek")
    @click.option("--reason", default="scheduled rotation")
    def rotate_kek(reason: str) -> None:
        """Create a new key-encryption-key version; new records use it at once."""
        out = _call(settings_factory(), "POST", "/v1/admin/kek/rotate", json={"reason": reason})
        click.echo(f"current KEK version: v{out['version']}")

    @vault.command("rewrap")
    @click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 5000))
    def rewrap(batch: int) -> None:
        """Rewrap every data key to the current KEK version, online.

        Safe to interrupt: run it again and it continues with what is left.
        """
        settings = settings_factory()
        first = _call(settings, "POST", "/v1/admin/kek/rewrap", json={"limit": batch})
        total = first["rewrapped"] + first["remaining"]
        with click.progressbar(length=max(total, 1), label=f"rewrap to v{first['version']}") as bar:
            bar.update(first["rewrapped"])
            remaining = first["remaining"]
            while remaining:
                out = _call(settings, "POST", "/v1/admin/kek/rewrap", json={"limit": batch})
                bar.update(out["rewrapped"])
                remaining = out["remaining"]
                if not out["rewrapped"]:
                    time.sleep(0.2)
        click.echo("every record is wrapped by the current KEK version")

    @vault.command("retire")
    @click.option("--min-version", type=int, required=True)
    def retire(min_version: int) -> None:
        """Refuse decryption with KEK versions below MIN_VERSION (after a rewrap)."""
        _call(
            settings_factory(),
            "POST",
            "/v1/admin/kek/retire",
            json={"min_decryption_version": min_version},
        )
        click.echo(f"KEK versions below v{min_version} are retired")

    @vault.command("rotate-hpke")
    @click.option("--reason", default="scheduled rotation")
    def rotate_hpke(reason: str) -> None:
        """New HPKE key pair; the previous one is accepted for the overlap window."""
        out = _call(settings_factory(), "POST", "/v1/admin/hpke/rotate", json={"reason": reason})
        click.echo(f"current encryption key: {out['id']}")

    @vault.command("sweep")
    def sweep() -> None:
        """Retention: drop expired CVCs, crypto-shred cards long past expiry."""
        click.echo(json.dumps(_call(settings_factory(), "POST", "/v1/admin/sweep")))

    @vault.command("reveal")
    @click.argument("token")
    @click.option("--reason", required=True, help="Why: recorded in the access log")
    def reveal(token: str, reason: str) -> None:
        """Show a card in clear (operator only; logged with the reason)."""
        out = _call(
            settings_factory(), "POST", f"/v1/cards/{token}/reveal", json={"reason": reason}
        )
        click.echo(json.dumps(out))

    @vault.command("access-log")
    @click.option("--action", default=None, help="e.g. reveal, forward, shred, kek_rotate")
    @click.option("--limit", default=50, show_default=True)
    def access_log(action: str | None, limit: int) -> None:
        """Who did what to which card, and why."""
        params: dict[str, Any] = {"limit": limit}
        if action:
            params["action"] = action
        out = _call(settings_factory(), "GET", "/v1/admin/access_log", params=params)
        for row in out["data"]:
            click.echo(json.dumps(row))

    @main.group()
    def certs() -> None:
        """The dev certificate authority and the mutual-TLS certificates."""

    @certs.command("ensure")
    def certs_ensure() -> None:
        """Create the CA and certificates if missing; renew those near expiry."""
        ensure_pki(settings_factory())
        click.echo("certificates are in place")

    @certs.command("list")
    def certs_list() -> None:
        """Every certificate ever issued (for auditors)."""
        for row in ensure_pki(settings_factory()).issued():
            click.echo(json.dumps(row, default=str))

    @certs.command("rotate")
    @click.argument("name")
    def certs_rotate(name: str) -> None:
        """Re-issue NAME's certificate with a new key (vault, gateway, operator).
        Restart the service that uses it to pick it up."""
        cert = ensure_pki(settings_factory()).rotate(name)
        click.echo(f"{name}: serial {cert.serial}, valid until {cert.not_after.isoformat()}")

    @certs.command("revoke")
    @click.argument("name")
    def certs_revoke(name: str) -> None:
        """Revoke NAME's current certificate: the vault refuses it from now on
        (issue a new one with `certs rotate NAME`)."""
        pki = ensure_pki(settings_factory())
        cert = pki.cert_for(name)
        pki.revoke(cert.serial)
        click.echo(f"{name}: serial {cert.serial:X} revoked")

    @certs.command("rotate-ca")
    def certs_rotate_ca() -> None:
        """New CA; the bundle keeps the old one during the overlap."""
        ensure_pki(settings_factory()).rotate_ca()
        click.echo("new CA issued; every certificate re-issued")
