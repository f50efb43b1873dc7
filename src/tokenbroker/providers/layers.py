"""Layered lookup for one provider: operator table, then discovery metadata, then template.

Strings from the operator table and the template get template variables substituted; strings
from discovery metadata are taken as they are (they are checked, never rewritten).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenbroker.errors import ConfigError
from tokenbroker.providers.reader import Reader
from tokenbroker.providers.variables import substitute

# An RFC 8414 / OIDC discovery document, already fetched and validated by the caller.
ServerMetadataLike = Mapping[str, Any]


class Layers:
    """Looks a key up in the operator table, then the metadata, then the template."""

    def __init__(
        self,
        name: str,
        section: Reader,
        template: Reader | None,
        metadata: ServerMetadataLike | None,
        values: Mapping[str, str],
    ) -> None:
        self.name = name
        self.section = section
        self.template = template
        self.metadata = metadata
        self.values = values

    def layer(self, key: str) -> Reader | None:
        if key in self.section:
            return self.section
        if self.template is not None and key in self.template:
            return self.template
        return None

    def sub(self, text: str, key: str, keep: frozenset[str] = frozenset()) -> str:
        return substitute(text, self.values, provider=self.name, field=key, keep=keep)

    def str_(self, key: str, metadata_key: str | None = None) -> str | None:
        if key in self.section:
            value = self.section.str_(key)
            return None if value is None else self.sub(value, key)
        if metadata_key and self.metadata is not None and metadata_key in self.metadata:
            found = self.metadata[metadata_key]
            if not isinstance(found, str):
                raise ConfigError(
                    f"provider {self.name!r}: metadata {metadata_key} is not a string"
                )
            return found
        value = self.template.str_(key) if self.template is not None else None
        return None if value is None else self.sub(value, key)

    def bool_(self, key: str) -> bool | None:
        layer = self.layer(key)
        return None if layer is None else layer.bool_(key)

    def metadata_list(self, key: str) -> tuple[str, ...] | None:
        found = self.metadata.get(key) if self.metadata is not None else None
        if found is None:
            return None
        if not isinstance(found, list) or not all(isinstance(v, str) for v in found):
            raise ConfigError(f"provider {self.name!r}: metadata {key} is not a list of strings")
        return tuple(found)

    def str_map(self, key: str, keep: frozenset[str] = frozenset()) -> dict[str, str]:
        merged: dict[str, str] = {}
        for layer in (self.template, self.section):
            found = layer.str_map(key) if layer is not None else None
            for k, v in (found or {}).items():
                merged[k] = self.sub(v, f"{key}.{k}", keep)
        return merged
