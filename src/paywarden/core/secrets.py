"""Secret values that cannot leak by accident.

A :class:`Secret` masks itself in ``repr``, ``str``, format strings, ``json`` and
logging; the value comes out only through :meth:`Secret.reveal`, so every
exposure is greppable. Equality is constant-time and never against plain str.
"""

from __future__ import annotations

import hmac
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
