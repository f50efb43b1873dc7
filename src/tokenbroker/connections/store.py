"""Reading and writing connection rows. Tokens live in the vault, keyed by the connection id."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connections.model import Connection
from tokenbroker.db.schema import connections


async def list_for_user(
    conn: AsyncConnection, tenant_id: str, user_id: str | None
) -> list[Connection]:
    query = select(connections).where(connections.c.tenant_id == tenant_id)
    if user_id is not None:
        query = query.where(connections.c.user_id == user_id)
    rows = (await conn.execute(query.order_by(connections.c.created_at, connections.c.id))).all()
    return [Connection.from_row(r) for r in rows]


async def get(conn: AsyncConnection, tenant_id: str, connection_id: str) -> Connection | None:
    """A connection of this tenant, or None: another tenant's id is indistinguishable from none."""
    row = (
        await conn.execute(
            select(connections).where(
                connections.c.id == connection_id, connections.c.tenant_id == tenant_id
            )
        )
    ).first()
    return None if row is None else Connection.from_row(row)


async def find(
    conn: AsyncConnection, tenant_id: str, user_id: str, provider: str
) -> Connection | None:
    row = (
        await conn.execute(
            select(connections).where(
                connections.c.tenant_id == tenant_id,
                connections.c.user_id == user_id,
                connections.c.provider == provider,
            )
        )
    ).first()
    return None if row is None else Connection.from_row(row)


def merged_scopes(*groups: Sequence[str]) -> tuple[str, ...]:
    """Union preserving first-seen order (incremental consent asks for the union)."""
    seen: dict[str, None] = {}
    for group in groups:
        for scope in group:
            seen.setdefault(scope, None)
    return tuple(seen)
