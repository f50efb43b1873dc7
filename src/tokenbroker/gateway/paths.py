"""Validate the raw path an agent sends after ``/proxy/{provider}`` (SECURITY.md D4, D6).

The path is checked as sent (still percent-encoded) and, when accepted, returned byte for byte
so it can be appended to the provider's API base. Nothing is decoded on the way out: ``%2F``
inside a segment stays ``%2F`` (GitLab project ids need it) and every other escape is left for
the upstream to decode. Refused with :class:`~tokenbroker.errors.InvalidPath` (400
``invalid_path``):

* any character outside RFC 3986 §3.3 ``pchar`` and ``/`` (raw space, ``\\``, ``#``, ``?``,
  controls, non-ASCII), a malformed escape (``%zz``, ``%2``), or more than 4096 characters;
* an empty segment (``//`` anywhere): ``//host`` would become an authority (RFC 3986 §4.2,
  basecamp/upright #126);
* a dot segment (RFC 3986 §5.2.4) raw or encoded in any case, at any depth of re-encoding
  (``..``, ``%2e%2E``, ``%252e%252e``), also before a ``;`` parameter (``..;``, Tomcat), also
  between encoded slashes (``a%2F..%2Fb``) and after Unicode NFKC folding (``%EF%BC%8E``);
* an encoded backslash, control character or line break (``%5c``, ``%0d%0a``, ``%00``,
  ``%09``, ``%C2%85``), invalid or overlong UTF-8 after decoding (``%C0%AE``);
* ``:`` or ``@`` in the first segment, raw or encoded: a scheme (``http:``) or userinfo
  (``@evil``) must never reach a URL joiner. After the first segment both are ordinary
  ``pchar`` (Google ``/v1/files/x:batchGet``, ``/users/a@b.example``) and are kept.

A trailing ``/`` is kept (``/items/``); ``""`` and ``"/"`` are accepted as the base itself.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final
from urllib.parse import unquote_to_bytes

from tokenbroker.errors import InvalidPath

MAX_PATH_LENGTH: Final = 4096
MAX_QUERY_LENGTH: Final = 8192
# Legitimate paths need at most two rounds (a literal "%25"); deeper nesting is an attack.
_MAX_DECODE_ROUNDS: Final = 4

_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
# RFC 3986 §3.3 path-abempty without empty segments, plus one optional trailing "/".
_PATH_RE: Final = re.compile(rf"(?:/{_PCHAR}+)*/?")
# RFC 3986 §3.4 query.
_QUERY_RE: Final = re.compile(rf"(?:{_PCHAR}|[/?])*")
# C0, DEL, C1 (incl. NEL U+0085), backslash and the Unicode line/paragraph separators.
_DECODED_BAD_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029]")


def _refuse(reason: str) -> InvalidPath:
    # The path itself is never echoed: it may carry control characters or secrets.
    return InvalidPath(f"invalid proxy path: {reason}")


def _deep_decode(segment: str) -> str:
    """Percent-decode until stable, the way a chain of lenient decoders would see it."""
    current = segment
    for _ in range(_MAX_DECODE_ROUNDS):
        if "%" not in current:
            return current
        try:
            decoded = unquote_to_bytes(current).decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("escape decodes to invalid UTF-8") from None
        if decoded == current:
            return current
        current = decoded
    if "%" in current and unquote_to_bytes(current) != current.encode("utf-8"):
        raise _refuse("too many levels of percent-encoding")
    return current


def _is_dot_like(part: str) -> bool:
    """True for "", ".", "..", "...", " . ": names servers may fold into a dot segment."""
    head = part.split(";", 1)[0]
    return not head.strip(". ")


def _check_decoded(decoded: str, *, first: bool, folded: bool = False) -> None:
    if _DECODED_BAD_RE.search(decoded) is not None:
        raise _refuse("escape decodes to a control character or backslash")
    if "/" in decoded:
        if any(_is_dot_like(part) for part in decoded.split("/")):
            raise _refuse("encoded slash next to an empty or dot segment")
    elif _is_dot_like(decoded):
        raise _refuse("dot or empty segment")
    if first and (":" in decoded or "@" in decoded):
        raise _refuse("':' or '@' in the first segment")
    if not folded and not decoded.isascii():
        normal = unicodedata.normalize("NFKC", decoded)
        if normal != decoded:
            _check_decoded(normal, first=first, folded=True)


def normalize_path(raw_path: str) -> str:
    """Return ``raw_path`` unchanged if it is safe to append to a provider base, else raise."""
    if len(raw_path) > MAX_PATH_LENGTH:
        raise _refuse("too long")
    if raw_path in ("", "/"):
        return raw_path
    if _PATH_RE.fullmatch(raw_path) is None:
        if not raw_path.startswith("/"):
            raise _refuse("must start with '/'")
        if "//" in raw_path:
            raise _refuse("empty segment")
        raise _refuse("character not allowed or malformed percent-escape")
    end = len(raw_path) - 1 if raw_path.endswith("/") else len(raw_path)
    first = True
    for segment in raw_path[1:end].split("/"):
        decoded = _deep_decode(segment) if "%" in segment else segment
        _check_decoded(decoded, first=first)
        first = False
    return raw_path


def split_query(raw_target: str) -> tuple[str, str]:
    """Split a raw request target into ``(path, query)`` at the first ``?``; check the query.

    The query is kept as sent (its escapes are the upstream's to decode: an encoded ``%0d%0a``
    in a value cannot split a header), but raw characters outside RFC 3986 §3.4 (controls,
    space, ``#``, non-ASCII) and malformed escapes are refused. The path part is returned
    unchecked: pass it to :func:`normalize_path`.
    """
    path, sep, query = raw_target.partition("?")
    if sep and (len(query) > MAX_QUERY_LENGTH or _QUERY_RE.fullmatch(query) is None):
        raise InvalidPath("invalid proxy query: character not allowed or malformed escape")
    return path, query
