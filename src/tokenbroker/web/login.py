"""Signing in to the broker's pages: an OIDC code flow (PKCE S256 + nonce) with the login
provider of the tenant (``[login]`` / ``[tenants.NAME.login]``). Nothing of the provider's
answer is stored but the user id, a verified email and the admin flag.

The browser holds one random secret (an HttpOnly cookie scoped to the callback); the PKCE
verifier and the nonce are derived from it, the row keeps only hashes of it and of ``state``.
The endpoints come from discovery (:class:`ProviderRegistry`), the checks from
:mod:`tokenbroker.protocol` (RFC 6749 §4.1, RFC 7636, RFC 9207, OIDC Core §3.1.3.7).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenbroker.config import LoginSettings, ProviderSection
from tokenbroker.connect.exchange import dotted
from tokenbroker.connect.sessions import check_user_id
from tokenbroker.errors import InvalidState, ProtocolError, ProviderError, TokenBrokerError
from tokenbroker.ids import digest
from tokenbroker.protocol.oidc import header_kid, validate_id_token
from tokenbroker.protocol.request import ClientAuth
from tokenbroker.protocol.rfc6749 import (
    AuthorizationRequest,
    authorization_code_request,
    authorization_url,
    parse_callback,
    parse_token_response,
)
from tokenbroker.protocol.rfc7636 import require_s256, s256_challenge
from tokenbroker.protocol.rfc9207 import check_callback_issuer
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.providers.registry import ProviderRegistry
from tokenbroker.secret import Secret
from tokenbroker.services import Services
from tokenbroker.web import store

CALLBACK_PATH = "/login/callback"


class SignInFailed(TokenBrokerError):
    code = "sign_in_failed"
    status = 400


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    user_id: str
    email: str | None
    is_admin: bool
    next_path: str | None


def _registry_name(tenant_id: str) -> str:
    return "login-" + re.sub(r"[^A-Za-z0-9_-]", "_", tenant_id)


class LoginProviders:
    """The login provider of each tenant that has one, discovered on first use."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc
        self._names: dict[str, str] = {}
        sections: dict[str, ProviderSection] = {}
        for tenant_id, tenant in svc.settings.tenants.items():
            if tenant.login is None:
                continue
            name = self._names[tenant_id] = _registry_name(tenant_id)
            sections[name] = ProviderSection(
                name, _section(tenant.login), tenant.login.client_secret
            )
        self._registry = ProviderRegistry(sections, svc.transport)

    def settings(self, tenant_id: str) -> LoginSettings | None:
        tenant = self._svc.settings.tenants.get(tenant_id)
        return None if tenant is None else tenant.login

    async def spec(self, tenant_id: str) -> ProviderSpec:
        return await self._registry.get(self._names[tenant_id])

    def redirect_uri(self) -> str:
        return self._svc.settings.public_url + CALLBACK_PATH

    async def begin(self, tenant_id: str, next_path: str | None) -> tuple[str, str]:
        """(authorization URL, browser secret for the login cookie)."""
        spec = await self.spec(tenant_id)
        require_s256(spec.code_challenge_methods_supported, spec.name)
        secret, state = await store.start_login(self._svc, tenant_id, next_path)
        location = authorization_url(
            AuthorizationRequest(
                endpoint=spec.authorization_endpoint,
                client_id=spec.client_id,
                redirect_uri=self.redirect_uri(),
                state=state,
                code_challenge=s256_challenge(store.derive(secret, "pkce")),
                scopes=spec.scopes,
                nonce=store.derive(secret, "nonce"),
            )
        )
        return location, secret

    async def finish(self, query: Mapping[str, str], cookie: str | None) -> Identity:
        result = parse_callback(query)
        if not result.state:
            raise InvalidState("the sign-in answer carries no state")
        pending = await store.take_login(self._svc, result.state)
        if pending is None:
            raise InvalidState("this sign-in was not started here, or was already used")
        if not cookie or not hmac.compare_digest(digest(cookie), pending.token_hash):
            raise InvalidState("this sign-in was started in another browser")
        if pending.expires_at <= self._svc.clock.now():
            raise InvalidState("this sign-in took too long: start again")
        login = self.settings(pending.tenant_id)
        if login is None:
            raise InvalidState("sign-in is not configured for this tenant")
        spec = await self.spec(pending.tenant_id)
        if result.error is not None:
            raise ProviderError(
                f"the sign-in provider answered {result.error}",
                oauth_error=result.error,
                description=result.error_description,
            )
        check_callback_issuer(
            result.iss, expected_issuer=spec.issuer, required=spec.iss_parameter_supported
        )
        if result.code is None:
            raise InvalidState("the sign-in answer carries no authorization code")
        claims = await self._claims(spec, result.code, cookie)
        return _identity(login, pending, claims)

    async def _claims(self, spec: ProviderSpec, code: Secret, secret: str) -> Mapping[str, Any]:
        svc = self._svc
        request = authorization_code_request(
            spec.token_endpoint,
            code=code,
            redirect_uri=self.redirect_uri(),
            code_verifier=Secret(store.derive(secret, "pkce")),
            auth=ClientAuth(
                client_id=spec.client_id,
                method=spec.token_endpoint_auth_method if spec.client_secret else "none",
                client_secret=spec.client_secret,
            ),
        )
        raw = await svc.transport.send(request, provider=spec.name)
        now = svc.clock.now()
        tokens = parse_token_response(raw.status, raw.content_type, raw.body, now=now)
        if tokens.id_token is None or spec.jwks_uri is None or spec.issuer is None:
            raise ProtocolError("the sign-in provider returned no ID token to check")
        id_token = tokens.id_token.reveal()
        jwks = await svc.jwks.get(spec.jwks_uri, provider=spec.name, kid=header_kid(id_token))
        claims = validate_id_token(
            id_token,
            jwks=jwks,
            issuer=spec.issuer,
            client_id=spec.client_id,
            nonce=store.derive(secret, "nonce"),
            now=int(now.timestamp()),
            allowed_algs=spec.id_token_signing_alg_values_supported,
        )
        return claims.raw  # the access token is dropped here: sign-in keeps no token


def _section(login: LoginSettings) -> dict[str, Any]:
    return {
        "issuer": login.issuer,
        "client_id": login.client_id,
        "scopes": list(login.scopes),
        "allow_insecure_loopback": login.allow_insecure_loopback,
    }


def _identity(
    login: LoginSettings, pending: store.PendingLogin, claims: Mapping[str, Any]
) -> Identity:
    raw_id = dotted(claims, login.user_id_claim)
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        raise SignInFailed(f"the sign-in provider did not return the {login.user_id_claim!r} claim")
    try:
        user_id = check_user_id(str(raw_id))
    except TokenBrokerError:
        raise SignInFailed("the user id claim is not a usable user id") from None
    email = claims.get("email")
    verified = claims.get("email_verified")
    if verified not in (True, "true") or not isinstance(email, str):
        email = None  # an unverified address proves nothing and is not shown as the user's
    return Identity(
        tenant_id=pending.tenant_id,
        user_id=user_id,
        email=email,
        is_admin=_is_admin(login, user_id, claims),
        next_path=pending.next_path,
    )


def _is_admin(login: LoginSettings, user_id: str, claims: Mapping[str, Any]) -> bool:
    if user_id in login.admins:
        return True
    if login.admin_claim is None:
        return False
    value = dotted(claims, login.admin_claim)
    wanted = login.admin_claim_value
    if wanted is None:
        return value is True or value == "true"
    if isinstance(value, list):
        return wanted in value
    return bool(value == wanted)
