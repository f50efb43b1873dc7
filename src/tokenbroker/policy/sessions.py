"""Agent sessions: an agent works for one user at a time, through a short-lived opaque token.

Minted by the application (admin key) for a user and agent, or by the agent itself with its own
secret plus a single-use session ticket the application minted for that user: an agent secret
alone can never choose a user. Tokens (``tbs.<random>``) are stored only as SHA-256 digests,
bound to tenant, user and agent, revocable, with a default and a maximum lifetime.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from tokenbroker.db.schema import agent_sessions, agents, session_tickets
from tokenbroker.errors import BadRequest, NotFound, TokenBrokerError, Unauthorized
from tokenbroker.ids import digest, new_id, new_secret_value
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services

TOKEN_PREFIX = "tbs."
TICKET_PREFIX = "tbt."


class InvalidToken(TokenBrokerError):
    """The agent session token is missing, bad, expired or revoked (the only 401 of the proxy)."""

    code = "invalid_token"
    status = 401


@dataclass(frozen=True)
class AgentSession:
    id: str
    tenant_id: str
    user_id: str
    agent_id: str
    expires_at: datetime


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _ttl(svc: Services, expires_in: object) -> int:
    cfg = svc.settings.gateway
    if expires_in is None:
        return cfg.session_ttl_seconds
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise BadRequest("expires_in must be a positive number of seconds")
    if expires_in > cfg.session_ttl_max_seconds:
        raise BadRequest(f"expires_in may be at most {cfg.session_ttl_max_seconds} seconds")
    return expires_in


async def _require_agent(svc: Services, tenant_id: str, agent_id: object) -> str:
    if not isinstance(agent_id, str) or not agent_id:
        raise BadRequest("agent_id is required")
    async with svc.engine.connect() as conn:
        found = (
            await conn.execute(
                select(agents.c.id).where(agents.c.id == agent_id, agents.c.tenant_id == tenant_id)
            )
        ).first()
    if found is None:
        raise NotFound(f"no agent {agent_id!r}")
    return agent_id


async def mint(
    svc: Services,
    *,
    tenant_id: str,
    user_id: str,
    agent_id: object,
    expires_in: object,
    actor: str,
) -> tuple[Secret, dict[str, Any]]:
    agent = await _require_agent(svc, tenant_id, agent_id)
    ttl = _ttl(svc, expires_in)
    now = svc.clock.now()
    token = Secret(TOKEN_PREFIX + new_secret_value())
    session_id = new_id("as")
    expires_at = now + timedelta(seconds=ttl)
    async with svc.engine.begin() as conn:
        await conn.execute(
            insert(agent_sessions).values(
                id=session_id,
                tenant_id=tenant_id,
                user_id=user_id,
                agent_id=agent,
                token_hash=digest(token.reveal()),
                expires_at=expires_at,
                created_at=now,
            )
        )
    await svc.recorder.record(
        Event(
            type="agent_session.minted",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            outcome="ok",
            detail={"session_id": session_id, "agent_id": agent, "ttl": ttl},
        )
    )
    return token, {
        "id": session_id,
        "expires_at": _iso(expires_at),
        "agent_id": agent,
        "user_id": user_id,
    }


async def mint_ticket(
    svc: Services, *, tenant_id: str, user_id: str, agent_id: object, actor: str = "admin"
) -> tuple[Secret, dict[str, Any]]:
    agent = await _require_agent(svc, tenant_id, agent_id)
    now = svc.clock.now()
    ticket = Secret(TICKET_PREFIX + new_secret_value())
    ticket_id = new_id("tkt")
    expires_at = now + timedelta(seconds=svc.settings.gateway.ticket_ttl_seconds)
    async with svc.engine.begin() as conn:
        await conn.execute(
            insert(session_tickets).values(
                id=ticket_id,
                tenant_id=tenant_id,
                user_id=user_id,
                agent_id=agent,
                ticket_hash=digest(ticket.reveal()),
                expires_at=expires_at,
                created_at=now,
            )
        )
    await svc.recorder.record(
        Event(
            type="session_ticket.minted",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            outcome="ok",
            detail={"ticket_id": ticket_id, "agent_id": agent},
        )
    )
    return ticket, {"id": ticket_id, "expires_at": _iso(expires_at)}


async def redeem_ticket(svc: Services, agent_tenant: str, agent_id: str, ticket: object) -> str:
    """Single use, unexpired, minted for this very agent; returns the user id."""
    if not isinstance(ticket, str) or not ticket.startswith(TICKET_PREFIX):
        raise Unauthorized("a valid session ticket is required")
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        row = (
            await conn.execute(
                select(session_tickets).where(session_tickets.c.ticket_hash == digest(ticket))
            )
        ).first()
        if row is None:
            raise Unauthorized("the session ticket is not valid")
        m = row._mapping
        if m["tenant_id"] != agent_tenant or m["agent_id"] != agent_id:
            raise Unauthorized("the session ticket was minted for another agent")
        if m["used_at"] is not None or m["expires_at"] <= now:
            raise Unauthorized("the session ticket was already used or has expired")
        won = await conn.execute(
            update(session_tickets)
            .where(session_tickets.c.id == m["id"], session_tickets.c.used_at.is_(None))
            .values(used_at=now)
        )
        if won.rowcount != 1:
            raise Unauthorized("the session ticket was already used")
    return str(m["user_id"])


async def authenticate(svc: Services, presented: str) -> AgentSession:
    """Look a token up by digest; every failure is the same 401 ``invalid_token``."""
    if not presented.startswith(TOKEN_PREFIX):
        raise InvalidToken("the agent session token is not valid")
    async with svc.engine.connect() as conn:
        row = (
            await conn.execute(
                select(agent_sessions).where(agent_sessions.c.token_hash == digest(presented))
            )
        ).first()
    if row is None:
        raise InvalidToken("the agent session token is not valid")
    m = row._mapping
    if not hmac.compare_digest(m["token_hash"], digest(presented)):
        raise InvalidToken("the agent session token is not valid")
    if m["revoked_at"] is not None or m["expires_at"] <= svc.clock.now():
        raise InvalidToken("the agent session has expired or was revoked")
    return AgentSession(m["id"], m["tenant_id"], m["user_id"], m["agent_id"], m["expires_at"])


async def revoke(svc: Services, tenant_id: str, session_id: str, *, actor: str = "admin") -> None:
    async with svc.engine.begin() as conn:
        result = await conn.execute(
            update(agent_sessions)
            .where(agent_sessions.c.id == session_id, agent_sessions.c.tenant_id == tenant_id)
            .values(revoked_at=svc.clock.now())
        )
        if result.rowcount != 1:
            raise NotFound(f"no agent session {session_id!r}")
        await svc.bus.publish(conn, "agent_session", session_id)
    await svc.recorder.record(
        Event(
            type="agent_session.revoked",
            tenant_id=tenant_id,
            actor=actor,
            outcome="ok",
            detail={"session_id": session_id},
        )
    )
