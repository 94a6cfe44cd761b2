"""The vault's dev CA: what it issues verifies, carries the right extensions, rotates with overlap.

Chains are checked with pyca/cryptography's x509 verification API (which applies
the serverAuth/clientAuth EKU and CA/Browser-Forum-style profile checks), at a
fixed time taken from the test clock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, PublicKeyAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from paywarden.core.clock import FrozenClock
from paywarden.vault.crypto.pki import Pki, PkiError, identity_from_der

DAY = 86400.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def pki(tmp_path: Path, clock: FrozenClock) -> Pki:
    p = Pki(tmp_path / "pki", clock=clock)
    p.ensure()
    return p


def now(clock: FrozenClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), tz=UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def store(bundle: Path) -> Store:
    return Store(x509.load_pem_x509_certificates(bundle.read_bytes()))


def verify_client(bundle: Path, cert: Path, at: datetime) -> list[x509.GeneralName]:
    verifier = PolicyBuilder().store(store(bundle)).time(at).build_client_verifier()
    return list(verifier.verify(load(cert), []).subjects or [])


def verify_server(bundle: Path, cert: Path, host: str, at: datetime) -> None:
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = PolicyBuilder().store(store(bundle)).time(at).build_server_verifier(subject)
    verifier.verify(load(cert), [])


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "pki.lock"}


# -- first run -------------------------------------------------------------------------


def test_ensure_creates_ca_server_and_clients_with_private_permissions(pki: Pki) -> None:
    d = pki.directory
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("ca", "vault", "gateway", "operator"):
        assert (d / f"{name}.pem").exists()
        assert stat.S_IMODE((d / f"{name}.key").stat().st_mode) == 0o600
    assert pki.ca_bundle_path().read_bytes() == (d / "ca.pem").read_bytes()
    assert not list(d.glob(".*.tmp"))  # atomic writes left no temporaries


def test_existing_directory_is_tightened_to_0700(tmp_path: Path, clock: FrozenClock) -> None:
    d = tmp_path / "pki"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    Pki(d, clock=clock).ensure()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_clients_and_server_verify_against_the_bundle(pki: Pki, clock: FrozenClock) -> None:
    at = now(clock)
    bundle = pki.ca_bundle_path()
    for name in ("gateway", "operator"):
        subjects = verify_client(bundle, pki.cert_for(name).cert_path, at)
        assert subjects == [x509.UniformResourceIdentifier(f"spiffe://paywarden.local/{name}")]
    for host in ("127.0.0.1", "localhost"):
        verify_server(bundle, pki.cert_for("vault").cert_path, host, at)
    with pytest.raises(VerificationError):
        verify_server(bundle, pki.cert_for("vault").cert_path, "vault.example", at)


def test_eku_separates_server_and_client_roles(pki: Pki, clock: FrozenClock) -> None:
    at = now(clock)
    bundle = pki.ca_bundle_path()
    with pytest.raises(VerificationError):
        verify_client(bundle, pki.cert_for("vault").cert_path, at)
    with pytest.raises(VerificationError):
        verify_server(bundle, pki.cert_for("gateway").cert_path, "127.0.0.1", at)


def test_ca_extensions(pki: Pki) -> None:
    ca = load(pki.directory / "ca.pem")
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert isinstance(ski, x509.SubjectKeyIdentifier)
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert ca.signature_hash_algorithm is not None
    assert ca.signature_hash_algorithm.name == "sha256"
    assert ca.public_key_algorithm_oid == PublicKeyAlgorithmOID.EC_PUBLIC_KEY
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_leaf_extensions(pki: Pki) -> None:
    ca = load(pki.directory / "ca.pem")
    ca_ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert isinstance(ca_ski, x509.SubjectKeyIdentifier)
    for name, usage in (
        ("vault", ExtendedKeyUsageOID.SERVER_AUTH),
        ("gateway", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("operator", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        cert = load(pki.cert_for(name).cert_path)
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical
        assert bc.value == x509.BasicConstraints(ca=False, path_length=None)
        ku = ext(cert, x509.KeyUsage).value
        assert isinstance(ku, x509.KeyUsage)
        assert ku.digital_signature
        assert not ku.key_cert_sign
        assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([usage])
        aki = ext(cert, x509.AuthorityKeyIdentifier).value
        assert isinstance(aki, x509.AuthorityKeyIdentifier)
        assert aki.key_identifier == ca_ski.digest
        assert ext(cert, x509.SubjectKeyIdentifier).value == (
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        )
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
            "Paywarden"
        )


def test_server_san_holds_ip_and_dns(pki: Pki) -> None:
    san = ext(load(pki.cert_for("vault").cert_path), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_client_subject_and_spiffe_identity(pki: Pki) -> None:
    cert = load(pki.cert_for("gateway").cert_path)
    assert cert.subject.rfc4514_string() == "OU=gateway,O=Paywarden,CN=gateway"
    der = ssl.PEM_cert_to_DER_cert(pki.cert_for("gateway").cert_path.read_text())
    assert identity_from_der(der) == "gateway"
    role = pki.issue_client("batch", role="gateway")
    assert load(role.cert_path).subject.rfc4514_string() == "OU=gateway,O=Paywarden,CN=batch"


def test_identity_falls_back_to_cn_only_without_uri_san(pki: Pki) -> None:
    # The server certificate has IP/DNS SANs but no URI: its CN is the identity.
    der = ssl.PEM_cert_to_DER_cert(pki.cert_for("vault").cert_path.read_text())
    assert identity_from_der(der) == "vault"
    assert identity_from_der(b"not a certificate") is None


def test_issued_cert_facts_match_the_file(pki: Pki) -> None:
    issued = pki.cert_for("operator")
    cert = load(issued.cert_path)
    assert issued.serial == cert.serial_number
    assert issued.not_after == cert.not_valid_after_utc
    assert issued.not_after.tzinfo is not None
    der = ssl.PEM_cert_to_DER_cert(issued.cert_path.read_text())
    assert issued.fingerprint_sha256 == hashlib.sha256(der).hexdigest()


def test_validity_periods_are_configurable(tmp_path: Path, clock: FrozenClock) -> None:
    p = Pki(tmp_path / "pki", ca_days=30, leaf_days=7, renew_before_days=1, clock=clock)
    p.ensure()
    start = now(clock)
    assert p.cert_for("gateway").not_after == (start + timedelta(days=7)).replace(microsecond=0)
    ca = load(tmp_path / "pki" / "ca.pem")
    assert ca.not_valid_after_utc == (start + timedelta(days=30)).replace(microsecond=0)
    # A leaf never outlives its CA.
    assert p.issue_client("long", days=365).not_after == ca.not_valid_after_utc


def test_index_lists_every_issue(pki: Pki) -> None:
    entries = pki.issued()
    assert [e["name"] for e in entries] == ["ca", "vault", "gateway", "operator"]
    ca_serial = entries[0]["serial"]
    for entry in entries[1:]:
        assert entry["issuer_serial"] == ca_serial
        assert entry["revoked"] is False
        assert set(entry) >= {"serial", "name", "not_after", "fingerprint_sha256", "issued_at"}
    on_disk = json.loads((pki.directory / "index.json").read_text())
    assert on_disk["certificates"] == entries


@pytest.mark.parametrize(
    "name", ["../evil", "ca", "ca-bundle", "ca-x", "index", "Gateway", "", "a/b"]
)
def test_unusable_names_are_refused(pki: Pki, name: str) -> None:
    with pytest.raises(PkiError):
        pki.issue_client(name)


def test_bad_hosts_and_days_are_refused(pki: Pki) -> None:
    with pytest.raises(PkiError):
        pki.issue_server("vault", [])
    with pytest.raises(PkiError):
        pki.issue_server("vault", ["bad host/x"])
    with pytest.raises(PkiError):
        pki.issue_client("gateway", days=0)


def test_cert_for_unknown_name(pki: Pki) -> None:
    with pytest.raises(PkiError, match="ensure"):
        pki.cert_for("nobody")


# -- later runs --------------------------------------------------------------------------


def test_ensure_is_idempotent(pki: Pki) -> None:
    before = snapshot(pki.directory)
    pki.ensure()
    Pki(pki.directory, clock=pki._clock).ensure()
    assert snapshot(pki.directory) == before


def test_ensure_reissues_missing_and_mismatched_certs(pki: Pki) -> None:
    old_gateway = pki.cert_for("gateway")
    old_operator = pki.cert_for("operator")
    old_vault = pki.cert_for("vault")
    old_gateway.cert_path.unlink()
    # A key that does not belong to its certificate (a crash between two writes).
    old_operator.key_path.write_bytes(old_vault.key_path.read_bytes())
    pki.ensure()
    assert pki.cert_for("gateway").serial != old_gateway.serial
    assert pki.cert_for("operator").serial != old_operator.serial
    assert pki.cert_for("vault").serial == old_vault.serial


def test_ensure_renews_certs_close_to_expiry(pki: Pki, clock: FrozenClock) -> None:
    serials = {n: pki.cert_for(n).serial for n in ("vault", "gateway", "operator")}
    clock.advance(90 * DAY - 15 * DAY)  # 15 days left: not yet due
    pki.ensure()
    assert {n: pki.cert_for(n).serial for n in serials} == serials
    clock.advance(2 * DAY)  # 13 days left: within renew_before (14)
    pki.ensure()
    for name, serial in serials.items():
        renewed = pki.cert_for(name)
        assert renewed.serial != serial
        assert renewed.not_after == (now(clock) + timedelta(days=90)).replace(microsecond=0)


def test_ensure_rotates_a_ca_close_to_expiry(tmp_path: Path, clock: FrozenClock) -> None:
    p = Pki(tmp_path / "pki", ca_days=30, leaf_days=7, renew_before_days=3, clock=clock)
    p.ensure()
    first_ca = load(tmp_path / "pki" / "ca.pem").serial_number
    for _ in range(6):  # renewing leaves every few days keeps the same CA...
        clock.advance(4 * DAY)
        p.ensure()
    assert load(tmp_path / "pki" / "ca.pem").serial_number == first_ca
    clock.advance(4 * DAY)  # ...until it has 2 days left
    p.ensure()
    new_ca = load(tmp_path / "pki" / "ca.pem")
    assert new_ca.serial_number != first_ca
    assert load(p.cert_for("gateway").cert_path).issuer == new_ca.subject
    verify_client(p.ca_bundle_path(), p.cert_for("gateway").cert_path, now(clock))


def test_ensure_reissues_server_when_hosts_change(pki: Pki) -> None:
    old = pki.cert_for("vault").serial
    pki.ensure(server_hosts=["127.0.0.1", "localhost"])
    assert pki.cert_for("vault").serial == old
    pki.ensure(server_hosts=["127.0.0.1", "::1", "vault.internal"])
    assert pki.cert_for("vault").serial != old
    san = ext(load(pki.cert_for("vault").cert_path), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["vault.internal"]


def test_ensure_starts_over_when_the_ca_key_is_lost(pki: Pki, clock: FrozenClock) -> None:
    old_ca = load(pki.directory / "ca.pem")
    (pki.directory / "ca.key").unlink()
    pki.ensure()
    new_ca = load(pki.directory / "ca.pem")
    assert new_ca.serial_number != old_ca.serial_number
    for name in ("vault", "gateway", "operator"):
        issuer = load(pki.cert_for(name).cert_path).issuer
        assert issuer == new_ca.subject
    verify_client(pki.ca_bundle_path(), pki.cert_for("gateway").cert_path, now(clock))


# -- rotation ---------------------------------------------------------------------------------


def test_rotate_overlaps_old_and_new(pki: Pki, clock: FrozenClock) -> None:
    old = pki.cert_for("gateway")
    old_pem = old.cert_path.read_bytes()
    old_key = old.key_path.read_bytes()
    clock.advance(DAY)
    new = pki.rotate("gateway")
    assert new.serial != old.serial
    assert new.key_path.read_bytes() != old_key
    assert stat.S_IMODE(new.key_path.stat().st_mode) == 0o600
    kept = pki.directory.parent / "old-gateway.pem"
    kept.write_bytes(old_pem)
    at = now(clock)
    verify_client(pki.ca_bundle_path(), kept, at)
    verify_client(pki.ca_bundle_path(), new.cert_path, at)
    gateway_serials = [e["serial"] for e in pki.issued() if e["name"] == "gateway"]
    assert gateway_serials == [f"{old.serial:X}", f"{new.serial:X}"]
    assert load(new.cert_path).subject == load(kept).subject


def test_rotate_server_keeps_its_hosts(pki: Pki) -> None:
    pki.issue_server("vault", ["127.0.0.1", "vault.internal"])
    rotated = pki.rotate("vault")
    san = ext(load(rotated.cert_path), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["vault.internal"]
    assert ext(load(rotated.cert_path), x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )


def test_revoke_is_recorded(pki: Pki) -> None:
    gateway = pki.cert_for("gateway")
    pki.revoke(gateway.serial)
    entry = next(e for e in pki.issued() if e["serial"] == f"{gateway.serial:X}")
    assert entry["revoked"] is True
    assert pki.revoked_fingerprints() == {gateway.fingerprint_sha256}
    with pytest.raises(PkiError):
        pki.revoke(12345)


def test_rotate_ca_keeps_old_leaves_working_through_the_bundle(
    pki: Pki, clock: FrozenClock
) -> None:
    old_ca_pem = (pki.directory / "ca.pem").read_bytes()
    old_leaf = pki.directory.parent / "old-gateway.pem"
    old_leaf.write_bytes(pki.cert_for("gateway").cert_path.read_bytes())
    old_server = pki.directory.parent / "old-vault.pem"
    old_server.write_bytes(pki.cert_for("vault").cert_path.read_bytes())
    clock.advance(DAY)
    pki.rotate_ca()

    new_ca = load(pki.directory / "ca.pem")
    assert (pki.directory / "ca.pem").read_bytes() != old_ca_pem
    bundle = x509.load_pem_x509_certificates(pki.ca_bundle_path().read_bytes())
    assert [c.serial_number for c in bundle] == [
        new_ca.serial_number,
        x509.load_pem_x509_certificate(old_ca_pem).serial_number,
    ]
    at = now(clock)
    verify_client(pki.ca_bundle_path(), old_leaf, at)
    verify_server(pki.ca_bundle_path(), old_server, "127.0.0.1", at)
    for name in ("gateway", "operator"):
        cert = pki.cert_for(name).cert_path
        assert load(cert).issuer == new_ca.subject
        verify_client(pki.ca_bundle_path(), cert, at)
    verify_server(pki.ca_bundle_path(), pki.cert_for("vault").cert_path, "localhost", at)
    # The new leaves do not verify against the old CA alone: the bundle matters.
    only_old = pki.directory.parent / "only-old.pem"
    only_old.write_bytes(old_ca_pem)
    with pytest.raises(VerificationError):
        verify_client(only_old, pki.cert_for("gateway").cert_path, at)


def test_retired_ca_leaves_the_bundle_when_its_leaves_have_expired(
    pki: Pki, clock: FrozenClock
) -> None:
    old_ca_serial = load(pki.directory / "ca.pem").serial_number
    clock.advance(DAY)
    pki.rotate_ca()
    retired = pki.directory / f"ca-retired-{old_ca_serial:X}.pem"
    assert retired.exists()
    entry = next(e for e in pki.issued() if e["serial"] == f"{old_ca_serial:X}")
    # Trusted until its last leaf (issued a day ago for 90 days) expires.
    assert datetime.fromisoformat(str(entry["trusted_until"])) == (
        datetime.fromtimestamp(clock.now() - DAY, tz=UTC) + timedelta(days=90)
    ).replace(microsecond=0)
    clock.advance(88 * DAY)
    pki.ensure()  # renews the new leaves; the old CA is still needed for one more day
    assert len(x509.load_pem_x509_certificates(pki.ca_bundle_path().read_bytes())) == 2
    clock.advance(2 * DAY)
    pki.ensure()
    assert not retired.exists()
    assert pki.ca_bundle_path().read_bytes() == (pki.directory / "ca.pem").read_bytes()


def test_rotated_ca_key_is_gone_and_new_one_private(pki: Pki) -> None:
    old_key = (pki.directory / "ca.key").read_bytes()
    pki.rotate_ca()
    assert (pki.directory / "ca.key").read_bytes() != old_key
    assert stat.S_IMODE((pki.directory / "ca.key").stat().st_mode) == 0o600
    assert not [p for p in pki.directory.iterdir() if p.read_bytes() == old_key]
