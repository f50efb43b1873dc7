"""The OAuth callback: prove the response belongs to this browser's flow, then exchange the code.

Checked before any call to the token endpoint (RFC 6749 §10.12, RFC 9700 §4.4 and §4.7,
RFC 9207): the ``state`` exists, is unused and unexpired, belongs to the provider of this
redirect URI, and matches the browser-binding cookie; ``iss`` equals the provider's issuer
when present and is required when the provider advertises it. A failed check stores nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, update

from tokenbroker.connect import complete, sessions
from tokenbroker.connect.exchange import exchange_code
from tokenbroker.connect.held import AccountMismatchError
from tokenbroker.connections.store import find
from tokenbroker.db.schema import auth_flows
from tokenbroker.errors import InvalidState, ProviderError, TokenBrokerError
from tokenbroker.ids import digest
from tokenbroker.protocol.rfc6749 import parse_callback
from tokenbroker.protocol.rfc9207 import check_callback_issuer
from tokenbroker.records import Event
from tokenbroker.services import Services


@dataclass(frozen=True)
class CallbackOutcome:
    """Where the browser goes next: the user verifier, the return URL, or a result page."""

    session: sessions.ConnectSession
    redirect_to: str | None


@dataclass(frozen=True)
class _Flow:
    id: str
    tenant_id: str
    connect_session_id: str
    scopes: tuple[str, ...]


async def handle(
    svc: Services, provider: str, query: Mapping[str, str], cookie: str | None
) -> CallbackOutcome:
    spec = await svc.providers.get(provider)
    result = parse_callback(query)
    flow = await _consume_flow(svc, provider, result.state, cookie)
    session = await sessions.get(svc, flow.connect_session_id, tenant_id=flow.tenant_id)
    if session is None or session.status != sessions.AUTHORIZING:
        raise InvalidState("this authorization is no longer expected")
    try:
        if result.error is not None:
            raise ProviderError(
                f"provider {provider!r} answered {result.error}"
                + (f": {result.error_description}" if result.error_description else ""),
                oauth_error=result.error,
                description=result.error_description,
            )
        check_callback_issuer(
            result.iss, expected_issuer=spec.issuer, required=spec.iss_parameter_supported
        )
        if result.code is None:
            raise InvalidState("the callback carries no authorization code")
        async with svc.engine.connect() as conn:
            secrets_ = await svc.sealed.get_many(
                conn,
                flow.tenant_id,
                session.user_id,
                "auth_flow",
                flow.id,
                ("code_verifier", "nonce"),
            )
            existing = await find(conn, session.tenant_id, session.user_id, session.provider)
        nonce = secrets_.get("nonce")
        grant = await exchange_code(
            svc,
            spec,
            code=result.code,
            verifier=secrets_["code_verifier"],
            nonce=None if nonce is None else nonce.reveal(),
            requested_scopes=flow.scopes,
            has_stored_refresh_token=bool(existing and existing.has_refresh_token),
        )
        if existing is not None and existing.account_id not in (None, grant.account_id):
            raise AccountMismatchError(
                f"the {provider} account that signed in is not the one already connected "
                f"for this user; nothing was changed"
            )
    except TokenBrokerError as exc:
        await _fail(svc, session, flow, exc)
        raise
    await _erase_flow_secrets(svc, flow.id)
    redirect = await complete.hold_pending(svc, session, grant)
    return CallbackOutcome(session=redirect.session, redirect_to=redirect.location)


async def _consume_flow(
    svc: Services, provider: str, state: str | None, cookie: str | None
) -> _Flow:
    if not state:
        raise InvalidState("the callback carries no state")
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        row = (
            await conn.execute(select(auth_flows).where(auth_flows.c.state_hash == digest(state)))
        ).first()
        if row is None:
            raise InvalidState("unknown state: this authorization was not started here")
        flow = row._mapping
        if flow["provider"] != provider:
            raise InvalidState("the state belongs to another provider (possible mix-up attack)")
        if not _cookie_matches(cookie, flow["id"], flow["binding_hash"]):
            raise InvalidState(
                "this authorization was started in another browser (the binding cookie is "
                "missing or does not match)"
            )
        if flow["used_at"] is not None:
            raise InvalidState("this state was already used")
        if flow["expires_at"] <= now:
            raise InvalidState("this authorization took too long: start again")
        # Single use, even under concurrent callbacks: only one UPDATE can win.
        won = await conn.execute(
            update(auth_flows)
            .where(auth_flows.c.id == flow["id"], auth_flows.c.used_at.is_(None))
            .values(used_at=now)
        )
        if won.rowcount != 1:
            raise InvalidState("this state was already used")
    return _Flow(
        id=flow["id"],
        tenant_id=flow["tenant_id"],
        connect_session_id=flow["connect_session_id"],
        scopes=tuple(flow["scopes"]),
    )


def _cookie_matches(cookie: str | None, flow_id: str, binding_hash: str) -> bool:
    if not cookie or "." not in cookie:
        return False
    cookie_flow, binding = cookie.split(".", 1)
    return hmac.compare_digest(cookie_flow, flow_id) and hmac.compare_digest(
        digest(binding), binding_hash
    )


async def _erase_flow_secrets(svc: Services, flow_id: str) -> None:
    async with svc.engine.begin() as conn:
        await svc.sealed.delete_owner(conn, "auth_flow", flow_id)


async def _fail(
    svc: Services, session: sessions.ConnectSession, flow: _Flow, exc: TokenBrokerError
) -> None:
    code = exc.oauth_error if isinstance(exc, ProviderError) else exc.code
    async with svc.engine.begin() as conn:
        await svc.sealed.delete_owner(conn, "auth_flow", flow.id)
        await sessions.mark_failed(conn, session.id, code, exc.message, svc.clock.now())
    await svc.recorder.record(
        Event(
            type="connect.failed",
            tenant_id=session.tenant_id,
            actor="browser",
            user_id=session.user_id,
            provider=session.provider,
            outcome="failed",
            detail={"connect_session_id": session.id, "error": code, "kind": exc.code},
        )
    )
