"""Fixtures for the vault tests: key rings, an envelope, and a database (SQLite or PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from vault_helpers import make_ring

from tokenbroker.db.schema import metadata
from tokenbroker.vault.envelope import Envelope
from tokenbroker.vault.keyring import KeyRing, StaticKeyRing

PG_URLS = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
)


@pytest.fixture
def ring() -> KeyRing:
    return make_ring("k-1")


@pytest.fixture
def envelope(ring: KeyRing) -> Envelope:
    return Envelope(StaticKeyRing(ring))


async def _postgres_engine() -> AsyncEngine | None:
    for url in PG_URLS:
        engine = create_async_engine(url, connect_args={"timeout": 3})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            await engine.dispose()
            continue
        return engine
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
        async with eng.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield eng
        await eng.dispose()
        return
    base = await _postgres_engine()
    if base is None:
        message = "PostgreSQL on 127.0.0.1:5432 does not answer"
        if os.environ.get("TOKENBROKER_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    schema = f"tb_vault_{uuid.uuid4().hex[:12]}"
    async with base.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = base.execution_options(schema_translate_map={None: schema})
    try:
        async with eng.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield eng
    finally:
        async with base.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await base.dispose()
