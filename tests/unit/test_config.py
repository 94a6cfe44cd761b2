"""Settings from env / TOML, and per-installation secrets on disk (paywarden.config)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from paywarden.config import (
    AcquirerConfig,
    ServiceSecrets,
    Settings,
    load_or_create_secrets,
    write_private_json,
)
from paywarden.core.secrets import Secret


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.upper().startswith("PAYWARDEN_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _toml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "paywarden.toml"
    path.write_text(text)
    monkeypatch.setenv("PAYWARDEN_CONFIG", str(path))
    return path


# --- settings ----------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert s.home == Path(".paywarden")
    assert s.host == "127.0.0.1"
    assert s.port == 8420
    assert s.database_url is None
    assert s.circuit_failure_threshold == 5
    assert s.circuit_reset_seconds == 30.0
    assert s.max_body_bytes == 64 * 1024
    assert s.webhook_allow_private_urls is True
    assert s.acquirers == []


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_PORT", "9000")
    monkeypatch.setenv("PAYWARDEN_HOST", "0.0.0.0")
    monkeypatch.setenv("PAYWARDEN_CIRCUIT_RESET_SECONDS", "2.5")
    monkeypatch.setenv("PAYWARDEN_WEBHOOK_ALLOW_PRIVATE_URLS", "false")
    monkeypatch.setenv("PAYWARDEN_HOME", "/srv/pw")
    monkeypatch.setenv("PAYWARDEN_DATABASE_URL", "postgresql+psycopg://db/pw")
    s = Settings()
    assert s.port == 9000
    assert s.host == "0.0.0.0"
    assert s.circuit_reset_seconds == 2.5
    assert s.webhook_allow_private_urls is False
    assert s.home == Path("/srv/pw")
    assert s.database_url == "postgresql+psycopg://db/pw"


def test_env_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("paywarden_port", "9001")
    assert Settings().port == 9001


def test_unprefixed_env_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("HOST", "evil")
    s = Settings()
    assert s.port == 8420
    assert s.host == "127.0.0.1"


def test_init_kwargs_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_PORT", "9000")
    assert Settings(port=1).port == 1


def test_invalid_env_value_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_toml_file_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, 'host = "10.0.0.1"\nport = 1234\nworkers = 4\n', monkeypatch)
    s = Settings()
    assert (s.host, s.port, s.workers) == ("10.0.0.1", 1234, 4)


def test_env_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, 'host = "10.0.0.1"\nport = 1234\n', monkeypatch)
    monkeypatch.setenv("PAYWARDEN_PORT", "9000")
    s = Settings()
    assert s.port == 9000
    assert s.host == "10.0.0.1"


def test_init_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, "port = 1234\n", monkeypatch)
    assert Settings(port=5).port == 5


def test_toml_acquirers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(
        tmp_path,
        '[[acquirers]]\nname = "second"\nurl = "http://b"\npriority = 2\n'
        '[[acquirers]]\nname = "first"\nurl = "http://a"\npriority = 1\n',
        monkeypatch,
    )
    assert [a.name for a in Settings().acquirer_list()] == ["first", "second"]


def test_toml_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_acquirers_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PAYWARDEN_ACQUIRERS",
        json.dumps(
            [
                {"name": "slow", "url": "http://slow:1", "priority": 5},
                {"name": "fast", "url": "http://fast:2", "priority": 1},
                {"name": "mid", "url": "http://mid:3"},
            ]
        ),
    )
    s = Settings()
    assert [(a.name, a.url, a.priority) for a in s.acquirers] == [
        ("slow", "http://slow:1", 5),
        ("fast", "http://fast:2", 1),
        ("mid", "http://mid:3", 0),
    ]
    assert [a.name for a in s.acquirer_list()] == ["mid", "fast", "slow"]


def test_acquirers_env_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, '[[acquirers]]\nname = "toml"\nurl = "http://t"\n', monkeypatch)
    monkeypatch.setenv("PAYWARDEN_ACQUIRERS", '[{"name": "env", "url": "http://e"}]')
    assert [a.name for a in Settings().acquirers] == ["env"]


def test_acquirer_priority_not_taken_from_unrelated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only PAYWARDEN_* variables configure the gateway: an ambient PRIORITY must not
    # silently reorder acquirers.
    monkeypatch.setenv("PRIORITY", "7")
    monkeypatch.setenv("PAYWARDEN_ACQUIRERS", '[{"name": "x", "url": "http://x"}]')
    assert Settings().acquirers[0].priority == 0


def test_malformed_acquirers_json_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_ACQUIRERS", "[{not json")
    with pytest.raises(ValueError, match="acquirers"):
        Settings()


def test_default_acquirer_list() -> None:
    lst = Settings().acquirer_list()
    assert [(a.name, a.url, a.priority) for a in lst] == [
        ("sandbox_a", "http://127.0.0.1:8431", 0),
        ("sandbox_b", "http://127.0.0.1:8432", 1),
    ]


def test_default_acquirer_list_follows_base_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_ACQUIRER_BASE_PORT", "9100")
    assert [a.url for a in Settings().acquirer_list()] == [
        "http://127.0.0.1:9100",
        "http://127.0.0.1:9101",
    ]


def test_acquirer_list_stable_for_equal_priorities() -> None:
    s = Settings(
        acquirers=[
            AcquirerConfig(name="x", url="u", priority=0),
            AcquirerConfig(name="y", url="u", priority=0),
        ]
    )
    assert [a.name for a in s.acquirer_list()] == ["x", "y"]


def test_resolved_database_url_under_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert Settings(home=home).resolved_database_url == f"sqlite:///{home.resolve()}/gateway.db"


def test_resolved_database_url_relative_home_is_absolute(tmp_path: Path) -> None:
    url = Settings().resolved_database_url
    assert url == f"sqlite:///{tmp_path.resolve()}/.paywarden/gateway.db"


def test_resolved_database_url_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_DATABASE_URL", "postgresql+psycopg://h/db")
    assert Settings().resolved_database_url == "postgresql+psycopg://h/db"


def test_base_url() -> None:
    assert Settings(host="h", port=1).base_url == "http://h:1"
    assert Settings(public_url="https://pay.example").base_url == "https://pay.example"


# --- secrets on disk ---------------------------------------------------------


def test_load_or_create_secrets_creates_private_file(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    sec = load_or_create_secrets(home)
    path = home / "secrets.json"
    assert path.is_file()
    assert _mode(path) == 0o600
    assert _mode(home) & 0o077 == 0
    raw = json.loads(path.read_text())
    assert set(raw) == {"api_key_pepper", "storage_key", "acquirer_token"}
    assert isinstance(sec, ServiceSecrets)
    assert sec.api_key_pepper.reveal() == raw["api_key_pepper"]
    assert sec.storage_key.reveal() == raw["storage_key"]
    assert sec.acquirer_token.reveal() == raw["acquirer_token"]
    Fernet(sec.storage_key.reveal().encode())  # a valid Fernet key
    assert len(sec.api_key_pepper.reveal()) >= 32
    assert sec.api_key_pepper != sec.acquirer_token


def test_load_or_create_secrets_is_stable(tmp_path: Path) -> None:
    first = load_or_create_secrets(tmp_path / "h")
    second = load_or_create_secrets(tmp_path / "h")
    assert first.api_key_pepper == second.api_key_pepper
    assert first.storage_key == second.storage_key
    assert first.acquirer_token == second.acquirer_token


def test_separate_homes_get_separate_secrets(tmp_path: Path) -> None:
    a = load_or_create_secrets(tmp_path / "a")
    b = load_or_create_secrets(tmp_path / "b")
    assert a.api_key_pepper != b.api_key_pepper
    assert a.storage_key != b.storage_key


def test_secrets_are_masked(tmp_path: Path) -> None:
    sec = load_or_create_secrets(tmp_path / "h")
    text = repr(sec)
    for s in (sec.api_key_pepper, sec.storage_key, sec.acquirer_token):
        assert isinstance(s, Secret)
        assert s.reveal() not in text


def test_existing_secrets_file_is_read_not_replaced(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    payload = {"api_key_pepper": "p", "storage_key": "s", "acquirer_token": "t"}
    write_private_json(home / "secrets.json", payload)
    sec = load_or_create_secrets(home)
    assert sec.api_key_pepper.reveal() == "p"
    assert json.loads((home / "secrets.json").read_text()) == payload


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o610])
def test_refuses_group_or_other_accessible_file(tmp_path: Path, mode: int) -> None:
    home = tmp_path / "h"
    load_or_create_secrets(home)
    path = home / "secrets.json"
    path.chmod(mode)
    with pytest.raises(PermissionError, match="must not be readable by group/others") as ei:
        load_or_create_secrets(home)
    assert oct(mode) in str(ei.value)


def test_owner_read_only_is_accepted(tmp_path: Path) -> None:
    home = tmp_path / "h"
    first = load_or_create_secrets(home)
    (home / "secrets.json").chmod(0o400)
    assert load_or_create_secrets(home).api_key_pepper == first.api_key_pepper


def test_write_private_json_mode_and_content(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_private_json(path, {"a": 1, "b": [1, 2]})
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"a": 1, "b": [1, 2]}
    assert path.read_text().endswith("\n")


def test_write_private_json_replaces_loose_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private_json(path, {"new": True})
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"new": True}
    assert not path.with_suffix(".tmp").exists()


def test_write_private_json_ignores_stale_tmp(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    stale = path.with_suffix(".tmp")
    stale.write_text("stale")
    stale.chmod(0o666)
    write_private_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert _mode(path) == 0o600


def test_write_private_json_mode_despite_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_json(tmp_path / "u.json", {})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "u.json") == 0o600


def test_several_workers_without_redis_are_warned_about() -> None:
    from paywarden.cli.main import shared_state_warning

    assert shared_state_warning(1, None) is None
    assert shared_state_warning(4, "redis://127.0.0.1:6379/0") is None
    warning = shared_state_warning(2, None)
    assert warning is not None
    assert "2 workers" in warning and "PAYWARDEN_REDIS_URL" in warning
