"""The broker's own answers, as exceptions.

The gateway marks every answer of its own with a ``TokenBroker-Error: CODE`` header and a JSON
body ``{"error": CODE, "message": TEXT, ...}``. An answer without that header is the upstream
API's, whatever its status, and is never turned into an exception here.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from datetime import datetime
from typing import Any

import httpx

ERROR_HEADER = "TokenBroker-Error"


class BrokerError(Exception):
    """An answer of the broker itself (not of the upstream API)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status})"


class InvalidToken(BrokerError):
    """401 ``invalid_token``: the agent session token is missing, wrong, expired or revoked."""


class AuthorizationRequired(BrokerError):
    """403 ``authorization_required``: hand ``authorization_url`` to the user to connect."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        retry_after: int | None = None,
        authorization_url: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            code, message, status=status, request_id=request_id, retry_after=retry_after
        )
        self.authorization_url = authorization_url
        self.reason = reason


class InsufficientGrant(BrokerError):
    """403 ``insufficient_grant``: the grant does not cover this request; says what would."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        retry_after: int | None = None,
        reason: str | None = None,
        missing_operation: str | None = None,
        missing_scopes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            code, message, status=status, request_id=request_id, retry_after=retry_after
        )
        self.reason = reason
        self.missing_operation = missing_operation
        self.missing_scopes = missing_scopes


class RateLimited(BrokerError):
    """429 ``rate_limited``: wait ``retry_after`` seconds."""


class ProviderUnavailable(BrokerError):
    """503 ``provider_unavailable``: the provider is unreachable; ``retry_after`` may say when."""


class BrokerUnavailable(BrokerError):
    """Any other 5xx of the broker's own (upstream_error, store_unavailable, ...)."""


_BY_CODE: dict[str, type[BrokerError]] = {
    "invalid_token": InvalidToken,
    "authorization_required": AuthorizationRequired,
    "insufficient_grant": InsufficientGrant,
    "rate_limited": RateLimited,
    "provider_unavailable": ProviderUnavailable,
    "upstream_error": BrokerUnavailable,
    "upstream_timeout": BrokerUnavailable,
    "provider_misconfigured": BrokerUnavailable,
    "store_unavailable": BrokerUnavailable,
    "credential_corrupt": BrokerUnavailable,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> int | None:
    """``Retry-After`` as whole seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        when: datetime = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return max(0, math.ceil(delay))


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = json.loads(response.content)
    except (ValueError, httpx.ResponseNotRead):
        return {}
    return doc if isinstance(doc, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def error_from_response(response: httpx.Response) -> BrokerError | None:
    """The typed error for a broker answer, or ``None`` for the upstream's own answer."""
    code = response.headers.get(ERROR_HEADER)
    if code is None:
        return None
    code = code.strip() or "unknown_error"
    body = _body(response)
    message = _text(body.get("message")) or response.reason_phrase or code
    common: dict[str, Any] = {
        "status": response.status_code,
        "request_id": response.headers.get("X-Request-ID"),
        "retry_after": parse_retry_after(response.headers.get("Retry-After")),
    }
    cls = _BY_CODE.get(code, BrokerError)
    if cls is AuthorizationRequired:
        return AuthorizationRequired(
            code,
            message,
            authorization_url=_text(body.get("authorization_url")),
            reason=_text(body.get("reason")),
            **common,
        )
    if cls is InsufficientGrant:
        missing = body.get("missing")
        missing = missing if isinstance(missing, dict) else {}
        scopes = missing.get("scopes")
        return InsufficientGrant(
            code,
            message,
            reason=_text(body.get("reason")),
            missing_operation=_text(missing.get("operation")),
            missing_scopes=tuple(s for s in scopes if isinstance(s, str))
            if isinstance(scopes, list)
            else (),
            **common,
        )
    return cls(code, message, **common)
