"""The gateway's client for the vault: mutual TLS, the gateway's own certificate.

Card data passes through here on its way in (raw or HPKE-encrypted) and is
never kept: the request body is built, sent, and dropped. The gateway receives
only :class:`CardMetadata`. Errors are mapped to three kinds:

* :class:`VaultCardError` — the card data is invalid (Stripe card error codes);
* :class:`VaultUnavailable` — the vault could not be reached; nothing happened;
* :class:`VaultFailure` — the vault refused or failed; the message is safe to log.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from paywarden.core.secrets import Secret


class VaultFailure(Exception):
    def __init__(self, message: str, *, status: int = 500, code: str = "vault_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class VaultUnavailable(VaultFailure):
    pass


class VaultOutcomeUnknown(VaultFailure):
    """The vault may have acted (e.g. forwarded an authorization)."""


class VaultCardError(VaultFailure):
    def __init__(self, message: str, *, code: str, param: str | None) -> None:
        super().__init__(message, status=402, code=code)
        self.param = param


@dataclass(frozen=True)
class CardMetadata:
    token: str
    brand: str
    bin: str | None  # None for numbers shorter than 15 digits
    last4: str
    exp_month: int
    exp_year: int
    funding: str
    country: str | None
    fingerprint: str


@dataclass(frozen=True)
class RawCard:
    """Card data as the merchant sent it. Masked everywhere."""

    number: Secret
    exp_month: Any
    exp_year: Any
    cvc: Secret | None

    def __repr__(self) -> str:
        return "RawCard(***)"


@dataclass(frozen=True)
class EncryptedCard:
    key_id: str
    payload: str

    def __repr__(self) -> str:
        return f"EncryptedCard(key_id={self.key_id!r})"


CardData = RawCard | EncryptedCard


class VaultClient:
    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(
            verify=ssl_context,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"VaultClient({self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------- requests

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        request_id: str | None = None,
        unknown_on_timeout: bool = False,
    ) -> dict[str, Any]:
        headers = {"X-Request-Id": request_id} if request_id else {}
        try:
            response = self._client.request(
                method, self.base_url + path, json=json, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise VaultUnavailable("The card vault is unavailable.", status=503) from None
        except httpx.TransportError:
            if unknown_on_timeout:
                raise VaultOutcomeUnknown("The card vault did not answer.", status=504) from None
            raise VaultUnavailable("The card vault did not answer.", status=503) from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if response.status_code == 200:
            return data
        raw_err = data.get("error")
        err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
        code = str(err.get("code") or "vault_error")
        message = str(err.get("message") or "The card vault refused the request.")[:300]
        if err.get("type") == "card_error":
            raise VaultCardError(message, code=code, param=err.get("param"))
        raise VaultFailure(message, status=response.status_code, code=code)

    def tokenize(
        self, *, account_id: str, card: CardData, request_id: str | None = None
    ) -> CardMetadata:
        body: dict[str, Any] = {"account_id": account_id}
        if isinstance(card, EncryptedCard):
            body["encrypted"] = {"key_id": card.key_id, "payload": card.payload}
        else:
            body["card"] = {
                "number": card.number.reveal(),
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
            }
            if card.cvc is not None:
                body["card"]["cvc"] = card.cvc.reveal()
        try:
            data = self._call("POST", "/v1/cards", json=body, request_id=request_id)
        finally:
            body.clear()
        return CardMetadata(
            token=str(data["token"]),
            brand=str(data["brand"]),
            bin=data["bin"] if isinstance(data.get("bin"), str) else None,
            last4=str(data["last4"]),
            exp_month=int(data["exp_month"]),
            exp_year=int(data["exp_year"]),
            funding=str(data["funding"]),
            country=data.get("country"),
            fingerprint=str(data["fingerprint"]),
        )

    def forward_authorization(
        self,
        *,
        token: str,
        account_id: str,
        destination: str,
        body: dict[str, Any],
        headers: dict[str, str],
        request_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """The acquirer's HTTP status and JSON body, relayed by the vault."""
        data = self._call(
            "POST",
            f"/v1/cards/{token}/forward",
            json={
                "account_id": account_id,
                "destination": destination,
                "body": body,
                "headers": headers,
            },
            request_id=request_id,
            unknown_on_timeout=True,
        )
        inner = data.get("body")
        return int(data.get("status_code", 502)), inner if isinstance(inner, dict) else {}

    def delete(self, *, token: str, account_id: str, reason: str) -> None:
        self._call(
            "DELETE", f"/v1/cards/{token}", json={"account_id": account_id, "reason": reason}
        )

    def encryption_keys(self) -> list[dict[str, Any]]:
        data = self._call("GET", "/v1/encryption_keys")
        keys = data.get("data")
        return keys if isinstance(keys, list) else []
