"""Decoding of token-endpoint style responses and their errors (RFC 6749 §5.1, §5.2).

Shared by the token (RFC 6749 §5), revocation (RFC 7009 §2.2.1) and device authorization
(RFC 8628 §3.2, §3.5) endpoints. Bodies are JSON objects (§5.1); GitHub's legacy
``application/x-www-form-urlencoded`` form is accepted too. Nothing from the body is ever put
into an exception message except a sanitised OAuth error code (RFC 6749 §5.2 charset).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from tokenbroker.errors import ProtocolError, ProviderError, ProviderUnavailable

MAX_RESPONSE_BYTES: Final = 256 * 1024
MAX_DESCRIPTION_CHARS: Final = 300
# RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E ); we also refuse spaces.
_ERROR_CODE_RE: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,64}")
_JSON_TYPES: Final = frozenset({"application/json", "text/json", "text/javascript", "text/plain"})


def media_type(content_type: str | None) -> str | None:
    """``"application/json; charset=utf-8"`` → ``"application/json"``; None stays None."""
    if content_type is None:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return value or None


def sanitize_error_code(value: object) -> str:
    """The OAuth ``error`` code if it is well-formed, else ``"invalid_error_code"``."""
    if isinstance(value, str) and _ERROR_CODE_RE.fullmatch(value):
        return value
    return "invalid_error_code"


def sanitize_description(value: object) -> str | None:
    """Printable ASCII only, at most MAX_DESCRIPTION_CHARS characters; None if absent."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if 0x20 <= ord(c) < 0x7F)
    return cleaned[:MAX_DESCRIPTION_CHARS] or None


def _decode_json(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _decode_form(text: str) -> dict[str, Any] | None:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    doc: dict[str, Any] = {}
    for name, value in pairs:
        if name in doc:
            return None  # RFC 6749 §3.1: parameters must not repeat
        doc[name] = value
    return doc


def decode_body(status: int, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Decode a response body to a dict, or raise.

    5xx and 429 raise ProviderUnavailable; HTML, non-JSON, non-object or oversize bodies raise
    ProtocolError. OAuth errors are *not* raised here (see :func:`raise_for_oauth_error`).
    """
    if status >= 500 or status == 429:
        raise ProviderUnavailable(f"provider answered HTTP {status}")
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProtocolError(f"provider response is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("provider response is not UTF-8") from None
    kind = media_type(content_type)
    doc: dict[str, Any] | None
    if kind == "application/x-www-form-urlencoded":
        doc = _decode_form(text)
    elif kind is None or kind in _JSON_TYPES or kind.endswith("+json"):
        doc = _decode_json(text)
        if doc is None and kind in (None, "text/plain"):
            doc = _decode_form(text)
    else:
        doc = None
    if doc is None:
        raise ProtocolError(f"provider response (HTTP {status}) is not a JSON object")
    return doc


def oauth_error(doc: Mapping[str, Any]) -> ProviderError | None:
    """A ProviderError for an error document (RFC 6749 §5.2, Slack ``ok: false``), else None."""
    if "error" not in doc and doc.get("ok") is not False:
        return None
    code = sanitize_error_code(doc.get("error"))
    return ProviderError(
        f"provider returned OAuth error {code!r}",
        oauth_error=code,
        description=sanitize_description(doc.get("error_description")),
    )


def raise_for_oauth_error(doc: Mapping[str, Any]) -> None:
    """Raise the document's OAuth error, if it carries one."""
    error = oauth_error(doc)
    if error is not None:
        raise error


def decode_success(status: int, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Decode a body that must be a 2xx success: OAuth errors raise ProviderError."""
    doc = decode_body(status, content_type, body)
    raise_for_oauth_error(doc)
    if not 200 <= status < 300:
        raise ProtocolError(f"provider answered HTTP {status} without an OAuth error")
    return doc
