"""Where the broker may send the browser after a connect flow: no open redirector
(RFC 9700 §4.11, §2.1; RFC 6749 §10.15; RFC 6454 §4 for origins).

Allowed: a path on the broker's own origin beginning with exactly one ``/`` (resolved against
``public_url``), or an absolute ``http(s)`` URL whose origin equals ``public_url``'s or one of
``allowed_origins``. Everything browsers might read as another host is refused: ``//evil``,
``/\\evil``, ``/\\t/evil``, ``https:evil``, ``javascript:``, userinfo (``@``), backslashes,
whitespace and control characters anywhere, and percent-encoded ``/`` or ``\\`` at the start of
the path at any decoding depth (oauth2-proxy GHSA-qqxw-m5fj-f7gv, CVE-2020-4037).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import unquote

from tokenbroker.errors import ConfigError, UnsafeRedirect
from tokenbroker.protocol.endpoints import is_valid_host, split_strict

MAX_RETURN_TO_CHARS: Final = 2048
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ABSOLUTE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DECODE_DEPTH: Final = 3


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` in lowercase with default ports dropped; None if not http(s)."""
    if not _ABSOLUTE_RE.match(url):
        return None
    parts = split_strict(url)
    if parts is None or parts.scheme.lower() not in _DEFAULT_PORTS:
        return None
    if "@" in parts.netloc or "\\" in parts.netloc:
        return None
    host = parts.hostname or ""
    if not is_valid_host(host):
        return None
    scheme = parts.scheme.lower()
    host_part = f"[{host}]" if ":" in host else host
    port = parts.port
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host_part}"
    return f"{scheme}://{host_part}:{port}"


def _has_unsafe_char(value: str) -> bool:
    return any(ord(c) <= 0x20 or ord(c) >= 0x7F or c == "\\" for c in value)


def _is_safe_path(path: str) -> bool:
    """``/`` alone, or ``/`` then neither ``/`` nor ``\\``, at every percent-decoding depth.

    The raw path must be printable ASCII without backslashes; decoded forms may contain
    spaces or non-ASCII (legitimate ``%20``, ``%C3%A9``) but no control characters.
    """
    if _has_unsafe_char(path):
        return False
    current = path
    for _ in range(_DECODE_DEPTH + 1):
        if not current.startswith("/") or current[1:2] in ("/", "\\"):
            return False
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in current):
            return False
        decoded = unquote(current)
        if decoded == current:
            return True
        current = decoded
    return False  # still changing after several decodings: refuse


def _refuse(reason: str) -> UnsafeRedirect:
    return UnsafeRedirect(f"return_to refused: {reason}")


def check_return_to(value: str, *, allowed_origins: Sequence[str], public_url: str) -> str:
    """Return the absolute URL to redirect to, or raise UnsafeRedirect.

    Raises ConfigError if ``public_url`` or an entry of ``allowed_origins`` is not an origin.
    """
    public_origin = origin_of(public_url)
    if public_origin is None:
        raise ConfigError("public_url is not an absolute http(s) URL")
    origins = {public_origin}
    for entry in allowed_origins:
        origin = origin_of(entry)
        if origin is None:
            raise ConfigError("an allowed return_to origin is not an absolute http(s) URL")
        origins.add(origin)
    if not isinstance(value, str) or not value:
        raise _refuse("empty")
    if len(value) > MAX_RETURN_TO_CHARS:
        raise _refuse(f"longer than {MAX_RETURN_TO_CHARS} characters")
    if _has_unsafe_char(value):
        raise _refuse("whitespace, control, non-ASCII or backslash character")
    if value.startswith("/"):
        if not _is_safe_path(value):
            raise _refuse("not a same-origin path")
        resolved = public_origin + value
        if origin_of(resolved) != public_origin:
            raise _refuse("not a same-origin path")
        return resolved
    target = origin_of(value)
    if target is None:
        raise _refuse("not a path or an absolute http(s) URL")
    if target not in origins:
        raise _refuse("origin not allowed")
    parts = split_strict(value)
    if parts is None or (parts.path and not _is_safe_path(parts.path)):
        raise _refuse("unsafe path")
    return value
