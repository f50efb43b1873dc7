"""The authorization code grant, transport-agnostic (RFC 6749 §4.1, §6; RFC 7636; RFC 8707).

- :func:`authorization_url` builds the authorization request (§4.1.1) with PKCE S256
  (RFC 7636 §4.3), ``state`` (§10.12), an optional OIDC ``nonce`` and RFC 8707 ``resource``.
- :func:`parse_callback` reads the authorization response (§4.1.2, §4.1.2.1, RFC 9207 ``iss``);
  checking ``state`` and ``iss`` is the caller's job (see :mod:`.rfc9207`).
- :func:`authorization_code_request` and :func:`refresh_token_request` build token requests
  (§4.1.3, §6); :func:`parse_token_response` (re-exported) reads the answer (§5.1, §5.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenbroker.errors import ConfigError, ProtocolError, ProviderError
from tokenbroker.protocol.request import ClientAuth, PreparedRequest, form_post
from tokenbroker.protocol.responses import sanitize_description, sanitize_error_code
from tokenbroker.protocol.token_response import TokenResponse, parse_token_response
from tokenbroker.secret import Secret

__all__ = [
    "AuthorizationRequest",
    "CallbackResult",
    "ClientAuth",
    "PreparedRequest",
    "TokenResponse",
    "authorization_code_request",
    "authorization_url",
    "parse_callback",
    "parse_token_response",
    "refresh_token_request",
]

# Parameters that only the broker may set; neither the endpoint's query nor extra params may.
RESERVED_PARAMS: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "resource",
    }
)


@dataclass(frozen=True)
class AuthorizationRequest:
    """Everything needed to send the user agent to the authorization endpoint (§4.1.1)."""

    endpoint: str
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    nonce: str | None = None
    resource: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    prompt: str | None = None


def authorization_url(req: AuthorizationRequest) -> str:
    """The authorization request URL; the endpoint's own query is kept (§3.1).

    Raises ConfigError if the endpoint has a fragment (§3.1) or if the endpoint query or
    ``extra`` tries to set a reserved parameter (``state``, ``redirect_uri``, PKCE...).
    ``prompt`` set on the request wins over a ``prompt`` in ``extra``.
    """
    parts = urlsplit(req.endpoint)
    if parts.fragment or "#" in req.endpoint:
        raise ConfigError("authorization endpoint must not contain a fragment (RFC 6749 §3.1)")
    existing = parse_qsl(parts.query, keep_blank_values=True)
    for name in [n for n, _ in existing] + list(req.extra):
        if name in RESERVED_PARAMS:
            raise ConfigError(f"authorization parameter {name!r} is reserved for the broker")
    params: list[tuple[str, str]] = list(existing)
    params += [(k, v) for k, v in req.extra.items() if not (k == "prompt" and req.prompt)]
    params += [
        ("response_type", "code"),
        ("client_id", req.client_id),
        ("redirect_uri", req.redirect_uri),
        ("state", req.state),
        ("code_challenge", req.code_challenge),
        ("code_challenge_method", "S256"),
    ]
    if req.scopes:
        params.append(("scope", req.scope_separator.join(req.scopes)))
    if req.nonce is not None:
        params.append(("nonce", req.nonce))
    if req.resource is not None:
        params.append(("resource", req.resource))
    if req.prompt:
        params.append(("prompt", req.prompt))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


@dataclass(frozen=True)
class CallbackResult:
    """The authorization response: a ``code`` (a Secret) or an ``error`` (§4.1.2, §4.1.2.1)."""

    code: Secret | None
    state: str | None
    iss: str | None
    error: str | None = None
    error_description: str | None = None
    error_uri: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def to_provider_error(self) -> ProviderError:
        """The error response as a ProviderError (only for ``is_error`` results)."""
        code = self.error or "invalid_error_code"
        return ProviderError(
            f"authorization failed with OAuth error {code!r}",
            oauth_error=code,
            description=self.error_description,
        )


def parse_callback(query: Mapping[str, str]) -> CallbackResult:
    """Parse the redirect's query parameters. Does not validate ``state`` or ``iss``.

    Callers must refuse repeated parameters (§3.1) before building ``query``. Raises
    ProtocolError if there is neither a ``code`` nor an ``error``.
    """
    state = query.get("state")
    iss = query.get("iss")  # an empty "iss" is present (and will not match)
    if "error" in query:
        return CallbackResult(
            code=None,
            state=state,
            iss=iss,
            error=sanitize_error_code(query["error"]),
            error_description=sanitize_description(query.get("error_description")),
            error_uri=sanitize_description(query.get("error_uri")),
        )
    code = query.get("code")
    if not code:
        raise ProtocolError("authorization response has neither 'code' nor 'error'")
    return CallbackResult(code=Secret(code), state=state, iss=iss)


def authorization_code_request(
    token_endpoint: str,
    *,
    code: Secret,
    redirect_uri: str,
    code_verifier: Secret,
    auth: ClientAuth,
    resource: str | None = None,
) -> PreparedRequest:
    """The access token request for the code grant (§4.1.3, RFC 7636 §4.5, RFC 8707 §2.2)."""
    params = [
        ("grant_type", "authorization_code"),
        ("code", code.reveal()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier.reveal()),
    ]
    if resource is not None:
        params.append(("resource", resource))
    return form_post(token_endpoint, params, auth)


def refresh_token_request(
    token_endpoint: str,
    *,
    refresh_token: Secret,
    auth: ClientAuth,
    scopes: Sequence[str] | None = None,
    scope_separator: str = " ",
    resource: str | None = None,
) -> PreparedRequest:
    """The refresh request (§6); ``scopes`` None omits ``scope`` (keep the original grant)."""
    params = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.reveal())]
    if scopes:
        params.append(("scope", scope_separator.join(scopes)))
    if resource is not None:
        params.append(("resource", resource))
    return form_post(token_endpoint, params, auth)
