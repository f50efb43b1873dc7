"""Checks for URLs the broker will call: configured or discovered endpoints (RFC 8414 §2, §7.1).

An endpoint must be an absolute ``https`` URL with a plain host (RFC 6749 §3.1, §3.2, §3.1.2.1;
RFC 9700 §2.6). Plain ``http`` is tolerated only for loopback hosts in development. Characters
that have no business in an endpoint (whitespace, controls, quotes, shell metacharacters) are
refused outright, so a hostile metadata document can never smuggle a ``javascript:`` URL or a
shell command into something downstream (mcp-remote CVE-2025-6514, SECURITY.md A6).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import SplitResult, urlsplit

from tokenbroker.errors import ConfigError

MAX_URL_LENGTH: Final = 2048
# Shell and HTML metacharacters that never appear in a sane endpoint URL. ``&``, ``(`` and ``)``
# stay allowed (query strings); ``$`` alone covers ``$(`` and ``${``.
_FORBIDDEN_CHARS: Final = frozenset("`$;|\\<>\"'{}^")
_HOST_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE: Final = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets allowed, case ignored)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_valid_host(host: str) -> bool:
    """True for a DNS name of letters, digits, dots and hyphens, or an IP address literal."""
    if not host:
        return False
    if _HOSTNAME_RE.fullmatch(host.lower()) is not None:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_strict(url: str) -> SplitResult | None:
    """``urlsplit`` that returns None instead of raising, and checks that the port parses."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return None
    return parts


def first_unsafe_char(value: str) -> str | None:
    """The first whitespace, control, non-ASCII or metacharacter in ``value``, if any."""
    for char in value:
        if ord(char) <= 0x20 or ord(char) >= 0x7F or char in _FORBIDDEN_CHARS:
            return char
    return None


def check_endpoint_url(url: str, *, allow_insecure_loopback: bool, what: str) -> str:
    """Return ``url`` if it is safe to call as an OAuth endpoint, else raise ConfigError.

    ``what`` names the setting in messages, e.g. ``"provider 'acme' token_endpoint"``. Messages
    quote only the offending part (with ``repr``), never the whole URL.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{what} must be a non-empty URL string")
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(f"{what} is longer than {MAX_URL_LENGTH} characters")
    bad = first_unsafe_char(url)
    if bad is not None:
        raise ConfigError(f"{what} contains a forbidden character {bad!r}")
    if "#" in url:
        raise ConfigError(f"{what} must not contain a fragment")
    parts = split_strict(url)
    if parts is None:
        raise ConfigError(f"{what} is not a valid URL")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{what} must use https, not {scheme[:20]!r}")
    if not parts.netloc or not url.lower().startswith(f"{scheme}://"):
        raise ConfigError(f"{what} must be an absolute URL with a host")
    if "@" in parts.netloc:
        raise ConfigError(f"{what} must not contain user information ('@')")
    host = parts.hostname or ""
    if not is_valid_host(host):
        raise ConfigError(f"{what} has an invalid host")
    if scheme == "https" or (allow_insecure_loopback and is_loopback_host(host)):
        return url
    raise ConfigError(f"{what} must use https (http is allowed only for loopback in dev)")
