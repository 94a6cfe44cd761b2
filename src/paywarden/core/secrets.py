"""Secret values that cannot leak by accident.

A :class:`Secret` masks itself in ``repr``, ``str``, format strings, ``json`` and
logging; the value comes out only through :meth:`Secret.reveal`, so every
exposure is greppable. Equality is constant-time and never against plain str.

:class:`CardNumber` and :class:`CardSecurityCode` follow the same rules for card
data; a card number renders as ``CardNumber(424242******4242)``.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, NoReturn


class Secret:
    __slots__ = ("_label", "_value")

    def __init__(self, value: str, label: str = "secret") -> None:
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_label", label)

    def reveal(self) -> str:
        """The clear value. Call sites are the audit surface: keep them few."""
        return str(object.__getattribute__(self, "_value"))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({object.__getattribute__(self, '_label')}=***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        # Only another Secret compares; comparing with a bare str is a bug magnet.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.reveal().encode(), other.reveal().encode())

    def __hash__(self) -> int:
        # Hash of the label only: never let the value reach a hash table's repr.
        return hash(object.__getattribute__(self, "_label"))

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values are not picklable")

    def __getstate__(self) -> NoReturn:
        raise TypeError("Secret values are not serializable")

    def __json__(self) -> str:  # for encoders that honour the convention
        return repr(self)

    def __bool__(self) -> bool:
        return bool(object.__getattribute__(self, "_value"))

    def __len__(self) -> int:
        return len(object.__getattribute__(self, "_value"))

    def __getattribute__(self, name: str) -> Any:
        # Block introspection paths (vars(), __dict__) that would expose _value.
        if name == "_value":
            raise AttributeError("use reveal()")
        return object.__getattribute__(self, name)


# --- Card data -------------------------------------------------------------
#
# PCI DSS v4.0 requirement 3.4.1: a displayed PAN shows at most the BIN (first
# six digits) and the last four. These types make that the only rendering.

_SEPARATED_DIGITS = re.compile(r"[0-9]+(?:[ -]+[0-9]+)*")
# ISO/IEC 7812-1: a PAN has 8 to 19 digits.
_PAN_MIN, _PAN_MAX = 8, 19
# Raw input longer than this (separators included) is refused before the regular
# expression runs, so hostile input costs nothing.
_PAN_MAX_RAW = 64


class _CardSecret:
    """Shared machinery of the card types: immutable, masked, never serialized."""

    __slots__ = ("_value",)

    def __init__(self, digits: str) -> None:
        object.__setattr__(self, "_value", digits)

    def _digits(self) -> str:
        return str(object.__getattribute__(self, "_value"))

    def reveal(self) -> str:
        """The clear digits. Call sites are the audit surface: keep them few."""
        return self._digits()

    def masked(self) -> str:
        """The display form; subclasses show what PCI DSS allows, the base nothing."""
        return "***"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()})"

    def __str__(self) -> str:
        return repr(self)

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        # Same type only: a CardNumber never equals a str, a Secret or a CVC.
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _CardSecret)
        return hmac.compare_digest(self._digits().encode(), other._digits().encode())

    def __hash__(self) -> int:
        # Consistent with __eq__ yet independent of the value: equal numbers share
        # a bucket with every other number, so a hash never fingerprints a card.
        return hash(type(self).__name__)

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} values are not picklable")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} values are not serializable")

    def __json__(self) -> str:  # for encoders that honour the convention
        return repr(self)

    def __getattribute__(self, name: str) -> Any:
        # Block introspection paths that would expose _value.
        if name == "_value":
            raise AttributeError("use reveal()")
        return object.__getattribute__(self, name)


class CardNumber(_CardSecret):
    """A primary account number (PAN): 8 to 19 digits.

    Spaces and dashes between digit groups are accepted and dropped; anything
    else raises :class:`ValueError` with a message that never repeats the input.
    It says nothing about Luhn or brand: that is :mod:`paywarden.vault.cards`.
    """

    __slots__ = ()

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or len(value) > _PAN_MAX_RAW:
            raise ValueError("card number must be a string of digits")
        if not _SEPARATED_DIGITS.fullmatch(value):
            raise ValueError("card number must contain only digits, spaces and dashes")
        digits = value.replace(" ", "").replace("-", "")
        if not _PAN_MIN <= len(digits) <= _PAN_MAX:
            raise ValueError(f"card number must have {_PAN_MIN} to {_PAN_MAX} digits")
        super().__init__(digits)

    def masked(self) -> str:
        """``424242******4242``; numbers shorter than 15 digits keep only the last four."""
        digits = self._digits()
        n = len(digits)
        if n >= 15:
            return digits[:6] + "*" * (n - 10) + digits[-4:]
        return "*" * (n - 4) + digits[-4:]

    @property
    def bin(self) -> str:
        """The first six digits (the issuer identification number, 6-digit form)."""
        return self._digits()[:6]

    @property
    def bin8(self) -> str:
        """The first eight digits (the 8-digit IIN introduced by ISO/IEC 7812-1:2017)."""
        return self._digits()[:8]

    @property
    def last4(self) -> str:
        return self._digits()[-4:]

    @property
    def length(self) -> int:
        return len(self._digits())


class CardSecurityCode(_CardSecret):
    """A card verification code (CVC/CVV/CID): 3 or 4 digits, shown as ``***``."""

    __slots__ = ()

    def __init__(self, value: str) -> None:
        if not (
            isinstance(value, str) and 3 <= len(value) <= 4 and value.isascii() and value.isdigit()
        ):
            raise ValueError("card security code must be 3 or 4 digits")
        super().__init__(value)

    def masked(self) -> str:
        # Always three stars: the display does not even reveal the length.
        return "***"

    @property
    def length(self) -> int:
        return len(self._digits())


class SecretBytes:
    """Key material (a data key, a KEK, an HPKE private key): masked in
    ``repr``/``str``/format, compared in constant time, never pickled. The bytes
    come out only through :meth:`reveal`."""

    __slots__ = ("_label", "_value")

    def __init__(self, value: bytes, label: str = "key") -> None:
        if not isinstance(value, bytes):
            raise TypeError("SecretBytes holds bytes")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_label", label)

    def reveal(self) -> bytes:
        value: bytes = object.__getattribute__(self, "_value")
        return value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("SecretBytes is immutable")

    def __repr__(self) -> str:
        return f"SecretBytes({object.__getattribute__(self, '_label')}=***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self.reveal(), other.reveal())

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_label"))

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes values are not picklable")

    def __len__(self) -> int:
        return len(self.reveal())

    def __getattribute__(self, name: str) -> Any:
        if name == "_value":
            raise AttributeError("use reveal()")
        return object.__getattribute__(self, name)
