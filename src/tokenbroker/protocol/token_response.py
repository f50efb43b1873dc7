"""The access token response of the token endpoint (RFC 6749 §5.1, §5.2; §3.3 for ``scope``).

Secrets (``access_token``, ``refresh_token``, ``id_token``) are wrapped in :class:`Secret` and
removed, at every nesting depth, from :attr:`TokenResponse.raw`, which keeps the rest of the
JSON for connect-time variables (Salesforce ``instance_url``, Slack ``team``/``authed_user.id``).

Provider quirks handled here: ``expires_in`` as a string; ``scope`` separated by commas
(GitHub, Slack) or given as a JSON array; GitHub's form-encoded bodies; Slack's
``{"ok": false, "error": ...}``. Slack v2 puts the *user* token in ``authed_user.access_token``;
only the top-level ``access_token`` is used (the nested one is stripped from ``raw``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from tokenbroker.errors import ProtocolError
from tokenbroker.protocol.responses import decode_success
from tokenbroker.secret import Secret

SECRET_FIELDS: Final = frozenset({"access_token", "refresh_token", "id_token"})
MAX_EXPIRES_IN: Final = 10 * 365 * 24 * 3600
_SCOPE_SPLIT_RE: Final = re.compile(r"[ ,]+")


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response. ``scope`` is None when the provider did not say (§5.1)."""

    access_token: Secret
    token_type: str
    expires_at: datetime | None
    refresh_token: Secret | None
    id_token: Secret | None
    scope: tuple[str, ...] | None
    raw: Mapping[str, Any]


def split_scopes(value: object) -> tuple[str, ...] | None:
    """Granted scopes from a space- or comma-separated string, or a JSON array of strings."""
    if isinstance(value, str):
        return tuple(s for s in _SCOPE_SPLIT_RE.split(value) if s)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for item in value for s in _SCOPE_SPLIT_RE.split(item) if s)
    return None


def parse_expires_in(value: object) -> int | None:
    """``expires_in`` as whole seconds; accepts ints, integral floats and digit strings."""
    if value is None or value == "":
        return None
    seconds: int
    if isinstance(value, bool):
        raise ProtocolError("token response 'expires_in' is not a number")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        seconds = int(value.strip())
    else:
        raise ProtocolError("token response 'expires_in' is not a number")
    if not 0 <= seconds <= MAX_EXPIRES_IN:
        raise ProtocolError("token response 'expires_in' is out of range")
    return seconds


def strip_secrets(value: Any) -> Any:
    """A deep copy of JSON ``value`` without any key named in SECRET_FIELDS."""
    if isinstance(value, Mapping):
        return {k: strip_secrets(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def _optional_secret(doc: Mapping[str, Any], name: str) -> Secret | None:
    value = doc.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"token response {name!r} is not a string")
    return Secret(value)


def parse_token_response(
    status: int, content_type: str | None, body: bytes, *, now: datetime
) -> TokenResponse:
    """Parse a token endpoint response; ``now`` (timezone-aware) anchors ``expires_at``.

    Raises ProviderError for an OAuth error (its message holds only the error code),
    ProviderUnavailable for 5xx/429, ProtocolError for anything malformed.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    doc = decode_success(status, content_type, body)
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProtocolError("token response has no access_token")
    token_type = doc.get("token_type", "Bearer")
    if not isinstance(token_type, str) or not token_type:
        raise ProtocolError("token response 'token_type' is not a string")
    expires_in = parse_expires_in(doc.get("expires_in"))
    return TokenResponse(
        access_token=Secret(access_token),
        token_type=token_type,
        expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
        refresh_token=_optional_secret(doc, "refresh_token"),
        id_token=_optional_secret(doc, "id_token"),
        scope=split_scopes(doc.get("scope")),
        raw=MappingProxyType(strip_secrets(doc)),
    )
