"""Portable ``INSERT ... ON CONFLICT`` for the two supported databases (SQLite, PostgreSQL).

The statement builders take the connection's dialect name, so synchronous code (the audit
chain, which runs inside ``run_sync`` or on a blocking engine) and asynchronous code share them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert


def _insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {dialect!r} is not supported (use SQLite or PostgreSQL)")


def upsert_statement(
    dialect: str, table: Table, values: Mapping[str, Any], *, keys: Sequence[str]
) -> Insert:
    """Insert ``values``, or update the row with the same ``keys`` (a unique constraint)."""
    stmt = _insert(dialect, table).values(dict(values))
    update = {k: v for k, v in values.items() if k not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=update)


def insert_if_missing_statement(
    dialect: str, table: Table, values: Mapping[str, Any], *, keys: Sequence[str]
) -> Insert:
    """Insert ``values`` unless a row with the same ``keys`` exists (rowcount 1 if inserted)."""
    stmt = _insert(dialect, table).values(dict(values))
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


async def upsert(
    conn: AsyncConnection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
) -> None:
    await conn.execute(upsert_statement(conn.dialect.name, table, values, keys=keys))


async def insert_if_missing(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any], *, keys: Sequence[str]
) -> bool:
    """True if inserted."""
    stmt = insert_if_missing_statement(conn.dialect.name, table, values, keys=keys)
    return bool((await conn.execute(stmt)).rowcount)
