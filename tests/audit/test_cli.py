"""`paywarden audit …` end to end, and its round trip with the standalone verifier."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from paywarden.audit import verifier as standalone
from paywarden.audit.entry import Actor, Resource
from paywarden.audit.service import gateway_audit_url, open_gateway_audit
from paywarden.cli.audit import register
from paywarden.config import Settings, load_or_create_secrets


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home")
    log = open_gateway_audit(s, load_or_create_secrets(s.home), sign_interval=None)
    for i in range(30):
        log.record(
            event="payment_intent.confirmed",
            outcome="success" if i % 3 else "failure",
            actor=Actor.api_key(f"key_{i % 4}"),
            resource=Resource("payment_intent", f"pi_{i}"),
            account="acct_1",
            details={"amount": 1000 + i},
            sensitive={"email": f"user{i}@example.com"},
        )
    log.close()
    return s


@pytest.fixture
def cli(settings: Settings) -> click.Group:
    @click.group()
    def main() -> None:
        pass

    register(main, lambda: settings)
    return main


def invoke(cli: click.Group, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_verify_is_clean_then_names_a_tampered_entry(cli: click.Group, settings: Settings) -> None:
    code, out, _ = invoke(cli, "verify")
    assert code == 0 and "OK" in out
    path = gateway_audit_url(settings).removeprefix("sqlite:///")
    db = sqlite3.connect(path)
    db.execute("DELETE FROM audit_entries WHERE seq = 7")
    db.commit()
    db.close()
    code, out, _ = invoke(cli, "verify")
    assert code == 1
    assert "BAD seq 7: row is missing (deleted)" in out


def test_proofs_round_trip_through_the_standalone_verifier(
    cli: click.Group, tmp_path: Path
) -> None:
    code, keys, _ = invoke(cli, "keys", "export-public")
    assert code == 0
    key_file = tmp_path / "keys.json"
    key_file.write_text(keys)
    code, head, _ = invoke(cli, "sth")
    assert code == 0
    head_file = tmp_path / "head.json"
    head_file.write_text(head)
    saved_size = json.loads(head)["tree_size"]

    code, proof, _ = invoke(cli, "proof", "inclusion", "12")
    assert code == 0
    proof_file = tmp_path / "inclusion.json"
    proof_file.write_text(proof)
    status, lines = standalone.run(
        ["inclusion", "--proof", str(proof_file), "--key", str(key_file)]
    )
    assert status == 0, lines
    data = json.loads(proof)
    data["entry"] = data["entry"].replace("payment_intent.confirmed", "payment_intent.canceled")
    proof_file.write_text(json.dumps(data))
    status, lines = standalone.run(
        ["inclusion", "--proof", str(proof_file), "--key", str(key_file)]
    )
    assert status == 1 and lines[0].startswith("NOT VERIFIED")

    invoke(cli, "sth", "--sign")
    code, proof, _ = invoke(cli, "proof", "consistency", str(saved_size))
    assert code == 0
    cons_file = tmp_path / "consistency.json"
    cons_file.write_text(proof)
    status, lines = standalone.run(
        [
            "consistency",
            "--proof",
            str(cons_file),
            "--key",
            str(key_file),
            "--old-head",
            str(head_file),
        ]
    )
    assert status == 0, lines

    status, lines = standalone.run(["sth", "--head", str(head_file), "--key", str(key_file)])
    assert status == 0, lines


def test_export_verifies_as_a_whole_log(cli: click.Group, tmp_path: Path) -> None:
    _, keys, _ = invoke(cli, "keys", "export-public")
    (tmp_path / "keys.json").write_text(keys)
    _, head, _ = invoke(cli, "sth", "--sign")
    (tmp_path / "head.json").write_text(head)
    export = tmp_path / "log.jsonl"
    code, _, _ = invoke(cli, "export", "--out", str(export))
    assert code == 0
    args = ["log", "--entries", str(export), "--head", str(tmp_path / "head.json")]
    status, lines = standalone.run([*args, "--key", str(tmp_path / "keys.json")])
    assert status == 0, lines
    rows = export.read_bytes().split(b"\n")
    rows[3] = rows[3].replace(b'"amount":', b'"amount":1')
    export.write_bytes(b"\n".join(rows))
    status, lines = standalone.run([*args, "--key", str(tmp_path / "keys.json")])
    assert status == 1
    # The module's own entry point, as an auditor runs it.
    done = subprocess.run(
        [sys.executable, "-m", "paywarden.audit.verifier", *args, "--no-signature"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "NOT VERIFIED" in done.stderr


def test_ocsf_export_maps_classes(cli: click.Group) -> None:
    code, out, _ = invoke(cli, "export", "--format", "ocsf")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["class_uid"] == 6002 and events[0]["activity_id"] == 3  # audit.started
    confirm = events[1]
    assert confirm["class_uid"] == 6003 and confirm["type_uid"] == 600399
    assert confirm["status_id"] == 2  # i = 0 was a failure
    assert confirm["resources"] == [{"type": "payment_intent", "uid": "pi_0"}]
    assert "user0@example.com" not in out


def test_tail_keys_and_access_is_recorded(cli: click.Group) -> None:
    code, out, _ = invoke(cli, "tail", "-n", "3")
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = invoke(cli, "keys", "rotate")
    assert code == 0 and "->" in out
    code, out, _ = invoke(cli, "keys", "list")
    assert "active" in out and "retired" in out
    code, out, _ = invoke(cli, "tail", "-n", "50")
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "audit.accessed" in events and "audit.signing_key.rotated" in events
    code, out, _ = invoke(cli, "verify")
    assert code == 0, out


def test_archive_command_runs(cli: click.Group) -> None:
    code, out, _ = invoke(cli, "archive")
    assert code == 0 and "nothing to archive" in out
