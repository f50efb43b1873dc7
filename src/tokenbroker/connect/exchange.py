"""From an authorization code to a verified provider grant: tokens, account and variables.

Token request per RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5); the ID token is
validated (OIDC Core §3.1.3.7: signature from JWKS, iss, aud, exp, nonce) before anything is
kept; connect-time variables are checked against the template's host pattern.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tokenbroker.errors import NoRefreshToken, ProtocolError
from tokenbroker.protocol.oidc import header_kid, validate_id_token
from tokenbroker.protocol.request import ClientAuth, PreparedRequest
from tokenbroker.protocol.rfc6749 import authorization_code_request
from tokenbroker.protocol.token_response import (
    TokenResponse,
    parse_token_response,
    strip_secrets,
)
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.secret import Secret
from tokenbroker.services import Services


@dataclass(frozen=True)
class ProviderGrant:
    """What a successful authorization yields, before it is stored anywhere."""

    tokens: TokenResponse
    scopes: tuple[str, ...]
    account_id: str
    account_label: str | None
    connect_vars: Mapping[str, str]


def client_auth(spec: ProviderSpec) -> ClientAuth:
    return ClientAuth(
        client_id=spec.client_id,
        method=spec.token_endpoint_auth_method if spec.client_secret else "none",
        client_secret=spec.client_secret,
    )


async def exchange_code(
    svc: Services,
    spec: ProviderSpec,
    *,
    code: Secret,
    verifier: Secret,
    nonce: str | None,
    requested_scopes: tuple[str, ...],
    has_stored_refresh_token: bool,
) -> ProviderGrant:
    request = authorization_code_request(
        spec.token_endpoint,
        code=code,
        redirect_uri=spec.redirect_uri(svc.settings.public_url),
        code_verifier=verifier,
        auth=client_auth(spec),
        resource=spec.resource,
    )
    raw = await svc.transport.send(request, provider=spec.name)
    tokens = parse_tokens(spec, raw.status, raw.content_type, raw.body, svc.clock.now())
    return await check_tokens(
        svc,
        spec,
        tokens,
        nonce=nonce,
        requested_scopes=requested_scopes,
        has_stored_refresh_token=has_stored_refresh_token,
    )


async def check_tokens(
    svc: Services,
    spec: ProviderSpec,
    tokens: TokenResponse,
    *,
    nonce: str | None,
    requested_scopes: tuple[str, ...],
    has_stored_refresh_token: bool,
) -> ProviderGrant:
    """Everything checked before a token response is kept, however it was obtained (code or
    device grant): the ID token, the refresh token's presence, the account, connect variables."""
    now = svc.clock.now()
    claims: Mapping[str, Any] = {}
    if spec.uses_openid and spec.issuer is not None:
        claims = await _validated_claims(svc, spec, tokens, nonce, now)
    elif spec.account.source == "id_token":
        if spec.uses_openid:
            raise ProtocolError(f"provider {spec.name!r} has no issuer to check its ID tokens")
    else:
        # No single issuer to check against (e.g. Entra "common"): the ID token is not used
        # for anything, so it is not kept either.
        tokens = replace(tokens, id_token=None)
    if (
        spec.tokens_expire
        and tokens.expires_at is not None
        and tokens.refresh_token is None
        and not has_stored_refresh_token
    ):
        raise NoRefreshToken(
            f"provider {spec.name!r} returned an expiring access token without a refresh token. "
            "Likely cause: the account had already consented and the provider only issues a "
            "refresh token on first consent (ask for prompt=consent, or offline access / "
            "offline_access in the scopes), or the client is not allowed offline access."
        )
    account_id, label = await _account(svc, spec, tokens, claims)
    return ProviderGrant(
        tokens=tokens,
        scopes=tokens.scope if tokens.scope is not None else requested_scopes,
        account_id=account_id,
        account_label=label,
        connect_vars=extract_connect_vars(spec, tokens.raw),
    )


def parse_tokens(
    spec: ProviderSpec, status: int, content_type: str | None, body: bytes, now: datetime
) -> TokenResponse:
    """Parse a token response; ``token_response_path`` picks a nested token (Slack user tokens).

    Errors are read at the top level first; ``raw`` stays the whole (secret-free) response, so
    account ids and connect-time variables can come from anywhere in it.
    """
    path = spec.token_response_path
    if not path or status != 200:
        return parse_token_response(status, content_type, body, now=now)
    try:
        doc = json.loads(body)
    except ValueError:
        return parse_token_response(status, content_type, body, now=now)
    nested = dotted(doc, path) if isinstance(doc, dict) else None
    if not isinstance(nested, dict) or "error" in doc or doc.get("ok") is False:
        return parse_token_response(status, content_type, body, now=now)
    tokens = parse_token_response(status, "application/json", json.dumps(nested).encode(), now=now)
    return replace(tokens, raw=strip_secrets(doc))


async def _validated_claims(
    svc: Services, spec: ProviderSpec, tokens: TokenResponse, nonce: str | None, now: datetime
) -> Mapping[str, Any]:
    if tokens.id_token is None:
        raise ProtocolError(f"provider {spec.name!r} returned no ID token for an openid request")
    if spec.jwks_uri is None or spec.issuer is None:
        raise ProtocolError(f"provider {spec.name!r} has no issuer or jwks_uri to check ID tokens")
    id_token = tokens.id_token.reveal()
    jwks = await svc.jwks.get(spec.jwks_uri, provider=spec.name, kid=header_kid(id_token))
    claims = validate_id_token(
        id_token,
        jwks=jwks,
        issuer=spec.issuer,
        client_id=spec.client_id,
        nonce=nonce,
        now=int(now.timestamp()),
        allowed_algs=spec.id_token_signing_alg_values_supported,
    )
    return claims.raw


async def _account(
    svc: Services, spec: ProviderSpec, tokens: TokenResponse, claims: Mapping[str, Any]
) -> tuple[str, str | None]:
    source = spec.account
    doc: Mapping[str, Any]
    if source.source == "id_token":
        doc = claims
    elif source.source == "token_response":
        doc = tokens.raw
    else:
        url = source.userinfo_url or spec.userinfo_endpoint
        if url is None:
            raise ProtocolError(f"provider {spec.name!r} has no userinfo URL for the account id")
        bearer = {"Authorization": f"Bearer {tokens.access_token.reveal()}"}
        if spec.account_graphql_query:
            query = json.dumps({"query": spec.account_graphql_query})
            headers = (*bearer.items(), ("Content-Type", "application/json"))
            graphql = PreparedRequest(url=url, headers=headers, body=query)
            resp = await svc.transport.send(graphql, provider=spec.name)
        else:
            resp = await svc.transport.get(url, provider=spec.name, headers=bearer)
        if resp.status != 200:
            raise ProtocolError(f"provider {spec.name!r} userinfo answered {resp.status}")
        try:
            loaded = json.loads(resp.body)
        except ValueError:
            raise ProtocolError(f"provider {spec.name!r} userinfo is not JSON") from None
        doc = loaded if isinstance(loaded, dict) else {}
    account_id = dotted(doc, source.id_path)
    if account_id is None or account_id == "":
        raise ProtocolError(
            f"provider {spec.name!r} did not return the account id "
            f"({source.source}:{source.id_path})"
        )
    label = dotted(doc, source.label_path) if source.label_path else None
    return str(account_id), None if label is None else str(label)


def dotted(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def extract_connect_vars(spec: ProviderSpec, raw: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for var in spec.connect_vars:
        value = dotted(raw, var.source)
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"provider {spec.name!r} did not return {var.source!r}")
        out[var.name] = check_var_host(spec, var.name, value, var.host_pattern)
    return out


def check_var_host(spec: ProviderSpec, name: str, value: str, pattern: str) -> str:
    parts = urlsplit(value if "://" in value else f"https://{value}")
    host = (parts.hostname or "").lower()
    ok_scheme = parts.scheme == "https" or (spec.allow_insecure_loopback and parts.scheme == "http")
    if (
        not ok_scheme
        or parts.username is not None
        or parts.password is not None
        or not host
        or not fnmatch.fnmatchcase(host, pattern.lower())
    ):
        raise ProtocolError(f"provider {spec.name!r} returned {name} on a host outside {pattern!r}")
    return value
