"""The vault's development certificate authority: one CA, a server cert, client certs.

The vault is reachable only over mutual TLS; this module makes the certificates
for that on a machine without an operator-run PKI. Everything is ECDSA P-256
with SHA-256 signatures (pyca/cryptography's x509 builder).

Files in ``directory`` (created 0700)::

    ca.pem ca.key            the current CA (key 0600)
    ca-retired-<SERIAL>.pem  CAs replaced by :meth:`Pki.rotate_ca`, kept until their leaves expire
    ca-bundle.pem            what both sides trust: the current CA, then retired ones still needed
    <name>.pem <name>.key    leaf certificates ("vault" is the server, "gateway"/"operator" clients)
    index.json               every certificate ever issued, for auditors (see :meth:`Pki.issued`)
    pki.lock                 serialises writers (flock), so two processes calling ensure() agree

Identity: a client certificate names its holder in a SPIFFE-style URI SAN,
``spiffe://paywarden.local/<name>`` (also CN=<name>); :func:`identity_from_der`
reads it back for the TLS side, which must not import ``cryptography.hazmat``.

Rotation keeps overlap: :meth:`Pki.rotate` re-keys a leaf while the old
certificate stays valid until it expires (unless revoked); :meth:`Pki.rotate_ca`
keeps the old CA in the bundle until every leaf it signed has expired. Peers
must load the new bundle before the server presents a certificate from a new CA.

Security notes. This is a *dev* CA: the CA key sits unencrypted (0600) next to
the leaves. A production vault would use an operator CA with the key offline or
in an HSM and only call :meth:`Pki.cert_for`. Revocation is recorded in the
index (:meth:`Pki.revoke`, :meth:`Pki.revoked_fingerprints`); no CRL is
published, so an application that must refuse a revoked but unexpired cert
compares the peer fingerprint with ``revoked_fingerprints()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from paywarden.core.clock import Clock, SystemClock
from paywarden.core.files import atomic_write

__all__ = [
    "SPIFFE_PREFIX",
    "IssuedCert",
    "Pki",
    "PkiError",
    "identity_from_der",
]

SPIFFE_PREFIX = "spiffe://paywarden.local/"
ORGANIZATION = "Paywarden"
SERVER_NAME = "vault"
INDEX_VERSION = 1

# Leaf names become file names and URI path segments: keep them boring.
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_RESERVED = frozenset({"ca", "ca-bundle", "index", "pki"})
# Certificates start a little in the past so a peer whose clock lags still accepts them.
_BACKDATE = timedelta(minutes=5)


class PkiError(Exception):
    """A certificate is missing, a name is unusable, or the directory is inconsistent."""


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate on disk: ``name`` is the identity ("vault", "gateway", ...),
    the key file is 0600, ``not_after`` is UTC, the fingerprint is SHA-256 of the DER."""

    name: str
    cert_path: Path
    key_path: Path
    serial: int
    not_after: datetime
    fingerprint_sha256: str


def identity_from_der(der: bytes) -> str | None:
    """The identity a certificate names: the last segment of its paywarden SPIFFE URI.

    Falls back to the subject CN only when the certificate has no URI SAN at
    all; a URI SAN from another trust domain yields ``None`` rather than a CN
    that might have been chosen to impersonate. Unparseable input yields ``None``.
    The caller must already have verified the certificate (the TLS handshake does).
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris:
        for uri in uris:
            if uri.startswith(SPIFFE_PREFIX):
                name = uri[len(SPIFFE_PREFIX) :].rsplit("/", 1)[-1]
                return name or None
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return None
    value = cns[0].value
    return value if isinstance(value, str) and value else None


def _serial_hex(serial: int) -> str:
    # Upper-case hex, as `openssl x509 -serial` prints it; JSON numbers this
    # large (159 bits) lose precision in many readers, so the index stores text.
    return f"{serial:X}"


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name) or name in _RESERVED or name.startswith("ca-"):
        raise PkiError(f"unusable certificate name {name!r}")


def _check_days(days: int | None) -> None:
    if days is not None and days < 1:
        raise PkiError("validity must be at least one day")


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise PkiError("a server certificate needs at least one host")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
                raise PkiError(f"unusable host name {host!r}") from None
            names.append(x509.DNSName(host.lower()))
    return names


def _hosts_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return ips + list(san.get_values_for_type(x509.DNSName))


def _is_server(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku


def _role_of(cert: x509.Certificate) -> str | None:
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    value = ous[0].value if ous else None
    return value if isinstance(value, str) else None


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return ext.key_identifier


class Pki:
    """A directory-backed dev CA. Every mutating method holds the directory lock."""

    def __init__(
        self,
        directory: Path,
        *,
        ca_days: int = 3650,
        leaf_days: int = 90,
        renew_before_days: int = 14,
        clock: Clock | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_event(event, details)`` is told of every certificate issued or
        revoked and every new CA (the vault's audit log listens: PCI DSS
        10.2.1.5) as it happens; if it raises, the command fails."""
        self._on_event = on_event
        if min(ca_days, leaf_days) < 1 or renew_before_days < 0:
            raise PkiError("validity periods must be positive")
        self.directory = Path(directory)
        self.ca_days = ca_days
        self.leaf_days = leaf_days
        self.renew_before = timedelta(days=renew_before_days)
        self._clock: Clock = clock or SystemClock()
        self._thread_lock = threading.RLock()
        self._depth = 0

    # -- public API -------------------------------------------------------------

    def ensure(
        self,
        *,
        server_hosts: Sequence[str] = ("127.0.0.1", "localhost"),
        clients: Sequence[str] = ("gateway", "operator"),
    ) -> None:
        """Create what is missing; re-issue what expires within ``renew_before``.

        A second call with nothing due changes no file. The server certificate
        is also re-issued when its hosts differ from ``server_hosts``.
        """
        with self._locked():
            now = self._now()
            if not self._pair_ok(self._ca_cert_path, self._ca_key_path):
                if self._index()["certificates"]:
                    # The CA key is lost (or does not match): its leaves stay trusted
                    # through the bundle, a new CA starts, and every leaf is re-issued
                    # below because its AKI no longer matches.
                    self._retire_missing_ca()
                self._new_ca()
            elif self._load_cert(self._ca_cert_path).not_valid_after_utc - now <= self.renew_before:
                self.rotate_ca()
            ca = self._load_cert(self._ca_cert_path)
            if self._due(SERVER_NAME, ca, now) or self._hosts_changed(server_hosts):
                self.issue_server(SERVER_NAME, server_hosts)
            for name in clients:
                if self._due(name, ca, now):
                    self.issue_client(name)
            self._write_bundle(only_if_changed=True)

    def issue_server(
        self, name: str, hosts: Sequence[str], *, days: int | None = None
    ) -> IssuedCert:
        """A server certificate for ``hosts`` (IP and DNS SANs), EKU serverAuth."""
        _check_name(name)
        _check_days(days)
        san = x509.SubjectAlternativeName(_general_names(hosts))
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "server"),
            ]
        )
        return self._issue_leaf(
            name,
            subject=subject,
            san=san,
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            kind="server",
            days=days,
        )

    def issue_client(
        self, name: str, *, days: int | None = None, role: str | None = None
    ) -> IssuedCert:
        """A client certificate: CN=name, O=Paywarden, OU=role (default: name), EKU clientAuth.

        The identity is the URI SAN ``spiffe://paywarden.local/<name>``.
        """
        _check_name(name)
        _check_days(days)
        if role is not None:
            _check_name(role)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role or name),
            ]
        )
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE_PREFIX + name)])
        return self._issue_leaf(
            name,
            subject=subject,
            san=san,
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
            kind="client",
            days=days,
        )

    def rotate(self, name: str) -> IssuedCert:
        """Re-issue ``name`` with a fresh key pair and the same hosts or role.

        The previous certificate stays in the index and stays valid until it
        expires (so running peers keep working), unless it is revoked.
        """
        with self._locked():
            cert = self._load_cert(self._cert_path(name))
            if _is_server(cert):
                return self.issue_server(name, _hosts_of(cert))
            return self.issue_client(name, role=_role_of(cert))

    def rotate_ca(self) -> None:
        """Replace the CA and re-issue every current leaf from the new one.

        The old CA certificate moves to ``ca-retired-<SERIAL>.pem`` and stays in
        the bundle until the last leaf it signed expires; its key is deleted.
        """
        with self._locked():
            old = self._load_cert(self._ca_cert_path)
            names = [p.stem for p in sorted(self.directory.glob("*.pem")) if self._is_leaf_file(p)]
            leaves = {name: self._load_cert(self._cert_path(name)) for name in names}
            self._retire_ca(old)
            self._new_ca()
            for name, cert in leaves.items():
                if _is_server(cert):
                    self.issue_server(name, _hosts_of(cert))
                else:
                    self.issue_client(name, role=_role_of(cert))
            self._write_bundle()

    def revoke(self, serial: int) -> None:
        """Mark a certificate revoked in the index (see the module notes on enforcement)."""
        with self._locked():
            index = self._index()
            for entry in index["certificates"]:
                if entry["serial"] == _serial_hex(serial):
                    self._emit(
                        "certificate.revoked",
                        serial=_serial_hex(serial),
                        fingerprint_sha256=entry.get("fingerprint_sha256"),
                    )
                    entry["revoked"] = True
                    entry["revoked_at"] = self._now().isoformat()
                    self._write_index(index)
                    return
            raise PkiError(f"no certificate with serial {_serial_hex(serial)}")

    def revoked_fingerprints(self) -> frozenset[str]:
        return frozenset(
            str(e["fingerprint_sha256"]) for e in self._index()["certificates"] if e["revoked"]
        )

    def ca_bundle_path(self) -> Path:
        return self.directory / "ca-bundle.pem"

    def cert_for(self, name: str) -> IssuedCert:
        """The current certificate and key files for ``name``."""
        _check_name(name)
        path = self._cert_path(name)
        if not path.exists() or not self._key_path(name).exists():
            raise PkiError(f"no certificate for {name!r}; run ensure() first")
        return self._issued(name, self._load_cert(path))

    def issued(self) -> list[dict[str, object]]:
        """Every certificate issued here, oldest first (CAs included, kind "ca")."""
        return [dict(e) for e in self._index()["certificates"]]

    # -- internals ----------------------------------------------------------------

    @property
    def _ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def _ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def _index_path(self) -> Path:
        return self.directory / "index.json"

    def _cert_path(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def _key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def _is_leaf_file(self, path: Path) -> bool:
        stem = path.stem
        return (
            bool(_NAME_RE.fullmatch(stem))
            and stem not in _RESERVED
            and not stem.startswith("ca-")
            and self._key_path(stem).exists()
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), tz=UTC)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock locks belong to an open file description, so re-entering from the
        # same process through a second open() would deadlock: count depth instead.
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._prepare_directory()
            with open(self.directory / "pki.lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for an existing directory.
        os.chmod(self.directory, 0o700)

    def _index(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "certificates": []}
        if data.get("version") != INDEX_VERSION:
            raise PkiError(f"unsupported index version {data.get('version')!r}")
        return data

    def _write_index(self, index: dict[str, Any]) -> None:
        body = json.dumps(index, indent=2, sort_keys=True) + "\n"
        atomic_write(self._index_path, body.encode(), mode=0o644)

    def _record(
        self, name: str, kind: str, cert: x509.Certificate, issuer: x509.Certificate | None
    ) -> None:
        index = self._index()
        index["certificates"].append(
            {
                "serial": _serial_hex(cert.serial_number),
                "name": name,
                "kind": kind,
                "issuer_serial": _serial_hex(issuer.serial_number) if issuer else None,
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "fingerprint_sha256": _fingerprint(cert),
                "issued_at": self._now().isoformat(),
                "revoked": False,
            }
        )
        self._write_index(index)

    @staticmethod
    def _load_cert(path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except FileNotFoundError:
            raise PkiError(f"missing certificate {path.name}") from None

    @staticmethod
    def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise PkiError(f"missing key {path.name}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{path.name} is not an EC key")
        return key

    def _pair_ok(self, cert_path: Path, key_path: Path) -> bool:
        """Both files exist and the key belongs to the certificate (a crash between the
        two writes of an issue could leave a new key beside an old certificate)."""
        if not cert_path.exists() or not key_path.exists():
            return False
        cert_public = self._load_cert(cert_path).public_key()
        return self._load_key(key_path).public_key() == cert_public

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self._pair_ok(self._ca_cert_path, self._ca_key_path):
            raise PkiError("the CA certificate and key are missing or do not match")
        return self._load_cert(self._ca_cert_path), self._load_key(self._ca_key_path)

    def _due(self, name: str, ca: x509.Certificate, now: datetime) -> bool:
        path = self._cert_path(name)
        if not self._pair_ok(path, self._key_path(name)):
            return True
        cert = self._load_cert(path)
        # A leaf from another (lost or replaced) CA is renewed too.
        return cert.not_valid_after_utc - now <= self.renew_before or _aki(cert) != _ski(ca)

    def _hosts_changed(self, hosts: Sequence[str]) -> bool:
        current = _hosts_of(self._load_cert(self._cert_path(SERVER_NAME)))
        return set(_general_names(current)) != set(_general_names(hosts))

    def _write_key(self, path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, mode=0o600)

    def _new_ca(self) -> None:
        self._emit("ca.created")
        with self._locked():
            now = self._now()
            key = ec.generate_private_key(ec.SECP256R1())
            serial = x509.random_serial_number()
            # A distinct CN per CA keeps OpenSSL's name-based issuer lookup unambiguous
            # while an old and a new CA sit in the same bundle.
            name = x509.Name(
                [
                    x509.NameAttribute(
                        NameOID.COMMON_NAME, f"Paywarden vault dev CA {_serial_hex(serial)[:12]}"
                    ),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                ]
            )
            public = key.public_key()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(public)
                .serial_number(serial)
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(now + timedelta(days=self.ca_days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            # Key first; a crash between the writes leaves a mismatched pair that
            # _pair_ok() detects, so the next ensure() starts a fresh CA.
            self._write_key(self._ca_key_path, key)
            atomic_write(
                self._ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644
            )
            self._record("ca", "ca", cert, None)
            self._write_bundle()

    def _retire_ca(self, old: x509.Certificate) -> None:
        serial = _serial_hex(old.serial_number)
        index = self._index()
        now = self._now()
        signed = [
            datetime.fromisoformat(e["not_after"])
            for e in index["certificates"]
            if e["issuer_serial"] == serial and not e["revoked"]
        ]
        trusted_until = min(max(signed, default=now), old.not_valid_after_utc)
        for entry in index["certificates"]:
            if entry["serial"] == serial:
                entry["retired_at"] = now.isoformat()
                entry["trusted_until"] = trusted_until.isoformat()
        self._write_index(index)
        retired = self.directory / f"ca-retired-{serial}.pem"
        atomic_write(retired, old.public_bytes(serialization.Encoding.PEM), mode=0o644)
        # The old CA signs nothing more.
        self._ca_key_path.unlink(missing_ok=True)

    def _retire_missing_ca(self) -> None:
        # ca.pem or ca.key vanished: whatever certificate survives cannot be renewed.
        if self._ca_cert_path.exists():
            self._retire_ca(self._load_cert(self._ca_cert_path))
        self._ca_cert_path.unlink(missing_ok=True)

    def _bundle_bytes(self) -> bytes:
        """The current CA, then retired CAs still trusted; deletes retired files past that."""
        now = self._now()
        parts = [self._ca_cert_path.read_bytes()]
        trusted = {
            e["serial"]
            for e in self._index()["certificates"]
            if e["kind"] == "ca"
            and "trusted_until" in e
            and datetime.fromisoformat(e["trusted_until"]) > now
        }
        for path in sorted(self.directory.glob("ca-retired-*.pem")):
            serial = path.stem.removeprefix("ca-retired-")
            if serial in trusted:
                parts.append(path.read_bytes())
            else:
                path.unlink()
        return b"".join(parts)

    def _write_bundle(self, *, only_if_changed: bool = False) -> None:
        data = self._bundle_bytes()
        path = self.ca_bundle_path()
        if only_if_changed and path.exists() and path.read_bytes() == data:
            return
        atomic_write(path, data, mode=0o644)

    def _issue_leaf(
        self,
        name: str,
        *,
        subject: x509.Name,
        san: x509.SubjectAlternativeName,
        eku: x509.ObjectIdentifier,
        kind: str,
        days: int | None,
    ) -> IssuedCert:
        with self._locked():
            ca_cert, ca_key = self._load_ca()
            now = self._now()
            key = ec.generate_private_key(ec.SECP256R1())
            # A leaf never outlives its CA.
            not_after = min(
                now + timedelta(days=self.leaf_days if days is None else days),
                ca_cert.not_valid_after_utc,
            )
            ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                # A URI-only SAN leaves the subject meaningful (CN=name), so not critical.
                .add_extension(san, critical=False)
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            # Key before certificate. A reader between the two writes pairs the old
            # cert with the new key: ssl's load_cert_chain fails loudly and a retry
            # succeeds; ensure() treats such a pair as due.
            self._write_key(self._key_path(name), key)
            atomic_write(
                self._cert_path(name), cert.public_bytes(serialization.Encoding.PEM), mode=0o644
            )
            self._record(name, kind, cert, ca_cert)
            issued = self._issued(name, cert)
            self._emit(
                "certificate.issued",
                name=name,
                kind=kind,
                serial=_serial_hex(issued.serial),
                fingerprint_sha256=issued.fingerprint_sha256,
                not_after=issued.not_after.isoformat(),
            )
            return issued

    def _emit(self, event: str, **details: Any) -> None:
        if self._on_event is not None:
            self._on_event(event, details)

    def _issued(self, name: str, cert: x509.Certificate) -> IssuedCert:
        return IssuedCert(
            name=name,
            cert_path=self._cert_path(name),
            key_path=self._key_path(name),
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
            fingerprint_sha256=_fingerprint(cert),
        )
