"""Start-up key checks: a wrong key file stops the broker before it writes anything (B4)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from vault_helpers import dump_database, make_ring

from tokenbroker.db.schema import key_checks
from tokenbroker.errors import KeyError_
from tokenbroker.secret import Secret
from tokenbroker.vault.envelope import Envelope, Owner
from tokenbroker.vault.key_checks import ensure_key_check, verify_keys
from tokenbroker.vault.keydoc import promoted, retired
from tokenbroker.vault.keyring import StaticKeyRing
from tokenbroker.vault.sealed_store import SealedStore

OWNER = Owner("default", "alice", "connection", "c-1")


async def _start(engine: AsyncEngine, envelope: Envelope) -> None:
    """What ``serve`` does: verify (read-only), then record the active key's check."""
    async with engine.begin() as conn:
        await verify_keys(conn, envelope)
        await ensure_key_check(conn, envelope)


async def test_fresh_database_then_restart(engine: AsyncEngine, envelope: Envelope) -> None:
    await _start(engine, envelope)
    await _start(engine, envelope)
    async with engine.connect() as conn:
        ids = (await conn.execute(select(key_checks.c.key_id))).scalars().all()
    assert ids == ["k-1"]


async def test_wrong_key_file_refused_and_nothing_written(
    engine: AsyncEngine, envelope: Envelope
) -> None:
    await _start(engine, envelope)
    async with engine.begin() as conn:
        await SealedStore(envelope).put(conn, OWNER.context("refresh_token"), Secret("rt"))
    before = await dump_database(engine)
    for wrong in (make_ring("k-1"), make_ring("k-other")):  # same id new material; other id
        with pytest.raises(KeyError_, match="the key file does not match this database: key k-1"):
            await _start(engine, Envelope(StaticKeyRing(wrong)))
    assert await dump_database(engine) == before


async def test_unknown_key_in_sealed_values_refused(engine: AsyncEngine) -> None:
    old = make_ring("k-1")
    async with engine.begin() as conn:  # a value sealed, but no check row (e.g. restored dump)
        await SealedStore(Envelope(StaticKeyRing(old))).put(
            conn, OWNER.context("refresh_token"), Secret("rt")
        )
    with pytest.raises(KeyError_, match="key k-1 seals stored values but is not in"):
        await _start(engine, Envelope(StaticKeyRing(make_ring("k-2"))))


async def test_retired_key_check_is_skipped(engine: AsyncEngine) -> None:
    ring = make_ring("k-1", "k-2", active="k-1")
    await _start(engine, Envelope(StaticKeyRing(ring)))
    later = retired(promoted(ring, "k-2"), "k-1", in_use=0)
    await _start(engine, Envelope(StaticKeyRing(later)))
    async with engine.connect() as conn:
        ids = sorted((await conn.execute(select(key_checks.c.key_id))).scalars().all())
    assert ids == ["k-1", "k-2"]
