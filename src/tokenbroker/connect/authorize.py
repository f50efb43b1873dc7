"""Opening a connect link: bind the flow to this browser and send it to the provider.

RFC 6749 §10.12 / RFC 9700 §2.1: ``state`` is random, single use, bound to its connect session,
to this browser (an HttpOnly cookie holding a random binding whose hash the row keeps) and to
the provider; PKCE S256 always (RFC 7636), with OIDC ``nonce`` when ``openid`` is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, update

from tokenbroker.connect import sessions
from tokenbroker.connections.store import find, merged_scopes
from tokenbroker.db.schema import auth_flows, connect_sessions
from tokenbroker.errors import BadRequest, NotFound
from tokenbroker.ids import digest, new_id, new_secret_value
from tokenbroker.protocol.rfc6749 import AuthorizationRequest, authorization_url
from tokenbroker.protocol.rfc7636 import new_code_verifier, require_s256, s256_challenge
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext

FLOW_COOKIE = "tb_flow"


@dataclass(frozen=True)
class BrowserRedirect:
    location: str
    cookie_value: str
    cookie_path: str
    max_age: int


class SessionNotUsable(BadRequest):
    code = "connect_session_unusable"


def flow_context(tenant_id: str, user_id: str, flow_id: str, field: str) -> SealContext:
    return SealContext(
        tenant_id=tenant_id, user_id=user_id, owner_kind="auth_flow", owner_id=flow_id, field=field
    )


def _extra_params(spec: ProviderSpec, scopes: tuple[str, ...]) -> dict[str, str]:
    """Provider extras, plus the scopes under another name where the provider wants that."""
    extra = dict(spec.authorization_params)
    if spec.scope_parameter != "scope":
        extra[spec.scope_parameter] = spec.scope_separator.join(scopes)
    return extra


async def begin(svc: Services, session_id: str) -> BrowserRedirect:
    session = await sessions.get(svc, session_id, tenant_id=None)
    if session is None:
        raise NotFound("this connect link is not valid")
    now = svc.clock.now()
    if session.expires_at <= now:
        raise SessionNotUsable("this connect link has expired: ask the application for a new one")
    if session.status not in (sessions.CREATED, sessions.AUTHORIZING):
        raise SessionNotUsable("this connect link has already been used")
    spec = await svc.providers.get(session.provider)
    require_s256(spec.code_challenge_methods_supported, spec.name)
    ttl = svc.tenant(session.tenant_id).connect.state_ttl_seconds

    state = new_secret_value()
    binding = new_secret_value()
    verifier = new_code_verifier()
    nonce = new_secret_value(24) if spec.uses_openid else None
    flow_id = new_id("af")
    async with svc.engine.begin() as conn:
        existing = await find(conn, session.tenant_id, session.user_id, session.provider)
        scopes = merged_scopes(existing.scopes if existing else (), session.scopes)
        await conn.execute(
            insert(auth_flows).values(
                id=flow_id,
                tenant_id=session.tenant_id,
                connect_session_id=session.id,
                provider=session.provider,
                state_hash=digest(state),
                binding_hash=digest(binding),
                scopes=list(scopes),
                expires_at=now + timedelta(seconds=ttl),
                created_at=now,
            )
        )
        ctx = flow_context(session.tenant_id, session.user_id, flow_id, "code_verifier")
        await svc.sealed.put(conn, ctx, Secret(verifier))
        if nonce is not None:
            ctx = flow_context(session.tenant_id, session.user_id, flow_id, "nonce")
            await svc.sealed.put(conn, ctx, Secret(nonce))
        await conn.execute(
            update(connect_sessions)
            .where(connect_sessions.c.id == session.id)
            .values(status=sessions.AUTHORIZING, updated_at=now)
        )
    prompt = None
    if spec.prompt_consent_for_refresh and ("offline_access" in scopes or not spec.uses_openid):
        prompt = "consent"
    location = authorization_url(
        AuthorizationRequest(
            endpoint=spec.authorization_endpoint,
            client_id=spec.client_id,
            redirect_uri=spec.redirect_uri(svc.settings.public_url),
            state=state,
            code_challenge=s256_challenge(verifier),
            scopes=scopes if spec.scope_parameter == "scope" else (),
            scope_separator=spec.scope_separator,
            nonce=nonce,
            resource=spec.resource,
            extra=_extra_params(spec, scopes),
            prompt=prompt,
        )
    )
    await svc.recorder.record(
        Event(
            type="connect.started",
            tenant_id=session.tenant_id,
            actor="browser",
            user_id=session.user_id,
            provider=session.provider,
            outcome="ok",
            detail={"connect_session_id": session.id, "scopes": " ".join(scopes)},
        )
    )
    return BrowserRedirect(
        location=location,
        cookie_value=f"{flow_id}.{binding}",
        cookie_path=f"/oauth/callback/{spec.name}",
        max_age=ttl,
    )
