# ruff: noqa: TID251 - a reference built from raw primitives, for tests only
"""A from-the-RFC HPKE reference for the vault's one suite, for tests only.

RFC 9180 base mode, single shot, with DHKEM(X25519, HKDF-SHA256) (0x0020),
HKDF-SHA256 (0x0001) and AES-128-GCM (0x0001), written step by step from
sections 4 (DHKEM), 5.1 (key schedule) and 5.2 (encryption) on top of raw
primitives. Unlike pyca's single-shot API it takes a fixed ephemeral key and
associated data, so it can reproduce the RFC's Appendix A.1 vectors exactly;
it is the yardstick both for :mod:`paywarden.vault.crypto.hpke` and for the
JavaScript sealing helper.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0001
MODE_BASE = 0x00
N_SECRET, N_ENC, N_K, N_N, N_H = 32, 32, 16, 12, 32

KEM_SUITE_ID = b"KEM" + KEM_ID.to_bytes(2, "big")
HPKE_SUITE_ID = (
    b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    # HKDF-Extract (RFC 5869 2.2): HMAC-Hash(salt, IKM); an empty salt is an empty HMAC key.
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, length)


def _shared_secret(dh: bytes, kem_context: bytes) -> bytes:
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh)
    return labeled_expand(KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, N_SECRET)


def encap(pk_r: bytes, sk_e: bytes) -> tuple[bytes, bytes]:
    """DHKEM Encap with a given ephemeral key: ``(shared_secret, enc)``."""
    eph = X25519PrivateKey.from_private_bytes(sk_e)
    enc = eph.public_key().public_bytes_raw()
    dh = eph.exchange(X25519PublicKey.from_public_bytes(pk_r))
    return _shared_secret(dh, enc + pk_r), enc


def decap(enc: bytes, sk_r: bytes) -> bytes:
    recipient = X25519PrivateKey.from_private_bytes(sk_r)
    dh = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    return _shared_secret(dh, enc + recipient.public_key().public_bytes_raw())


@dataclass(frozen=True)
class Context:
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes
    key_schedule_context: bytes
    secret: bytes


def key_schedule(shared_secret: bytes, info: bytes) -> Context:
    """Base mode (no PSK) key schedule."""
    psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info)
    ksc = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"")
    return Context(
        key=labeled_expand(HPKE_SUITE_ID, secret, b"key", ksc, N_K),
        base_nonce=labeled_expand(HPKE_SUITE_ID, secret, b"base_nonce", ksc, N_N),
        exporter_secret=labeled_expand(HPKE_SUITE_ID, secret, b"exp", ksc, N_H),
        key_schedule_context=ksc,
        secret=secret,
    )


def seal_with_ephemeral(pkR: bytes, skE: bytes, info: bytes, aad: bytes, pt: bytes) -> bytes:
    """Single-shot seal (sequence number 0) with a fixed ephemeral key; returns ``enc || ct``."""
    shared_secret, enc = encap(pkR, skE)
    ctx = key_schedule(shared_secret, info)
    return enc + AESGCM(ctx.key).encrypt(ctx.base_nonce, pt, aad)


def open_single_shot(skR: bytes, payload: bytes, info: bytes, aad: bytes) -> bytes:
    """Single-shot open (sequence number 0) of ``enc || ct``."""
    enc, ct = payload[:N_ENC], payload[N_ENC:]
    ctx = key_schedule(decap(enc, skR), info)
    return AESGCM(ctx.key).decrypt(ctx.base_nonce, ct, aad)
