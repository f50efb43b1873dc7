"""Provider templates: one TOML data file per provider under ``providers/templates/``.

A template holds what is true of a provider for every deployment (endpoints, quirks, API bases,
common operations); the operator's ``[providers.NAME]`` table adds the client and may override any
of it. The files ship as package data and are read with :mod:`importlib.resources`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

from tokenbroker.errors import ConfigError
from tokenbroker.providers.reader import Reader, check_keys
from tokenbroker.providers.variables import parse_variables

_PACKAGE: Final = "tokenbroker.providers"
_DIRECTORY: Final = "templates"
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

ENDPOINT_KEYS: Final = (
    "authorization_endpoint",
    "token_endpoint",
    "revocation_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "device_authorization_endpoint",
)
# Keys shared by templates and the operator's provider table (explicit overrides).
QUIRK_KEYS: Final = (
    "issuer",
    *ENDPOINT_KEYS,
    "token_endpoint_auth_method",
    "scope_separator",
    "scope_parameter",
    "token_response_path",
    "authorization_params",
    "prompt_consent_for_refresh",
    "code_challenge_methods_supported",
    "id_token_signing_alg_values_supported",
    "tokens_expire",
    "refresh_sends_scope",
    "rotates_refresh_tokens",
    "revocation_token_types",
    "refresh_token_idle_ttl",
    "account",
    "account_graphql_query",
    "api_base_url",
    "api_bases",
    "forward_headers",
    "audit_redact_paths",
    "operations",
    "resource",
    "display_name",
    "docs_url",
)
TEMPLATE_KEYS: Final = frozenset(
    (*QUIRK_KEYS, "default_scopes", "connect_vars", "variables", "notes")
)


@dataclass(frozen=True)
class Template:
    """A parsed template file. ``raw`` is the TOML document; treat it as read-only."""

    name: str
    display_name: str
    raw: Mapping[str, Any]

    @property
    def docs_url(self) -> str | None:
        value = self.raw.get("docs_url")
        return value if isinstance(value, str) else None

    @property
    def notes(self) -> tuple[str, ...]:
        value = self.raw.get("notes")
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    @property
    def is_oidc(self) -> bool:
        scopes = self.raw.get("default_scopes")
        return "issuer" in self.raw or (isinstance(scopes, list) and "openid" in scopes)

    @property
    def tokens_expire(self) -> bool:
        return self.raw.get("tokens_expire") is not False


def _directory() -> Traversable:
    return resources.files(_PACKAGE).joinpath(_DIRECTORY)


def available_templates() -> list[str]:
    """Names of the shipped templates, sorted."""
    names = []
    for entry in _directory().iterdir():
        stem, dot, ext = entry.name.rpartition(".")
        if dot and ext == "toml" and entry.is_file() and _NAME_RE.fullmatch(stem):
            names.append(stem)
    return sorted(names)


def load_template(name: str) -> Template:
    """Read and check one template; unknown names fail with a list of close matches."""
    known = available_templates()
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(
            f"unknown provider template {str(name)[:60]!r}{hint} (available: {', '.join(known)})"
        )
    where = f"template {name!r}"
    try:
        raw = tomllib.loads(_directory().joinpath(f"{name}.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    check_keys(raw, TEMPLATE_KEYS, where)
    reader = Reader(raw, where)
    display_name = reader.required_str("display_name")
    reader.required_str("token_endpoint")
    reader.required_str("authorization_endpoint")
    parse_variables(reader.table_("variables"))
    return Template(name=name, display_name=display_name, raw=raw)
