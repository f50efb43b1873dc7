"""The sealed store over SQLite and PostgreSQL: put/get, moves, row swaps, no plaintext at rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from vault_helpers import dump_database

from tokenbroker.db.schema import sealed_secrets
from tokenbroker.errors import CredentialCorrupt
from tokenbroker.secret import Secret
from tokenbroker.vault.envelope import Envelope, Owner, SealContext
from tokenbroker.vault.sealed_store import SealedStore

CONN = Owner("default", "alice", "connection", "c-1")
OTHER = Owner("default", "bob", "connection", "c-2")
AT, RT = "at-canary-51d0e8", "rt-canary-a93b77"


async def test_put_get_upsert(engine: AsyncEngine, envelope: Envelope) -> None:
    store = SealedStore(envelope)
    async with engine.begin() as conn:
        assert await store.get(conn, CONN.context("access_token")) is None
        await store.put(conn, CONN.context("access_token"), Secret("first"))
        await store.put(conn, CONN.context("access_token"), Secret(AT))
        await store.put(conn, CONN.context("refresh_token"), Secret(RT))
    async with engine.connect() as conn:
        assert await store.get(conn, CONN.context("access_token")) == Secret(AT)
        many = await store.get_many(
            conn, "default", "alice", "connection", "c-1", ["access_token", "refresh_token", "x"]
        )
        assert many == {"access_token": Secret(AT), "refresh_token": Secret(RT)}
        count = len((await conn.execute(select(sealed_secrets.c.id))).all())
        assert count == 2
        key_ids = (await conn.execute(select(sealed_secrets.c.key_id))).scalars().all()
        assert set(key_ids) == {"k-1"}


async def test_blob_swapped_between_rows_fails(engine: AsyncEngine, envelope: Envelope) -> None:
    store = SealedStore(envelope)
    async with engine.begin() as conn:
        await store.put(conn, CONN.context("refresh_token"), Secret(RT))
        await store.put(conn, OTHER.context("refresh_token"), Secret("bob-rt"))
        await store.put(conn, OTHER.context("access_token"), Secret("bob-at"))
        stolen = (
            await conn.execute(
                select(sealed_secrets.c.blob).where(sealed_secrets.c.owner_id == "c-1")
            )
        ).scalar_one()
        # The attacker copies alice's blob onto bob's rows (another user, another field).
        await conn.execute(
            update(sealed_secrets).where(sealed_secrets.c.owner_id == "c-2").values(blob=stolen)
        )
    async with engine.connect() as conn:
        for field in ("refresh_token", "access_token"):
            with pytest.raises(CredentialCorrupt, match=f"connection c-2 field {field}"):
                await store.get(conn, OTHER.context(field))
        assert await store.get(conn, CONN.context("refresh_token")) == Secret(RT)


async def test_flipped_byte_in_database_fails(engine: AsyncEngine, envelope: Envelope) -> None:
    store = SealedStore(envelope)
    ctx = CONN.context("refresh_token")
    async with engine.begin() as conn:
        await store.put(conn, ctx, Secret(RT))
        blob = (await conn.execute(select(sealed_secrets.c.blob))).scalar_one()
        bad = bytearray(blob)
        bad[-1] ^= 1
        await conn.execute(update(sealed_secrets).values(blob=bytes(bad)))
        with pytest.raises(CredentialCorrupt):
            await store.get(conn, ctx)


async def test_delete_and_move_owner(engine: AsyncEngine, envelope: Envelope) -> None:
    store = SealedStore(envelope)
    pending = Owner("default", "alice", "connect_session", "s-1")
    async with engine.begin() as conn:
        await store.put(conn, pending.context("access_token"), Secret(AT))
        await store.put(conn, pending.context("refresh_token"), Secret(RT))
        await store.put(conn, OTHER.context("access_token"), Secret("keep"))
        assert await store.move_owner(conn, pending, CONN.context("ignored")) == 2
    async with engine.begin() as conn:
        assert await store.get(conn, pending.context("access_token")) is None
        assert await store.get(conn, CONN.context("refresh_token")) == Secret(RT)
        assert await store.delete_owner(conn, "connection", "c-1") == 2
        assert await store.get(conn, CONN.context("access_token")) is None
        assert await store.get(conn, OTHER.context("access_token")) == Secret("keep")


async def test_move_rolls_back_with_the_transaction(
    engine: AsyncEngine, envelope: Envelope
) -> None:
    store = SealedStore(envelope)
    pending = Owner("default", "alice", "connect_session", "s-1")
    async with engine.begin() as conn:
        await store.put(conn, pending.context("access_token"), Secret(AT))

    async def move_then_fail() -> None:
        async with engine.begin() as conn:
            await store.move_owner(conn, pending, CONN)
            raise RuntimeError("the connection insert failed")

    with pytest.raises(RuntimeError):
        await move_then_fail()
    async with engine.connect() as conn:
        assert await store.get(conn, pending.context("access_token")) == Secret(AT)
        assert await store.get(conn, CONN.context("access_token")) is None


async def test_no_plaintext_at_rest(
    engine: AsyncEngine, envelope: Envelope, tmp_path: Path
) -> None:
    store = SealedStore(envelope)
    async with engine.begin() as conn:
        for i in range(5):
            owner = Owner("default", f"user-{i}", "connection", f"c-{i}")
            await store.put(conn, owner.context("access_token"), Secret(f"{AT}-{i}"))
            await store.put(conn, owner.context("refresh_token"), Secret(f"{RT}-{i}"))
    dump = await dump_database(engine)
    assert b"user-3" in dump  # the dump does see the rows...
    for canary in (AT, RT):
        assert canary.encode() not in dump  # ...but never a token
        assert canary.encode()[:8] not in dump
    db_file = tmp_path / "t.db"
    if db_file.exists():
        raw = db_file.read_bytes()
        assert b"user-3" in raw
        assert AT.encode() not in raw
        assert RT.encode() not in raw


def test_seal_context_owner_roundtrip() -> None:
    ctx = SealContext("t", "u", "connection", "c", "f")
    assert ctx.owner.context("f") == ctx
