"""Grants: a user lets one agent use one of their connections, within scopes and time.

The broker resolves the connection from (tenant, user, provider) and stores its id; a grant's
scopes must be a subset of the scopes the provider granted the connection, never more. Every
change is recorded and invalidates the gateway's caches on every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connections.store import find
from tokenbroker.db.schema import agents, grants
from tokenbroker.errors import BadRequest, NotFound, TokenBrokerError
from tokenbroker.ids import new_id
from tokenbroker.policy.decision import RAW, GrantView
from tokenbroker.records import Event
from tokenbroker.services import Services

MAX_GRANT_SECONDS = 366 * 24 * 3600


class NoConnection(TokenBrokerError):
    code = "no_connection"
    status = 409


@dataclass(frozen=True)
class Grant:
    id: str
    tenant_id: str
    user_id: str
    agent_id: str
    connection_id: str
    provider: str
    scopes: tuple[str, ...]
    operations: tuple[str, ...] | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Grant:
        m = row._mapping
        ops = m["operations"]
        return cls(
            m["id"],
            m["tenant_id"],
            m["user_id"],
            m["agent_id"],
            m["connection_id"],
            m["provider"],
            tuple(m["scopes"]),
            None if ops is None else tuple(ops),
            m["expires_at"],
            m["created_at"],
            m["revoked_at"],
        )

    def view(self) -> GrantView:
        return GrantView(
            id=self.id,
            connection_id=self.connection_id,
            scopes=frozenset(self.scopes),
            operations=None if self.operations is None else frozenset(self.operations),
            expires_at=self.expires_at,
        )

    def public(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "connection_id": self.connection_id,
            "provider": self.provider,
            "scopes": list(self.scopes),
            "operations": None if self.operations is None else list(self.operations),
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"{what} must be a list of non-empty strings")
    return tuple(dict.fromkeys(value))


async def create(
    svc: Services,
    *,
    tenant_id: str,
    user_id: str,
    agent_id: str,
    provider: str,
    scopes: object,
    operations: object = None,
    expires_in: object = None,
    actor: str = "admin",
) -> Grant:
    wanted = _strings(scopes, "scopes")
    ops = None if operations is None else _strings(operations, "operations")
    if expires_in is not None and (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 0 < expires_in <= MAX_GRANT_SECONDS
    ):
        raise BadRequest(f"expires_in must be a number of seconds in 1..{MAX_GRANT_SECONDS}")
    spec = await svc.providers.get(provider)
    if ops is not None:
        known = {op.name for op in spec.operations} | {RAW}
        unknown = sorted(set(ops) - known)
        if unknown:
            raise BadRequest(f"unknown operation(s) for {provider}: {', '.join(unknown)}")
    now = svc.clock.now()
    grant_id = new_id("grt")
    async with svc.engine.begin() as conn:
        agent = (
            await conn.execute(
                select(agents.c.id).where(agents.c.id == agent_id, agents.c.tenant_id == tenant_id)
            )
        ).first()
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}")
        connection = await find(conn, tenant_id, user_id, provider)
        if connection is None:
            raise NoConnection(f"user {user_id!r} has no {provider} connection to grant")
        beyond = sorted(set(wanted) - set(connection.scopes))
        if beyond:
            raise BadRequest(
                f"scopes beyond what the provider granted the connection: {', '.join(beyond)}",
                code="scope_not_granted",
            )
        expires_at = None if expires_in is None else now + timedelta(seconds=int(expires_in))
        await conn.execute(
            insert(grants).values(
                id=grant_id,
                tenant_id=tenant_id,
                user_id=user_id,
                agent_id=agent_id,
                connection_id=connection.id,
                provider=provider,
                scopes=list(wanted),
                operations=None if ops is None else list(ops),
                expires_at=expires_at,
                created_at=now,
            )
        )
        await svc.bus.publish(conn, "grant", grant_id)
    await svc.recorder.record(
        Event(
            type="grant.created",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            provider=provider,
            connection_id=connection.id,
            outcome="ok",
            detail={
                "grant_id": grant_id,
                "agent_id": agent_id,
                "scopes": " ".join(wanted),
                "operations": None if ops is None else " ".join(ops),
                "expires_in": None if expires_in is None else int(expires_in),
            },
        )
    )
    return Grant(
        grant_id,
        tenant_id,
        user_id,
        agent_id,
        connection.id,
        provider,
        wanted,
        ops,
        expires_at,
        now,
        None,
    )


async def list_grants(
    svc: Services, tenant_id: str, *, user_id: str | None, include_revoked: bool = False
) -> list[Grant]:
    query = select(grants).where(grants.c.tenant_id == tenant_id)
    if user_id is not None:
        query = query.where(grants.c.user_id == user_id)
    if not include_revoked:
        query = query.where(grants.c.revoked_at.is_(None))
    async with svc.engine.connect() as conn:
        rows = await conn.execute(query.order_by(grants.c.created_at))
        return [Grant.from_row(r) for r in rows.all()]


async def active_for(
    conn: AsyncConnection, tenant_id: str, user_id: str, agent_id: str, provider: str
) -> list[Grant]:
    rows = await conn.execute(
        select(grants).where(
            grants.c.tenant_id == tenant_id,
            grants.c.user_id == user_id,
            grants.c.agent_id == agent_id,
            grants.c.provider == provider,
            grants.c.revoked_at.is_(None),
        )
    )
    return [Grant.from_row(r) for r in rows.all()]


async def revoke(svc: Services, tenant_id: str, grant_id: str, *, actor: str = "admin") -> Grant:
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        row = (
            await conn.execute(
                select(grants).where(grants.c.id == grant_id, grants.c.tenant_id == tenant_id)
            )
        ).first()
        if row is None:
            raise NotFound(f"no grant {grant_id!r}")
        await conn.execute(
            update(grants)
            .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason="revoked")
        )
        await svc.bus.publish(conn, "grant", grant_id)
    grant = Grant.from_row(row)
    await svc.recorder.record(
        Event(
            type="grant.revoked",
            tenant_id=tenant_id,
            actor=actor,
            user_id=grant.user_id,
            provider=grant.provider,
            connection_id=grant.connection_id,
            outcome="ok",
            detail={"grant_id": grant_id, "agent_id": grant.agent_id},
        )
    )
    return grant


async def end_for_connection(
    conn: AsyncConnection, connection_id: str, now: datetime
) -> list[tuple[str, str]]:
    """A grant ends when its connection is deleted (called in the deleting transaction);
    returns (grant id, agent id) of each grant it ended, for the audit trail."""
    result = await conn.execute(
        update(grants)
        .where(grants.c.connection_id == connection_id, grants.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="connection_deleted")
        .returning(grants.c.id, grants.c.agent_id)
    )
    return [(str(row.id), str(row.agent_id)) for row in result.all()]


def ended_with_connection(
    ended: list[tuple[str, str]],
    *,
    tenant_id: str,
    user_id: str,
    provider: str,
    connection_id: str,
    actor: str,
) -> list[Event]:
    """One ``grant.revoked`` record per grant its connection's deletion ended: a query by agent
    shows when and why the agent lost access."""
    return [
        Event(
            type="grant.revoked",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            provider=provider,
            connection_id=connection_id,
            outcome="ok",
            detail={"grant_id": grant_id, "agent_id": agent_id, "reason": "connection_deleted"},
        )
        for grant_id, agent_id in ended
    ]
