"""Alembic, driven from code: ``tokenbroker migrate`` and the start-up check."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.db.engine import async_url
from tokenbroker.db.schema import DEFAULT_TENANT, tenants
from tokenbroker.errors import ConfigError


def alembic_config(database_url: str) -> Config:
    script_dir = Path(str(files("tokenbroker.db") / "migrations"))
    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    cfg.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Bring the schema to head. Runs in a worker thread when called from a running loop."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


async def ensure_current(engine: AsyncEngine, database_url: str) -> None:
    """Refuse to serve a database whose schema is not at head (run ``tokenbroker migrate``)."""
    head = head_revision(database_url)
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
    if current != head:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, expected {head}: "
            "run `tokenbroker migrate` first"
        )


async def ensure_default_tenant(engine: AsyncEngine, names: list[str]) -> None:
    async with engine.begin() as conn:
        existing = set((await conn.execute(select(tenants.c.id))).scalars())
        for name in [DEFAULT_TENANT, *names]:
            if name not in existing:
                await conn.execute(insert(tenants).values(id=name, created_at=datetime.now(UTC)))
                existing.add(name)


async def upgrade_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()
