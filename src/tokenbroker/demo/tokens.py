"""The demo provider's token and revocation endpoints, with fault injection and ID tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
from typing import Any

from aiohttp import web
from joserfc import jwt

from tokenbroker.demo.appkeys import SHUTDOWN_KEY, STATE_KEY
from tokenbroker.demo.oauth import (
    NO_STORE,
    OAuthError,
    authenticate_client,
    invalid_client,
    read_form,
)
from tokenbroker.demo.settings import DemoClient
from tokenbroker.demo.state import DemoState, RefreshFamily

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_COUNTERS = {
    "authorization_code": "code_exchanges",
    "refresh_token": "refresh_calls",
    DEVICE_GRANT: "device_polls",
}
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_HUGE_BODY_BYTES = 4 * 1024 * 1024


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.count("token_calls")
    try:
        form = await read_form(request)
    except OAuthError as exc:
        return exc.render()
    grant_type = form.get("grant_type", "")
    if grant_type in GRANT_COUNTERS:
        state.count(GRANT_COUNTERS[grant_type])
    if state.behaviour.token_delay_seconds > 0:
        await _stall(request, state.behaviour.token_delay_seconds)
    injected = await _inject_token_fault(request, state)
    if injected is not None:
        return injected
    try:
        auth = authenticate_client(request, form, state.settings)
        state.token_requests.append(
            {**{k: v for k, v in form.items() if k != "client_secret"}, "auth_method": auth.method}
        )
        if grant_type == "authorization_code":
            body = _authorization_code_grant(state, auth.client, form)
        elif grant_type == "refresh_token":
            body = _refresh_token_grant(state, auth.client, form)
        elif grant_type == DEVICE_GRANT:
            body = _device_code_grant(state, auth.client, form)
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}")
    except OAuthError as exc:
        state.count(f"token_errors:{exc.error}")
        return exc.render()
    return web.json_response(body, headers=NO_STORE)


async def revocation_endpoint(request: web.Request) -> web.Response:
    """RFC 7009: revoke an access token or a refresh token (and its whole family)."""
    state = request.app[STATE_KEY]
    state.count("revocations")
    if state.behaviour.revoke_failures:
        status = state.behaviour.revoke_failures.pop(0)
        return _fault_response(status)
    try:
        form = await read_form(request)
        client = authenticate_client(request, form, state.settings).client
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as exc:
        return exc.render()
    refresh = state.refresh_tokens.get(token)
    if refresh is not None:
        family = state.families[refresh.family_id]
        if family.client_id == client.client_id:
            state.revoke_family(family.family_id)
    access = state.access_tokens.get(token)
    if access is not None and access.client_id == client.client_id:
        state.revoke_access_token(token)
    return web.Response(status=200, headers=NO_STORE)


# -- fault injection ------------------------------------------------------------------------------


async def _stall(request: web.Request, seconds: float) -> None:
    """Sleep, but wake up early when the server shuts down so tests never hang on teardown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(request.app[SHUTDOWN_KEY].wait(), seconds)


async def _inject_token_fault(request: web.Request, state: DemoState) -> web.Response | None:
    if not state.behaviour.token_failures:
        return None
    fault = state.behaviour.token_failures.pop(0)
    if isinstance(fault, int):
        return _fault_response(fault)
    if fault == "timeout":
        await _stall(request, state.behaviour.timeout_seconds)
        return None
    if fault == "html":
        return web.Response(
            status=502,
            text="<html><body><h1>502 Bad Gateway</h1></body></html>",
            content_type="text/html",
        )
    if fault == "bad_json":
        return web.Response(status=200, text='{"access_token": ', content_type="application/json")
    if fault == "huge":
        padding = "x" * _HUGE_BODY_BYTES
        return web.Response(
            status=200, text=f'{{"padding": "{padding}"}}', content_type="application/json"
        )
    if fault == "invalid_client":
        return invalid_client("injected fault").render()
    return OAuthError(fault, "injected fault").render()


def _fault_response(status: int) -> web.Response:
    headers = dict(NO_STORE)
    if status in (429, 503):
        headers["Retry-After"] = "1"
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    body = {"error": error, "error_description": "injected fault"}
    return web.json_response(body, status=status, headers=headers)


# -- grants ---------------------------------------------------------------------------------------


def _authorization_code_grant(
    state: DemoState, client: DemoClient, form: dict[str, str]
) -> dict[str, Any]:
    record = state.codes.get(form.get("code", ""))
    if record is None:
        raise OAuthError("invalid_grant", "unknown authorization code")
    if record.used:
        state.revoke_code_grants(record)
        raise OAuthError("invalid_grant", "authorization code already used; grants revoked")
    record.used = True
    if record.client_id != client.client_id:
        raise OAuthError("invalid_grant", "code was issued to another client")
    if record.expires_at <= state.now():
        raise OAuthError("invalid_grant", "authorization code expired")
    if form.get("redirect_uri") != record.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    verifier = form.get("code_verifier", "")
    if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
        _s256(verifier), record.code_challenge
    ):
        raise OAuthError("invalid_grant", "PKCE verification failed")
    resources = _requested_resources(form, record.resources)
    want_refresh = "offline_access" in record.scopes and (
        record.consent_prompted or state.behaviour.refresh_without_prompt
    )
    family = _maybe_family(state, client, record.user, record.scopes, resources, want_refresh)
    body, access_token = _issue(
        state, client, record.user, record.scopes, resources, family, nonce=record.nonce
    )
    record.access_tokens.append(access_token)
    record.family_id = family.family_id if family is not None else None
    return body


def _refresh_token_grant(
    state: DemoState, client: DemoClient, form: dict[str, str]
) -> dict[str, Any]:
    record = state.refresh_tokens.get(form.get("refresh_token", ""))
    family = state.families.get(record.family_id) if record is not None else None
    if record is None or family is None or family.client_id != client.client_id:
        raise OAuthError("invalid_grant", "unknown refresh token")
    if family.revoked:
        raise OAuthError("invalid_grant", "refresh token revoked")
    now = state.now()
    if record.used_at is not None:
        grace = state.behaviour.reuse_grace_seconds
        if grace <= 0 or now - record.used_at > grace:
            state.revoke_family(family.family_id)
            raise OAuthError("invalid_grant", "refresh token reused; token family revoked")
    scopes = family.scopes
    if "scope" in form:
        requested = form["scope"].split()
        if not set(requested) <= set(family.scopes):
            raise OAuthError("invalid_scope", "requested scope exceeds the original grant")
        scopes = tuple(s for s in family.scopes if s in requested)
    narrow = state.behaviour.refresh_scope_narrow_to
    if narrow is not None:
        scopes = tuple(s for s in scopes if s in narrow)
    resources = _requested_resources(form, family.resources)
    rotate = state.behaviour.rotate_refresh_tokens
    if rotate and record.used_at is None:
        record.used_at = now
    body, _ = _issue(
        state,
        client,
        family.user,
        scopes,
        resources,
        family if rotate else None,
        nonce=None,
        family_id=family.family_id,
    )
    return body


def _device_code_grant(
    state: DemoState, client: DemoClient, form: dict[str, str]
) -> dict[str, Any]:
    record = state.device_codes.get(form.get("device_code", ""))
    if record is None or record.client_id != client.client_id or record.status == "consumed":
        raise OAuthError("invalid_grant", "unknown device code")
    now = state.now()
    if record.expires_at <= now:
        raise OAuthError("expired_token", "device code expired")
    if record.last_poll is not None and now - record.last_poll < record.interval:
        record.last_poll = now
        record.interval += 5
        raise OAuthError("slow_down", f"poll at most every {record.interval} s")
    record.last_poll = now
    if record.status == "pending":
        raise OAuthError("authorization_pending", "the user has not decided yet")
    if record.status == "denied":
        raise OAuthError("access_denied", "the user denied the request")
    record.status = "consumed"
    user = record.user or ""
    want_refresh = "offline_access" in record.scopes
    family = _maybe_family(state, client, user, record.scopes, (), want_refresh)
    body, _ = _issue(state, client, user, record.scopes, (), family, nonce=None)
    return body


# -- issuing --------------------------------------------------------------------------------------


def _maybe_family(
    state: DemoState,
    client: DemoClient,
    user: str,
    scopes: tuple[str, ...],
    resources: tuple[str, ...],
    want_refresh: bool,
) -> RefreshFamily | None:
    if not want_refresh or state.behaviour.omit_refresh_token:
        return None
    subject = state.behaviour.different_sub or user
    return state.new_family(
        client_id=client.client_id, user=subject, scopes=scopes, resources=resources
    )


def _issue(
    state: DemoState,
    client: DemoClient,
    user: str,
    scopes: tuple[str, ...],
    resources: tuple[str, ...],
    family: RefreshFamily | None,
    *,
    nonce: str | None,
    family_id: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Build a token response; ``family`` gets a new refresh token when given."""
    subject = state.behaviour.different_sub or user
    access = state.issue_access_token(
        client_id=client.client_id,
        user=subject,
        scopes=scopes,
        resources=resources,
        family_id=family.family_id if family is not None else family_id,
    )
    body: dict[str, Any] = {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": int(access.expires_at - access.issued_at),
        "scope": " ".join(scopes),
    }
    if family is not None and not state.behaviour.omit_refresh_token:
        body["refresh_token"] = state.issue_refresh_token(family).token
    if "openid" in scopes:
        body["id_token"] = mint_id_token(state, client.client_id, subject, nonce)
    return body, access.token


def mint_id_token(state: DemoState, client_id: str, subject: str, nonce: str | None) -> str:
    """An RS256 ID token, bent by the hostile ``id_token_*`` knobs when they are set."""
    behaviour = state.behaviour
    now = int(state.now())
    issued_at = now - 2 * state.settings.id_token_ttl if behaviour.id_token_expired else now
    claims: dict[str, Any] = {
        "iss": behaviour.id_token_iss
        if behaviour.id_token_iss is not None
        else state.settings.issuer,
        "sub": subject,
        "aud": behaviour.id_token_aud if behaviour.id_token_aud is not None else client_id,
        "iat": issued_at,
        "exp": issued_at + state.settings.id_token_ttl,
        "auth_time": issued_at,
        "email": f"{subject}@demo.example",
        "email_verified": True,
        "name": subject.capitalize(),
    }
    effective_nonce = behaviour.id_token_nonce if behaviour.id_token_nonce is not None else nonce
    if effective_nonce is not None:
        claims["nonce"] = effective_nonce
    key = state.other_key if behaviour.id_token_sign_with_other_key else state.signing_key
    header = {"alg": "RS256", "kid": state.signing_key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=["RS256"])


def _requested_resources(form: dict[str, str], granted: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 8707: a ``resource`` at the token endpoint must be one named at authorization."""
    resource = form.get("resource")
    if resource is None:
        return granted
    if granted and resource not in granted:
        raise OAuthError("invalid_target", "resource was not part of the authorization request")
    return (resource,)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def s256_challenge(verifier: str) -> str:
    """The PKCE S256 ``code_challenge`` for ``verifier`` (RFC 7636 §4.2)."""
    return _s256(verifier)
