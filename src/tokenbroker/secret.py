"""A string that never shows itself by accident: ``repr`` and ``str`` are redacted."""

from __future__ import annotations

import hmac
from typing import Final

_REDACTED: Final = "Secret('**********')"


class Secret:
    """Wraps a sensitive string. Call :meth:`reveal` only where the value is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return _REDACTED

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str:
        raise TypeError("Secret values are not picklable")
