"""Registered agents. The secret is shown once and stored only as a digest.

An agent secret reads ``tba.<agent id>.<random>``: the id lets the broker find the agent, the
random part (256 bits) is what proves it; only its SHA-256 is kept.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tokenbroker.db.schema import agent_sessions, agents, grants
from tokenbroker.errors import BadRequest, Conflict, NotFound, Unauthorized
from tokenbroker.ids import digest, new_id, new_secret_value
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services

PREFIX = "tba."


@dataclass(frozen=True)
class Agent:
    id: str
    tenant_id: str
    name: str
    created_at: datetime
    secret_rotated_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "secret_rotated_at": None
            if self.secret_rotated_at is None
            else self.secret_rotated_at.isoformat().replace("+00:00", "Z"),
        }


def _agent(row: Any) -> Agent:
    m = row._mapping
    return Agent(m["id"], m["tenant_id"], m["name"], m["created_at"], m["secret_rotated_at"])


def _new_secret(agent_id: str) -> Secret:
    return Secret(f"{PREFIX}{agent_id}.{new_secret_value()}")


def check_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise BadRequest("name must be a non-empty string of at most 255 characters")
    if any(ord(c) < 32 for c in value):
        raise BadRequest("name must not contain control characters")
    return value.strip()


async def register(
    svc: Services, tenant_id: str, name: str, *, actor: str = "admin"
) -> tuple[Agent, Secret]:
    agent_id = new_id("agt")
    secret = _new_secret(agent_id)
    now = svc.clock.now()
    try:
        async with svc.engine.begin() as conn:
            await conn.execute(
                insert(agents).values(
                    id=agent_id,
                    tenant_id=tenant_id,
                    name=name,
                    secret_hash=digest(secret.reveal()),
                    created_at=now,
                )
            )
    except IntegrityError:
        raise Conflict(f"an agent named {name!r} already exists") from None
    await svc.recorder.record(
        Event(
            type="agent.registered",
            tenant_id=tenant_id,
            actor=actor,
            outcome="ok",
            detail={"agent_id": agent_id, "name": name},
        )
    )
    return Agent(agent_id, tenant_id, name, now, None), secret


async def list_agents(svc: Services, tenant_id: str) -> list[Agent]:
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(agents).where(agents.c.tenant_id == tenant_id).order_by(agents.c.created_at)
        )
        return [_agent(r) for r in rows.all()]


async def get(svc: Services, tenant_id: str, agent_id: str) -> Agent:
    async with svc.engine.connect() as conn:
        row = (
            await conn.execute(
                select(agents).where(agents.c.id == agent_id, agents.c.tenant_id == tenant_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"no agent {agent_id!r}")
    return _agent(row)


async def rotate_secret(
    svc: Services, tenant_id: str, agent_id: str, *, actor: str = "admin"
) -> Secret:
    secret = _new_secret(agent_id)
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        result = await conn.execute(
            update(agents)
            .where(agents.c.id == agent_id, agents.c.tenant_id == tenant_id)
            .values(secret_hash=digest(secret.reveal()), secret_rotated_at=now)
        )
        if result.rowcount != 1:
            raise NotFound(f"no agent {agent_id!r}")
        await svc.bus.publish(conn, "agent", agent_id)
    await svc.recorder.record(
        Event(
            type="agent.secret_rotated",
            tenant_id=tenant_id,
            actor=actor,
            outcome="ok",
            detail={"agent_id": agent_id},
        )
    )
    return secret


async def remove(svc: Services, tenant_id: str, agent_id: str, *, actor: str = "admin") -> None:
    """Deleting an agent ends its grants and sessions with it."""
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        result = await conn.execute(
            delete(agents).where(agents.c.id == agent_id, agents.c.tenant_id == tenant_id)
        )
        if result.rowcount != 1:
            raise NotFound(f"no agent {agent_id!r}")
        await conn.execute(
            update(grants)
            .where(grants.c.agent_id == agent_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason="agent_removed")
        )
        await conn.execute(
            update(agent_sessions)
            .where(agent_sessions.c.agent_id == agent_id, agent_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await svc.bus.publish(conn, "agent", agent_id)
    await svc.recorder.record(
        Event(
            type="agent.removed",
            tenant_id=tenant_id,
            actor=actor,
            outcome="ok",
            detail={"agent_id": agent_id},
        )
    )


async def authenticate(svc: Services, presented: str) -> Agent:
    """The agent a secret belongs to; 401 for anything else (same answer for every failure)."""
    parts = presented.split(".")
    if len(parts) != 3 or f"{parts[0]}." != PREFIX:
        raise Unauthorized("the agent secret is not valid")
    async with svc.engine.connect() as conn:
        row = (await conn.execute(select(agents).where(agents.c.id == parts[1]))).first()
    expected = row._mapping["secret_hash"] if row is not None else digest("-")
    if row is None or not hmac.compare_digest(expected, digest(presented)):
        raise Unauthorized("the agent secret is not valid")
    return _agent(row)
