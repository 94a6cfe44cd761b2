"""The vault's HTTP API over real mutual TLS: identities, permissions, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paywarden.vault.crypto.pki import Pki
from tests.conftest import VaultServer, serve_vault

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


@pytest.fixture
def v(tmp_path: Path) -> Iterator[VaultServer]:
    with serve_vault(tmp_path / "vault-home", {}) as server:
        yield server


def test_identities_get_exactly_their_permissions(v: VaultServer) -> None:
    with v.client("gateway") as gw, v.client("operator") as op:
        tok = gw.post("/v1/cards", json={"account_id": "acct_1", "card": CARD})
        assert tok.status_code == 200, tok.text
        token = tok.json()["token"]
        assert "4242424242424242" not in tok.text
        # The gateway may not reveal, the operator may not tokenize or forward.
        r = gw.post(f"/v1/cards/{token}/reveal", json={"reason": "just curious, really"})
        assert r.status_code == 403
        assert op.post("/v1/cards", json={"account_id": "acct_1", "card": CARD}).status_code == 403
        r = op.post(f"/v1/cards/{token}/reveal", json={"reason": "dispute evidence #7"})
        assert r.status_code == 200
        assert r.json()["number"] == CARD["number"]
        log = op.get("/v1/admin/access_log", params={"action": "reveal"}).json()["data"]
        assert log[0]["actor"] == "operator" and log[0]["reason"] == "dispute evidence #7"
        denied = op.get("/v1/admin/access_log").json()["data"]
        assert any(e["outcome"] == "denied" and e["actor"] == "gateway" for e in denied)


def test_an_unknown_identity_from_our_ca_is_forbidden(v: VaultServer) -> None:
    Pki(v.pki_dir).issue_client("intruder")
    with v.client("intruder") as c:
        assert c.get("/v1/encryption_keys").status_code == 403
        assert c.post("/v1/cards", json={"account_id": "a", "card": CARD}).status_code == 403


def test_no_client_certificate_is_refused_at_the_handshake(v: VaultServer) -> None:
    with v.client(None) as c, pytest.raises(httpx.TransportError):
        c.get("/healthz")


def test_a_revoked_certificate_is_refused(v: VaultServer) -> None:
    pki = Pki(v.pki_dir)
    with v.client("gateway") as c:
        assert c.get("/v1/encryption_keys").status_code == 200
    pki.revoke(pki.cert_for("gateway").serial)
    with v.client("gateway") as c:
        r = c.get("/v1/encryption_keys")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "certificate_revoked"
    pki.rotate("gateway")
    with v.client("gateway") as c:
        assert c.get("/v1/encryption_keys").status_code == 200


def test_bad_bodies_are_clean_4xx(v: VaultServer) -> None:
    with v.client("gateway") as c:
        assert c.post("/v1/cards", content=b"{nope").status_code == 400
        assert c.post("/v1/cards", content=b"x" * 20000).status_code == 413
        r = c.post("/v1/cards", json={"account_id": "acct_1", "card": {**CARD, "number": "1"}})
        assert r.status_code == 402
        assert r.json()["error"]["type"] == "card_error"
        assert c.post("/v1/cards/vtok_missing/forward", json={}).status_code == 400
        r = c.delete("/v1/cards/vtok_missing", params={})
        assert r.status_code in (400, 404)
