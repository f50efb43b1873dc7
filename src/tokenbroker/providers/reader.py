"""Typed access to TOML tables: every wrong type becomes a ConfigError naming where it was found.

TOML parses into plain ``dict``/``list``/``str``/``int``/``bool``; this module turns that into the
types the catalog needs, so a typo or a wrong type in a template or in the operator's
``[providers.NAME]`` table fails at start-up with a clear message instead of deep inside a flow.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from tokenbroker.errors import ConfigError


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse keys not in ``allowed``, suggesting the closest allowed key."""
    allowed_set = set(allowed)
    for key in table:
        if key in allowed_set:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed_set), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown key {str(key)[:60]!r}{hint}; allowed keys: "
            + ", ".join(sorted(allowed_set))
        )


class Reader:
    """Reads typed values from one table; ``where`` prefixes every error message."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        self.table = table
        self.where = where

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key} must be {expected}")

    def str_(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def required_str(self, key: str) -> str:
        value = self.str_(key)
        if not value:
            raise ConfigError(f"{self.where}: {key} is required")
        return value

    def bool_(self, key: str) -> bool | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def int_(self, key: str) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._fail(key, "a positive integer")
        return value

    def str_list(self, key: str) -> tuple[str, ...] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail(key, "a table of strings")
        return dict(value)

    def table_(self, key: str) -> Reader | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._fail(key, "a table")
        return Reader(value, f"{self.where} {key}")

    def tables(self, key: str) -> list[Reader]:
        value = self.table.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self._fail(key, "an array of tables")
        return [Reader(v, f"{self.where} {key}[{i}]") for i, v in enumerate(value)]
