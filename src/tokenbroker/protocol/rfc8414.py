"""Authorization server metadata and OpenID Connect discovery (RFC 8414 §2, §3, §3.3; OIDC
Discovery 1.0 §3, §4).

:func:`metadata_urls` lists the well-known URLs to try, in order. :func:`validate_metadata`
checks a fetched document: ``issuer`` must equal the expected issuer exactly (RFC 8414 §3.3,
OIDC Discovery §4.3: no normalisation, a trailing slash is a mismatch), every endpoint must
pass :func:`~tokenbroker.protocol.endpoints.check_endpoint_url`, and list members must be lists
of strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from tokenbroker.errors import ConfigError, IssuerMismatch, ProtocolError
from tokenbroker.protocol.endpoints import check_endpoint_url

OIDC_WELL_KNOWN: Final = "/.well-known/openid-configuration"
OAUTH_WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"

_OPTIONAL_ENDPOINTS: Final = (
    "jwks_uri",
    "revocation_endpoint",
    "userinfo_endpoint",
    "device_authorization_endpoint",
)


@dataclass(frozen=True)
class ServerMetadata:
    """The members of a validated metadata document the broker uses (RFC 8414 §2)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    id_token_signing_alg_values_supported: tuple[str, ...] | None = None
    scopes_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None


def metadata_urls(issuer: str, *, allow_insecure_loopback: bool = False) -> list[str]:
    """Well-known metadata URLs for ``issuer``, most likely first.

    Without a path: ``{issuer}/.well-known/openid-configuration`` then RFC 8414's
    ``/.well-known/oauth-authorization-server``. With a path (e.g. ``/tenant``), also the
    RFC 8414 §3.1 form that inserts the well-known segment between host and path, and the
    OIDC variant of it. A terminating ``/`` of the path is removed first (both specs).
    """
    check_endpoint_url(issuer, allow_insecure_loopback=allow_insecure_loopback, what="issuer")
    parts = urlsplit(issuer)
    if parts.query:
        raise ConfigError("issuer must not contain a query (RFC 8414 §2)")
    path = parts.path.rstrip("/")

    def at(new_path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))

    if not path:
        return [at(OIDC_WELL_KNOWN), at(OAUTH_WELL_KNOWN)]
    return [
        at(path + OIDC_WELL_KNOWN),
        at(OAUTH_WELL_KNOWN + path),
        at(OIDC_WELL_KNOWN + path),
    ]


def _string_list(doc: Mapping[str, Any], name: str, provider: str) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"provider {provider!r} metadata {name!r} is not a list of strings")
    return tuple(value)


def _endpoint(
    doc: Mapping[str, Any], name: str, *, provider: str, allow_insecure_loopback: bool
) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"provider {provider!r} metadata {name!r} is not a string")
    return check_endpoint_url(
        value, allow_insecure_loopback=allow_insecure_loopback, what=f"provider {provider!r} {name}"
    )


def validate_metadata(
    doc: Mapping[str, Any], *, expected_issuer: str, allow_insecure_loopback: bool, provider: str
) -> ServerMetadata:
    """Validate a metadata document fetched for ``expected_issuer``.

    Raises IssuerMismatch if ``issuer`` differs in any way, ConfigError for an unsafe endpoint
    URL, ProtocolError for missing or mistyped members.
    """
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or issuer != expected_issuer:
        raise IssuerMismatch(
            f"provider {provider!r} metadata 'issuer' does not equal the expected issuer "
            "(RFC 8414 §3.3)"
        )
    endpoints = {
        name: _endpoint(
            doc, name, provider=provider, allow_insecure_loopback=allow_insecure_loopback
        )
        for name in ("authorization_endpoint", "token_endpoint", *_OPTIONAL_ENDPOINTS)
    }
    authorization_endpoint = endpoints.pop("authorization_endpoint")
    token_endpoint = endpoints.pop("token_endpoint")
    if authorization_endpoint is None or token_endpoint is None:
        raise ProtocolError(
            f"provider {provider!r} metadata lacks authorization_endpoint or token_endpoint"
        )
    iss_supported = doc.get("authorization_response_iss_parameter_supported", False)
    if not isinstance(iss_supported, bool):
        raise ProtocolError(
            f"provider {provider!r} metadata "
            "'authorization_response_iss_parameter_supported' is not a boolean"
        )
    return ServerMetadata(
        issuer=issuer,
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        jwks_uri=endpoints["jwks_uri"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        userinfo_endpoint=endpoints["userinfo_endpoint"],
        device_authorization_endpoint=endpoints["device_authorization_endpoint"],
        code_challenge_methods_supported=_string_list(
            doc, "code_challenge_methods_supported", provider
        ),
        authorization_response_iss_parameter_supported=iss_supported,
        id_token_signing_alg_values_supported=_string_list(
            doc, "id_token_signing_alg_values_supported", provider
        ),
        scopes_supported=_string_list(doc, "scopes_supported", provider),
        token_endpoint_auth_methods_supported=_string_list(
            doc, "token_endpoint_auth_methods_supported", provider
        ),
    )
