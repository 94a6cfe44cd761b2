"""The audit trail as a new user tries it, against the running stack: pay, then
`audit verify` passes; an inclusion proof checks with the standalone verifier
and only the public key; one row changed with SQL is named by `audit verify`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import stripe

from tests.e2e.conftest import Stack


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verify_prove_and_detect_tampering(
    stack: Stack, client: stripe.StripeClient, tmp_path: Path
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1234,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert pi.status == "succeeded"
    # An endpoint that refuses at once (and is deleted again): the stack's one
    # webhook dispatcher serves every test of the session.
    hook = client.v1.webhook_endpoints.create(
        params={"url": "http://127.0.0.1:9/audit", "enabled_events": ["customer.created"]}
    )
    client.v1.webhook_endpoints.delete(hook.id)
    for service in ("gateway", "vault"):
        out = stack.cli("audit", "verify", "--service", service)
        assert out.rstrip().endswith("OK"), out

    # An inclusion proof, checked with nothing but the public key.
    entries = [json.loads(line) for line in stack.cli("audit", "tail", "-n", "50").splitlines()]
    created = next(e for e in entries if e["event"] == "webhook_endpoint.created")
    stack.cli("audit", "sth", "--sign")
    (tmp_path / "keys.json").write_text(stack.cli("audit", "keys", "export-public"))
    (tmp_path / "proof.json").write_text(
        stack.cli("audit", "proof", "inclusion", str(created["seq"]))
    )
    ok = _run(
        {"PATH": "/usr/bin:/bin"},
        "paywarden.audit.verifier",
        "inclusion",
        "--proof",
        str(tmp_path / "proof.json"),
        "--key",
        str(tmp_path / "keys.json"),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Tamper with a copy of the store, as someone with the sqlite3 shell would.
    copy = tmp_path / "audit.sqlite"
    with sqlite3.connect(stack.home / "audit.sqlite") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as db:
        db.execute(
            "UPDATE audit_entries SET body = replace(body, '.created', '.updatex') WHERE seq = ?",
            (created["seq"],),
        )
    env = {**stack.env, "PAYWARDEN_AUDIT_DATABASE_URL": f"sqlite:///{copy}"}
    bad = _run(env, "paywarden.cli.main", "audit", "verify")
    assert bad.returncode != 0
    assert f"seq {created['seq']}" in bad.stdout, bad.stdout
