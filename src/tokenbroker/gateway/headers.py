"""Header allowlists for both directions of the gateway (RFC 9110 §7.6.1; SECURITY.md D5-D8).

Only named headers cross the gateway; everything else is dropped (an allowlist, never a
denylist). Credential, routing and hop-by-hop names are in :data:`NEVER_FORWARDED` and can not be
re-enabled by a provider template's ``forward_headers``: the agent's own ``Authorization`` or
``Cookie`` never goes upstream (MCP token passthrough; RFC 6819 §4.6.7), no header picks the
upstream host (``X-Forwarded-Host``, ``Forwarded``; Portkey CVE-2025-66405), no header switches
the acting user (Box ``As-User``, Dropbox ``Dropbox-API-Select-User``), and every field named by
``Connection`` is removed along with the hop-by-hop fields (RFC 9110 §7.6.1). A request header
value with CR, LF or NUL is refused with :class:`~tokenbroker.errors.InvalidHeader` (RFC 9110
§5.5; CVE-2019-9740); such a response header is dropped.

``extra_allowed`` sets are expected lowercased; build them once per provider with
:func:`extra_allowed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from tokenbroker.errors import InvalidHeader

Header = tuple[str, str]
_Row = tuple[str, str, str]

# RFC 9110 §7.6.1 (and RFC 9112 §9.6, RFC 7230 Appendix A for Proxy-Connection).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

REQUEST_ALLOWED: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-encoding",
        "content-language",
        "content-type",
        "idempotency-key",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "prefer",
        "range",
        "user-agent",
        "x-request-id",
    }
)

RESPONSE_ALLOWED: Final = frozenset(
    {
        "accept-ranges",
        "cache-control",
        "content-encoding",
        "content-language",
        "content-length",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "link",
        "location",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "vary",
        "x-request-id",
    }
)
RESPONSE_ALLOWED_PREFIXES: Final = ("x-ratelimit-",)

# Names no template can allow in the request direction.
NEVER_FORWARDED: Final = HOP_BY_HOP | frozenset(
    {
        # Credentials: only the broker-injected one goes upstream (D7).
        "authorization",
        "proxy-authorization",
        "cookie",
        "dpop",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "private-token",
        "job-token",
        "x-goog-api-key",
        "x-amz-security-token",
        # Routing: the upstream comes from configuration only (D5).
        "host",
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        # Acting as another user than the connection's.
        "as-user",
        "dropbox-api-select-user",
        "dropbox-api-select-admin",
        # Framing is the gateway's: it sets Content-Length (or chunks) from the body it sends.
        "content-length",
        # The gateway owns response-side fields.
        "set-cookie",
        "www-authenticate",
        "proxy-authenticate",
    }
)
NEVER_FORWARDED_PREFIXES: Final = ("x-forwarded-", "proxy-")

# Names never returned to the agent, whatever the template says.
NEVER_RETURNED: Final = HOP_BY_HOP | frozenset({"www-authenticate", "proxy-authenticate"})

# RFC 9110 §5.6.2 token.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_RE: Final = re.compile("[\r\n\x00]")
_EMPTY: Final[frozenset[str]] = frozenset()


def extra_allowed(forward_headers: Iterable[str]) -> frozenset[str]:
    """Lowercase a template's ``forward_headers``, minus anything in :data:`NEVER_FORWARDED`."""
    names = {name.lower() for name in forward_headers}
    return frozenset(name for name in names if not _never_forwarded(name))


def _never_forwarded(name: str) -> bool:
    return name in NEVER_FORWARDED or name.startswith(NEVER_FORWARDED_PREFIXES)


def _scan(headers: Iterable[Header], *, strict: bool) -> tuple[list[_Row], frozenset[str]]:
    """Lowercase names once and collect the fields named by ``Connection`` (RFC 9110 §7.6.1).

    With ``strict`` a value holding CR, LF or NUL raises; otherwise that header is skipped.
    """
    rows: list[_Row] = []
    named: set[str] = set()
    for name, value in headers:
        if _BAD_VALUE_RE.search(value) is not None:
            if strict:
                raise InvalidHeader("a header value contains CR, LF or NUL")
            continue
        lower = name.lower()
        if lower == "connection":
            named.update(part.strip().lower() for part in value.split(","))
        rows.append((lower, name, value))
    return rows, frozenset(named) if named else _EMPTY


def filter_request_headers(
    headers: Iterable[Header], extra_allowed: frozenset[str] = _EMPTY
) -> list[Header]:
    """Return the agent's headers that may go upstream, in order; raise on CR/LF/NUL values."""
    rows, dropped = _scan(headers, strict=True)
    kept: list[Header] = []
    for lower, name, value in rows:
        if lower not in REQUEST_ALLOWED and lower not in extra_allowed:
            continue
        if lower in dropped or _never_forwarded(lower):
            continue
        if _TOKEN_RE.fullmatch(name) is None:
            raise InvalidHeader("a request header name is not an RFC 9110 token")
        kept.append((name, value))
    return kept


def filter_response_headers(
    headers: Iterable[Header], extra_allowed: frozenset[str] = _EMPTY
) -> list[Header]:
    """Return the upstream's headers that may go back to the agent, in order.

    ``Set-Cookie`` passes only if listed in ``extra_allowed``; hop-by-hop fields, fields named by
    ``Connection``, ``WWW-Authenticate`` (the gateway sets its own) and values with CR, LF or NUL
    are always dropped.
    """
    rows, dropped = _scan(headers, strict=False)
    kept: list[Header] = []
    for lower, name, value in rows:
        if not (
            lower in RESPONSE_ALLOWED
            or lower in extra_allowed
            or lower.startswith(RESPONSE_ALLOWED_PREFIXES)
        ):
            continue
        if lower in NEVER_RETURNED or lower in dropped or _TOKEN_RE.fullmatch(name) is None:
            continue
        kept.append((name, value))
    return kept
