"""Erasing a user (``tokenbroker users erase USER``, ``DELETE /v1/users/{id}``).

Steps, in order: every connection of the user is deleted through the normal path (revoked at
the provider, tokens erased, grants ended; an unreachable provider keeps its sealed tokens
only in the durable revocation queue until it answers); then the user's grants, agent
sessions, session tickets, connect and device sessions and their sealed values are deleted,
and so are the webhook deliveries that name the user (pending ones too: the erasure's answer
already tells the application which connections went, and a delivery would carry the user's
id and account label to a receiver and keep them in the outbox); a ``user.erased`` record is
committed; finally the user's pseudonym key is destroyed. The
audit records stay for their retention period, but nothing ties them to the person any more,
and no record was rewritten, so the chain still verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.audit.trail import trail_of
from tokenbroker.connect.revocation import delete_connection
from tokenbroker.db.schema import (
    agent_sessions,
    auth_flows,
    connect_sessions,
    connections,
    device_sessions,
    grants,
    revocations,
    sealed_secrets,
    session_tickets,
    webhook_deliveries,
)
from tokenbroker.errors import NotFound
from tokenbroker.records import Event
from tokenbroker.services import Services

KEEP_SEALED = ("revocation", "audit_user")  # pending revocations; the key goes last


@dataclass(frozen=True)
class Erased:
    connections: dict[str, str]  # connection id -> revocation outcome
    grants: int
    sessions: int
    pseudonym_key: bool
    webhook_deliveries: int = 0


async def erase_user(svc: Services, tenant_id: str, user_id: str, *, actor: str) -> Erased:
    async with svc.engine.connect() as conn:
        owned = list(
            (
                await conn.execute(
                    select(connections.c.id).where(
                        connections.c.tenant_id == tenant_id, connections.c.user_id == user_id
                    )
                )
            ).scalars()
        )
    outcomes: dict[str, str] = {}
    for connection_id in owned:
        try:
            outcomes[connection_id] = await delete_connection(
                svc, tenant_id, connection_id, actor=actor
            )
        except NotFound:
            outcomes[connection_id] = "erased"
    async with svc.engine.begin() as conn:
        grant_count, session_count = await _delete_rows(svc, conn, tenant_id, user_id)
        deliveries = await _delete_webhook_deliveries(conn, tenant_id, user_id)
    trail = trail_of(svc)
    await svc.recorder.record(
        Event(
            type="user.erased",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            outcome="ok",
            detail={"connections": len(owned), "grants": grant_count},
        )
    )
    await trail.flush()  # every queued record of this user is written with the old key
    async with svc.engine.begin() as conn:
        destroyed = await trail.pseudonyms.erase(conn, tenant_id, user_id)
    return Erased(outcomes, grant_count, session_count, destroyed, deliveries)


async def _delete_webhook_deliveries(conn: AsyncConnection, tenant_id: str, user_id: str) -> int:
    """Delete the tenant's webhook deliveries whose payload names ``user_id``. The payload is
    JSON text on both databases, so rows are matched here rather than in SQL; erasure is rare
    and the rows are read in batches."""
    wd = webhook_deliveries.c
    found: list[str] = []
    result = await conn.stream(select(wd.id, wd.payload).where(wd.tenant_id == tenant_id))
    async for row in result:
        data = row.payload.get("data") if isinstance(row.payload, dict) else None
        if isinstance(data, dict) and data.get("user_id") == user_id:
            found.append(row.id)
    for start in range(0, len(found), 500):
        await conn.execute(delete(webhook_deliveries).where(wd.id.in_(found[start : start + 500])))
    return len(found)


async def _delete_rows(
    svc: Services, conn: AsyncConnection, tenant_id: str, user_id: str
) -> tuple[int, int]:
    grant_ids = list(
        (
            await conn.execute(
                select(grants.c.id).where(
                    grants.c.tenant_id == tenant_id, grants.c.user_id == user_id
                )
            )
        ).scalars()
    )
    session_ids = list(
        (
            await conn.execute(
                select(agent_sessions.c.id).where(
                    agent_sessions.c.tenant_id == tenant_id, agent_sessions.c.user_id == user_id
                )
            )
        ).scalars()
    )
    for grant_id in grant_ids:
        await svc.bus.publish(conn, "grant", grant_id)
    for session_id in session_ids:
        await svc.bus.publish(conn, "agent_session", session_id)
    await conn.execute(delete(grants).where(grants.c.id.in_(grant_ids)))
    await conn.execute(delete(agent_sessions).where(agent_sessions.c.id.in_(session_ids)))
    await conn.execute(
        delete(session_tickets).where(
            session_tickets.c.tenant_id == tenant_id, session_tickets.c.user_id == user_id
        )
    )
    cs = connect_sessions.c
    mine_sessions = select(cs.id).where(cs.tenant_id == tenant_id, cs.user_id == user_id)
    await conn.execute(delete(auth_flows).where(auth_flows.c.connect_session_id.in_(mine_sessions)))
    await conn.execute(
        delete(connect_sessions).where(cs.tenant_id == tenant_id, cs.user_id == user_id)
    )
    ds = device_sessions.c
    await conn.execute(
        delete(device_sessions).where(ds.tenant_id == tenant_id, ds.user_id == user_id)
    )
    ss = sealed_secrets.c
    await conn.execute(
        delete(sealed_secrets).where(
            ss.tenant_id == tenant_id, ss.user_id == user_id, ss.owner_kind.not_in(KEEP_SEALED)
        )
    )
    rv = revocations.c
    await conn.execute(
        delete(revocations).where(
            rv.tenant_id == tenant_id, rv.user_id == user_id, rv.status != "pending"
        )
    )
    return len(grant_ids), len(session_ids)
