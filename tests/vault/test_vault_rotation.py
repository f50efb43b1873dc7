"""Online rotation: add, promote, rewrap, retire; compare-and-swap; the check report (B3)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from vault_helpers import make_ring

from tokenbroker.db.schema import sealed_secrets
from tokenbroker.errors import KeyError_
from tokenbroker.secret import Secret
from tokenbroker.vault import rotation
from tokenbroker.vault.envelope import Envelope, Owner
from tokenbroker.vault.keydoc import promoted
from tokenbroker.vault.keyring import (
    ReloadingKeyRing,
    StaticKeyRing,
    add_key,
    create_key_file,
    promote_key,
    retire_key,
)
from tokenbroker.vault.rotation import (
    _read_batch,
    _swap_batch,
    check_all,
    count_by_key,
    rewrap_all,
)
from tokenbroker.vault.sealed_store import SealedStore

SECRET = "tok-canary-0c4f9e"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _owner(i: int) -> Owner:
    return Owner("default", f"user-{i}", "connection", f"c-{i}")


async def _fill(engine: AsyncEngine, store: SealedStore, n: int) -> None:
    async with engine.begin() as conn:
        for i in range(n):
            await store.put(conn, _owner(i).context("refresh_token"), Secret(f"{SECRET}-{i}"))


async def _read_all(engine: AsyncEngine, store: SealedStore, n: int) -> list[Secret | None]:
    async with engine.connect() as conn:
        return [await store.get(conn, _owner(i).context("refresh_token")) for i in range(n)]


async def test_rotation_end_to_end(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = create_key_file(path, now=datetime(2026, 1, 1, tzinfo=UTC)).active_id
    clock = FakeClock()
    keys = ReloadingKeyRing(path, clock=clock)
    envelope = Envelope(keys)
    store = SealedStore(envelope)
    await _fill(engine, store, 7)
    expected = [Secret(f"{SECRET}-{i}") for i in range(7)]

    second = add_key(path)
    promote_key(path, second)
    clock.now += 3
    assert keys.current().active_id == second
    assert await count_by_key(engine) == {first: 7}
    assert await _read_all(engine, store, 7) == expected  # old values still open

    with pytest.raises(KeyError_, match="still seals 7 value"):
        retire_key(path, first, in_use=(await count_by_key(engine)).get(first, 0))

    assert await rewrap_all(engine, envelope, batch_size=3) == 7
    assert await count_by_key(engine) == {second: 7}
    assert await rewrap_all(engine, envelope, batch_size=3) == 0

    retire_key(path, first, in_use=(await count_by_key(engine)).get(first, 0))
    clock.now += 3
    assert not keys.current().can_open(first)
    assert await _read_all(engine, store, 7) == expected
    report = await check_all(engine, envelope, batch_size=2)
    assert report.ok
    assert report.total == 7
    assert report.by_key == {second: 7}


async def test_rewrap_does_not_overwrite_a_concurrent_write(engine: AsyncEngine) -> None:
    ring = make_ring("k-1", "k-2", active="k-1")
    old = Envelope(StaticKeyRing(ring))
    await _fill(engine, SealedStore(old), 2)
    new_ring = promoted(ring, "k-2")
    envelope = Envelope(StaticKeyRing(new_ring))
    store = SealedStore(envelope)
    async with engine.begin() as conn:
        rows = await _read_batch(conn, after_id=0, limit=10, not_key="k-2")
    assert len(rows) == 2
    async with engine.begin() as conn:  # a refresh writes user-0's token meanwhile
        await store.put(conn, _owner(0).context("refresh_token"), Secret("newer"))
    async with engine.begin() as conn:
        assert await _swap_batch(conn, envelope, rows) == 1
    values = await _read_all(engine, store, 2)
    assert values == [Secret("newer"), Secret(f"{SECRET}-1")]
    assert await count_by_key(engine) == {"k-2": 2}


async def test_check_all_reports_failures_without_plaintext(engine: AsyncEngine) -> None:
    ring = make_ring("k-1", "k-2", active="k-1")
    envelope = Envelope(StaticKeyRing(ring))
    store = SealedStore(envelope)
    await _fill(engine, store, 4)
    stranger = Envelope(StaticKeyRing(make_ring("k-x")))
    foreign = stranger.seal(b"whatever", _owner(2).context("refresh_token"))
    async with engine.begin() as conn:
        blob = (
            await conn.execute(
                select(sealed_secrets.c.blob).where(sealed_secrets.c.owner_id == "c-1")
            )
        ).scalar_one()
        tampered = bytearray(blob)
        tampered[-3] ^= 0x10
        await conn.execute(
            update(sealed_secrets)
            .where(sealed_secrets.c.owner_id == "c-1")
            .values(blob=bytes(tampered))
        )
        await conn.execute(
            update(sealed_secrets)
            .where(sealed_secrets.c.owner_id == "c-2")
            .values(blob=foreign, key_id="k-x")
        )
    report = await check_all(engine, envelope, batch_size=3)
    assert not report.ok
    assert report.total == 4
    assert report.by_key == {"k-1": 3, "k-x": 1}
    failures = {(f.owner_id, f.field, f.key_id, f.reason) for f in report.failures}
    assert failures == {
        ("c-1", "refresh_token", "k-1", "tampered"),
        ("c-2", "refresh_token", "k-x", "unknown_key"),
    }
    assert SECRET not in repr(report)
    # rewrap skips a DEK it cannot unwrap (the unknown key still counts as in use); a damaged
    # ciphertext moves with its intact DEK and still fails to open afterwards
    later = Envelope(StaticKeyRing(promoted(ring, "k-2")))
    assert await rewrap_all(engine, later) == 3
    assert await count_by_key(engine) == {"k-2": 3, "k-x": 1}
    after = await check_all(engine, later)
    assert {(f.owner_id, f.reason) for f in after.failures} == {
        ("c-1", "tampered"),
        ("c-2", "unknown_key"),
    }


async def test_rewrap_leaves_sqlites_write_lock_free_between_batches(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one write lock: between batches the rewrap pauses at least as long as the
    busy-retry sleep of a waiting writer, so a serving broker's commits go on meanwhile
    (``bench/reliability.py --only rotation``). PostgreSQL's row locks need no pause."""
    path = tmp_path / "keys.json"
    create_key_file(path, now=datetime(2026, 1, 1, tzinfo=UTC))
    keys = ReloadingKeyRing(path, clock=FakeClock())
    envelope = Envelope(keys)
    await _fill(engine, SealedStore(envelope), 5)
    promote_key(path, add_key(path))
    keys.reload_now()
    pauses: list[float] = []

    async def recorded(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(rotation.asyncio, "sleep", recorded)
    assert await rewrap_all(engine, envelope, batch_size=2) == 5
    if engine.dialect.name == "sqlite":
        assert len(pauses) == 3  # after each of the three batches
        assert min(pauses) >= rotation.SQLITE_PAUSE_SECONDS
    else:
        assert pauses == []
