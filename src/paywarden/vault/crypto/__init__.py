"""The vault's cryptography: the only package allowed to import ``cryptography.hazmat``.

Everything else calls these recipes:

- :mod:`.aead`: AES-256-GCM sealing, HMAC-SHA256, HKDF-SHA256, :class:`.aead.DecryptionError`
- :mod:`.hpke`: RFC 9180 HPKE for card data sealed by clients to the vault's key
- :mod:`.pki`: the development certificate authority for the vault's mutual TLS
"""
