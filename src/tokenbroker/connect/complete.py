"""Holding a provider grant until its user is proven, then storing it as the connection.

Whoever opens a connect link may not be the user it was minted for, so the tokens are held
sealed as *pending* on the connect session; the application (which knows who is signed in)
confirms with the single-use ``flow_id``. Only then is the connection written.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connect import sessions
from tokenbroker.connect.exchange import ProviderGrant
from tokenbroker.connect.held import HeldGrant, store_held_grant
from tokenbroker.connections.model import Connection
from tokenbroker.connections.store import get
from tokenbroker.db.schema import connect_sessions
from tokenbroker.errors import BadRequest, Conflict, NotFound, TokenBrokerError
from tokenbroker.ids import digest, new_secret_value
from tokenbroker.lifecycle.notify import connection_event
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext


class UserMismatch(TokenBrokerError):
    code = "user_mismatch"
    status = 403


class VerificationUnavailable(TokenBrokerError):
    code = "verification_unavailable"
    status = 503


@dataclass(frozen=True)
class NextStep:
    session: sessions.ConnectSession
    location: str | None


def _ctx(tenant_id: str, user_id: str, kind: str, owner_id: str, field: str) -> SealContext:
    return SealContext(
        tenant_id=tenant_id, user_id=user_id, owner_kind=kind, owner_id=owner_id, field=field
    )


async def hold_pending(
    svc: Services, session: sessions.ConnectSession, grant: ProviderGrant
) -> NextStep:
    connect = svc.tenant(session.tenant_id).connect
    now = svc.clock.now()
    flow_id = new_secret_value()
    async with svc.engine.begin() as conn:
        for field, value in token_values(grant).items():
            ctx = _ctx(session.tenant_id, session.user_id, "connect_session", session.id, field)
            await svc.sealed.put(conn, ctx, value)
        await conn.execute(
            update(connect_sessions)
            .where(connect_sessions.c.id == session.id)
            .values(
                status=sessions.PENDING_CONFIRMATION,
                flow_id_hash=digest(flow_id),
                account_id=grant.account_id,
                account_label=grant.account_label,
                granted_scopes=list(grant.scopes),
                connect_vars=dict(grant.connect_vars),
                access_token_expires_at=grant.tokens.expires_at,
                updated_at=now,
            )
        )
    await svc.recorder.record(
        Event(
            type="connect.authorized",
            tenant_id=session.tenant_id,
            actor="browser",
            user_id=session.user_id,
            provider=session.provider,
            outcome="pending_confirmation",
            detail={"connect_session_id": session.id, "account_id": grant.account_id},
        )
    )
    if not connect.require_verification:
        step = await confirm(
            svc, session.tenant_id, session.id, flow_id, session.user_id, actor="system"
        )
        return NextStep(step.session, step.session.return_to)
    if connect.user_verifier_url is None:
        raise VerificationUnavailable(
            "no user verifier is configured ([connect] user_verifier_url), so the broker cannot "
            "prove who completed this link; the tokens are held until the link expires"
        )
    query = urlencode({"flow_id": flow_id, "connect_session_id": session.id})
    sep = "&" if "?" in connect.user_verifier_url else "?"
    refreshed = await sessions.get(svc, session.id, tenant_id=session.tenant_id)
    assert refreshed is not None
    return NextStep(refreshed, f"{connect.user_verifier_url}{sep}{query}")


def token_values(grant: ProviderGrant) -> dict[str, Secret]:
    values = {"access_token": grant.tokens.access_token}
    if grant.tokens.refresh_token is not None:
        values["refresh_token"] = grant.tokens.refresh_token
    if grant.tokens.id_token is not None:
        values["id_token"] = grant.tokens.id_token
    return values


@dataclass(frozen=True)
class Confirmed:
    session: sessions.ConnectSession
    connection: Connection


async def confirm(
    svc: Services,
    tenant_id: str,
    session_id: str,
    flow_id: str,
    user_id: str,
    *,
    actor: str = "admin",
) -> Confirmed:
    """The application proves which user completed the link; only a match stores anything."""
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        session = await sessions.load(conn, session_id, tenant_id=tenant_id)
        if session is None:
            raise NotFound(f"no connect session {session_id!r}")
        row = await _session_row(conn, session_id)
        if session.status != sessions.PENDING_CONFIRMATION or row["flow_id_hash"] is None:
            raise Conflict(
                f"connect session {session_id!r} is {session.status}, not awaiting confirmation"
            )
        if session.expires_at <= now:
            await _discard_pending(svc, conn, session, "expired", "the connect session expired")
            raise Conflict(f"connect session {session_id!r} has expired")
        if not hmac.compare_digest(digest(flow_id), row["flow_id_hash"]):
            raise BadRequest("flow_id does not match this connect session", code="invalid_flow")
        if user_id != session.user_id:
            await _discard_pending(
                svc,
                conn,
                session,
                "user_mismatch",
                "the link was completed by another user than the one it was minted for",
            )
            mismatch = True
        else:
            mismatch = False
            connection_id = await _store_connection(svc, conn, session, row)
    if mismatch:
        await _record(svc, session, "connect.failed", "denied", {"error": "user_mismatch"}, actor)
        raise UserMismatch("the signed-in user is not the user this connect link was minted for")
    await _record(svc, session, "connect.completed", "ok", {"connection_id": connection_id}, actor)
    await connection_event(
        svc,
        "connection.connected",
        tenant_id=tenant_id,
        user_id=session.user_id,
        provider=session.provider,
        connection_id=connection_id,
        actor=actor,
    )
    async with svc.engine.connect() as conn:
        done = await sessions.load(conn, session_id, tenant_id=tenant_id)
        connection = await get(conn, tenant_id, connection_id)
    assert done is not None
    assert connection is not None
    return Confirmed(session=done, connection=connection)


async def _session_row(conn: AsyncConnection, session_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(select(connect_sessions).where(connect_sessions.c.id == session_id))
    ).one()
    return dict(row._mapping)


async def _store_connection(
    svc: Services, conn: AsyncConnection, session: sessions.ConnectSession, row: dict[str, Any]
) -> str:
    held = HeldGrant(
        tenant_id=session.tenant_id,
        user_id=session.user_id,
        provider=session.provider,
        owner_kind="connect_session",
        owner_id=session.id,
        granted_scopes=tuple(row["granted_scopes"] or ()),
        account_id=row["account_id"],
        account_label=row["account_label"],
        connect_vars=row["connect_vars"] or {},
        access_token_expires_at=row["access_token_expires_at"],
    )
    connection_id = await store_held_grant(svc, conn, held)
    await conn.execute(
        update(connect_sessions)
        .where(connect_sessions.c.id == session.id)
        .values(
            status=sessions.COMPLETED,
            flow_id_hash=None,
            connection_id=connection_id,
            updated_at=svc.clock.now(),
        )
    )
    return connection_id


async def _discard_pending(
    svc: Services, conn: AsyncConnection, session: sessions.ConnectSession, error: str, message: str
) -> None:
    await svc.sealed.delete_owner(conn, "connect_session", session.id)
    await sessions.mark_failed(conn, session.id, error, message, svc.clock.now())


async def _record(
    svc: Services,
    session: sessions.ConnectSession,
    type_: str,
    outcome: str,
    detail: dict[str, str | None],
    actor: str,
) -> None:
    await svc.recorder.record(
        Event(
            type=type_,
            tenant_id=session.tenant_id,
            actor=actor,
            user_id=session.user_id,
            provider=session.provider,
            connection_id=detail.get("connection_id"),
            outcome=outcome,
            detail={"connect_session_id": session.id, **detail},
        )
    )
