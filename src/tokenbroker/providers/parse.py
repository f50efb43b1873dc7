"""Parsers for the structured parts of a provider: scopes, headers, operations, account, URLs.

Each takes already-typed values (see :mod:`tokenbroker.providers.reader`) and refuses anything
that would be unsafe downstream, with a message naming the provider and the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from tokenbroker.errors import ConfigError
from tokenbroker.protocol.endpoints import check_endpoint_url, first_unsafe_char
from tokenbroker.providers.model import AccountIdentity, ConnectVar, Operation
from tokenbroker.providers.reader import Reader, check_keys

# Parameters the broker sets itself; an operator or template must not override them.
RESERVED_AUTHORIZATION_PARAMS: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "request",
        "request_uri",
        "response_mode",
    }
)
# Headers the gateway sets or strips itself (credentials, routing, hop-by-hop: RFC 9110 §7.6.1).
FORBIDDEN_FORWARD_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_SCOPE_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 NQCHAR
_OP_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_PATH_RE: Final = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]|/|\{[A-Za-z_][A-Za-z0-9_]*\*?\})*")
_DOTTED_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_ACCOUNT_SOURCES: Final = ("id_token", "token_response", "userinfo")
_AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "none")
_REVOCATION_TYPES: Final = frozenset({"refresh_token", "access_token"})


def check_url(
    value: str, *, provider: str, field: str, insecure: bool, connect_vars: frozenset[str]
) -> str:
    """Check an endpoint or API base. API bases may start with a connect-time var, such as
    ``{instance_url}/services/data``: that value is checked when the connection is made."""
    what = f"provider {provider!r} {field}"
    for var in connect_vars:
        prefix = "{" + var + "}"
        if value.startswith(prefix):
            rest = value[len(prefix) :]
            if (rest and not rest.startswith("/")) or first_unsafe_char(rest) or "#" in rest:
                raise ConfigError(f"{what}: only a path may follow {prefix}")
            return value
    return check_endpoint_url(value, allow_insecure_loopback=insecure, what=what)


def auth_method(
    value: str, *, provider: str
) -> Literal["client_secret_basic", "client_secret_post", "none"]:
    if value not in _AUTH_METHODS:
        raise ConfigError(
            f"provider {provider!r}: token_endpoint_auth_method must be one of "
            + ", ".join(_AUTH_METHODS)
        )
    return cast(Literal["client_secret_basic", "client_secret_post", "none"], value)


def scopes(value: object, *, provider: str, separator: str) -> tuple[str, ...]:
    """A list of scope tokens (or one space-separated string), each a valid RFC 6749 token."""
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"provider {provider!r}: scopes must be a list of strings")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or _SCOPE_RE.fullmatch(item) is None or separator in item:
            raise ConfigError(f"provider {provider!r}: invalid scope {str(item)[:60]!r}")
        if item not in out:
            out.append(item)
    return tuple(out)


def scope_parameter(value: str, *, provider: str) -> str:
    if _TOKEN_RE.fullmatch(value) is None or (
        value != "scope" and value in RESERVED_AUTHORIZATION_PARAMS
    ):
        raise ConfigError(f"provider {provider!r}: invalid scope_parameter {value[:40]!r}")
    return value


def dotted_path(value: str, *, provider: str, field: str) -> str | None:
    """A dotted path into JSON such as ``authed_user``; the empty string means None."""
    if not value:
        return None
    if _DOTTED_RE.fullmatch(value) is None:
        raise ConfigError(f"provider {provider!r}: {field} must be a dotted path of names")
    return value


def authorization_params(
    params: Mapping[str, str], *, provider: str, scope_parameter: str = "scope"
) -> dict[str, str]:
    for key, value in params.items():
        if key in RESERVED_AUTHORIZATION_PARAMS or key == scope_parameter:
            raise ConfigError(
                f"provider {provider!r}: authorization_params must not set {key!r}"
                " (the broker sets it)"
            )
        if _TOKEN_RE.fullmatch(key) is None or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigError(f"provider {provider!r}: invalid authorization parameter {key!r}")
    return dict(params)


def forward_headers(names: tuple[str, ...], *, provider: str) -> tuple[str, ...]:
    out: list[str] = []
    for header in names:
        if _TOKEN_RE.fullmatch(header) is None:
            raise ConfigError(f"provider {provider!r}: invalid header name {header[:60]!r}")
        if header.lower() in FORBIDDEN_FORWARD_HEADERS or header.lower().startswith("proxy-"):
            raise ConfigError(f"provider {provider!r}: header {header!r} cannot be forwarded")
        if header.lower() not in (h.lower() for h in out):
            out.append(header)
    return tuple(out)


_PATH_PATTERN_RE: Final = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%{}/-]*")


def audit_redact_paths(patterns: tuple[str, ...], *, provider: str) -> tuple[str, ...]:
    for pattern in patterns:
        if _PATH_PATTERN_RE.fullmatch(pattern) is None or "{" not in pattern:
            raise ConfigError(
                f"provider {provider!r}: audit_redact_paths entry {pattern[:60]!r} must be a path"
                " pattern with at least one {name} segment"
            )
    return patterns


def revocation_types(value: tuple[str, ...], *, provider: str) -> tuple[str, ...]:
    if not value or not set(value) <= _REVOCATION_TYPES:
        raise ConfigError(
            f"provider {provider!r}: revocation_token_types must list refresh_token and/or"
            " access_token"
        )
    return value


def resource(value: str, *, provider: str) -> str:
    """RFC 8707 §2: an absolute URI without a fragment."""
    parts = urlsplit(value)
    if not parts.scheme or "#" in value or first_unsafe_char(value) is not None:
        raise ConfigError(f"provider {provider!r}: resource must be an absolute URI, no fragment")
    return value


def operation(reader: Reader, *, provider: str, bases: Mapping[str, str]) -> Operation:
    check_keys(reader.table, ("name", "method", "path", "scopes", "base", "explicit"), reader.where)
    name = reader.required_str("name")
    if _OP_NAME_RE.fullmatch(name) is None:
        raise ConfigError(f"{reader.where}: invalid operation name {name[:60]!r}")
    method = reader.required_str("method").upper()
    if method not in _METHODS:
        raise ConfigError(f"{reader.where}: method must be one of {', '.join(sorted(_METHODS))}")
    path = reader.required_str("path")
    if _PATH_RE.fullmatch(path) is None or "//" in path or "/../" in f"{path}/":
        raise ConfigError(f"{reader.where}: path must be an absolute path, got {path[:80]!r}")
    base = reader.str_("base")
    if base is not None and base not in bases:
        raise ConfigError(f"{reader.where}: base {base!r} is not one of the api_bases")
    return Operation(
        name=name,
        method=method,
        path=path,
        scopes=reader.str_list("scopes") or (),
        base=base,
        explicit=bool(reader.bool_("explicit")),
    )


def connect_var(reader: Reader) -> ConnectVar:
    check_keys(reader.table, ("name", "source", "host_pattern"), reader.where)
    name = reader.required_str("name")
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) is None:
        raise ConfigError(f"{reader.where}: invalid connect var name {name[:40]!r}")
    pattern = reader.required_str("host_pattern")
    if not pattern.startswith("*.") or re.fullmatch(r"\*(\.[a-z0-9-]+){2,}", pattern) is None:
        raise ConfigError(f"{reader.where}: host_pattern must look like '*.example.com'")
    return ConnectVar(name=name, source=reader.required_str("source"), host_pattern=pattern)


def account(
    reader: Reader, *, provider: str, userinfo_endpoint: str | None, uses_openid: bool
) -> AccountIdentity:
    check_keys(reader.table, ("source", "id_path", "label_path", "userinfo_url"), reader.where)
    source = reader.str_("source") or "id_token"
    if source not in _ACCOUNT_SOURCES:
        raise ConfigError(f"{reader.where}: source must be one of {', '.join(_ACCOUNT_SOURCES)}")
    if source == "id_token" and not uses_openid:
        raise ConfigError(
            f"provider {provider!r}: account source 'id_token' needs the 'openid' scope"
        )
    url = reader.str_("userinfo_url") or (userinfo_endpoint if source == "userinfo" else None)
    if source == "userinfo" and url is None:
        raise ConfigError(f"{reader.where}: source 'userinfo' needs userinfo_url")
    label = reader.str_("label_path")
    return AccountIdentity(
        source=cast(Literal["id_token", "token_response", "userinfo"], source),
        id_path=reader.str_("id_path") or "sub",
        label_path=None if label == "" else (label if label is not None else "email"),
        userinfo_url=url,
    )
