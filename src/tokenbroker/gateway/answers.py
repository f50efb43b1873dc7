"""The gateway's answers of its own: one JSON shape and a ``TokenBroker-Error`` header.

``{"error": CODE, "message": TEXT, ...}`` lets an agent tell the broker's refusals from the
upstream's answers (which never carry that header). 401 is used only for ``invalid_token``.
"""

from __future__ import annotations

import json
from typing import Any

from tokenbroker.errors import (
    AuthorizationRequired,
    InsufficientGrant,
    RateLimited,
    TokenBrokerError,
)

Header = tuple[str, str]


def error_answer(exc: TokenBrokerError, request_id: str) -> tuple[int, list[Header], bytes]:
    """Status, headers and JSON body of the gateway's refusal ``exc``."""
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("TokenBroker-Error", exc.code),
        ("X-Request-ID", request_id),
        ("Cache-Control", "no-store"),
    ]
    if isinstance(exc, AuthorizationRequired):
        body["authorization_url"] = exc.authorization_url
        body["reason"] = exc.reason
    elif isinstance(exc, InsufficientGrant):
        body["reason"] = exc.reason
        body["missing"] = {"operation": exc.operation, "scopes": list(exc.scopes)}
        if exc.consent_url:
            body["consent_url"] = exc.consent_url
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimited) or isinstance(retry_after, int):
        headers.append(("Retry-After", str(max(1, int(retry_after or 1)))))
    if exc.status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="tokenbroker", error="invalid_token"'))
    status = exc.status if 400 <= exc.status < 600 else 500
    return status, headers, json.dumps(body, separators=(",", ":")).encode()
