"""Client-side helpers: end-to-end card encryption for Python and the browser.

:mod:`paywarden.clients.e2e` seals cards in Python; ``js/paywarden-e2e.js``
(shipped as package data, read it with :func:`browser_helper_source`) does the
same in a web page with WebCrypto.
"""

from __future__ import annotations

from importlib import resources

from paywarden.clients.e2e import (
    SUITE,
    EncryptionKey,
    EncryptionKeyError,
    encrypt_card,
    encrypt_card_params,
    fetch_encryption_key,
)

BROWSER_HELPER = "js/paywarden-e2e.js"

__all__ = [
    "BROWSER_HELPER",
    "SUITE",
    "EncryptionKey",
    "EncryptionKeyError",
    "browser_helper_source",
    "encrypt_card",
    "encrypt_card_params",
    "fetch_encryption_key",
]


def browser_helper_source() -> str:
    """The text of ``paywarden-e2e.js``, e.g. to serve it from a merchant's site."""
    return resources.files("paywarden.clients").joinpath(BROWSER_HELPER).read_text(encoding="utf-8")
