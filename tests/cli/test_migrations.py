"""The Alembic migrations build exactly the schema the code describes (``db/schema.py``), on
SQLite and on PostgreSQL, and step back down cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from tokenbroker.db.engine import create_engine
from tokenbroker.db.migrate import alembic_config, upgrade_async
from tokenbroker.db.schema import metadata


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _assert_schema_matches_the_code(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_the_migrations_build_the_schema_the_code_describes(database_url: str) -> None:
    await upgrade_async(database_url)
    await _assert_schema_matches_the_code(database_url)


async def test_every_migration_steps_down_and_up_again(database_url: str) -> None:
    config = alembic_config(database_url)
    await upgrade_async(database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await upgrade_async(database_url)
    await _assert_schema_matches_the_code(database_url)
