"""Reading the agent's request line and choosing the upstream URL, without decoding anything.

The provider comes from ``/proxy/{provider}[:{base}]``; the host only from the provider's API
base(s) or a connect-time variable that was checked against the template's host pattern.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from tokenbroker.connections.model import Connection
from tokenbroker.errors import DestinationNotAllowed, InvalidPath
from tokenbroker.gateway.exchange import Exchange
from tokenbroker.gateway.paths import split_query
from tokenbroker.policy.sessions import InvalidToken
from tokenbroker.providers.model import ProviderSpec

PREFIX = "/proxy/"
_TARGET = re.compile(r"([a-z0-9][a-z0-9-]{0,39})(?::([A-Za-z0-9_-]{1,40}))?")


def bearer(request: Exchange) -> str:
    scheme, _, value = request.header("Authorization").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidToken("an agent session token is required: Authorization: Bearer <token>")
    return value.strip()


def split_target(raw_path: str) -> tuple[str, str | None, str, str]:
    """Split ``/proxy/{provider}[:{base}]{tail}?{query}`` without decoding anything."""
    path, query = split_query(raw_path)
    if not path.startswith(PREFIX):
        raise InvalidPath("not a proxy path")
    rest = path[len(PREFIX) :]
    target, slash, tail = rest.partition("/")
    match = _TARGET.fullmatch(target)
    if match is None:
        raise InvalidPath("the provider part of the path is not valid")
    return match.group(1), match.group(2), slash + tail, query


def base_url_for(spec: ProviderSpec, base: str | None, connection: Connection | None) -> str:
    if base is not None:
        url = spec.api_bases.get(base)
        if url is None:
            raise DestinationNotAllowed(f"provider {spec.name!r} has no API base {base!r}")
    elif spec.api_base_url is not None:
        url = spec.api_base_url
    else:
        raise DestinationNotAllowed(f"provider {spec.name!r} has no API base configured")
    if "{" in url:
        variables = dict(connection.connect_vars) if connection is not None else {}
        for name, value in variables.items():
            url = url.replace("{" + name + "}", value.rstrip("/"))
        if "{" in url:
            raise DestinationNotAllowed(
                f"provider {spec.name!r} API base needs connect-time values"
            )
    checked = _usable_base(url)
    if checked is None:
        raise DestinationNotAllowed(f"provider {spec.name!r} API base is not a URL")
    return checked


@functools.lru_cache(maxsize=4096)
def _usable_base(url: str) -> str | None:
    """``url`` without a trailing slash when it is an http(s) URL with a host, else None;
    cached, since every request asks again for one of a few bases."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    return url.rstrip("/")


def redacted_query(query: str) -> str:
    if not query:
        return ""
    keys = [part.partition("=")[0] for part in query.split("&") if part]
    return "?" + "&".join(f"{key}=…" for key in keys)


def auth_header(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def capped_retry_after(value: str, cap: int) -> str:
    try:
        return str(min(int(value), cap))
    except ValueError:
        return value
