"""Portable ``INSERT ... ON CONFLICT`` for the two supported databases (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def _insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {name!r} is not supported (use SQLite or PostgreSQL)")


async def upsert(
    conn: AsyncConnection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
) -> None:
    """Insert ``values``, or update the row with the same ``keys`` (a unique constraint)."""
    stmt = _insert(conn, table).values(dict(values))
    update = {k: v for k, v in values.items() if k not in keys}
    await conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update))


async def insert_if_missing(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any], *, keys: Sequence[str]
) -> bool:
    """Insert ``values`` unless a row with the same ``keys`` exists; True if inserted."""
    stmt = _insert(conn, table).values(dict(values))
    result = await conn.execute(stmt.on_conflict_do_nothing(index_elements=list(keys)))
    return bool(result.rowcount)
