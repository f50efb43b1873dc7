"""Helpers shared by the vault tests (a uniquely named module: tests have no packages)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.db.schema import metadata
from tokenbroker.vault.keyring import KeyEntry, KeyRing


def make_ring(*ids: str, active: str | None = None) -> KeyRing:
    ids = ids or ("k-1",)
    active = active or ids[0]
    entries = tuple(
        KeyEntry(
            id=i,
            state="active" if i == active else "decrypt_only",
            created_at="2026-01-01T00:00:00+00:00",
            material=secrets.token_bytes(32),
        )
        for i in ids
    )
    return KeyRing(active_id=active, entries=entries)


class SwitchableKeys:
    """A key-ring provider whose ring a test can replace; counts reloads."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.reloads: list[str | None] = []
        self.on_reload: KeyRing | None = None

    def current(self) -> KeyRing:
        return self.ring

    def reload_now(self, key_id: str | None = None) -> KeyRing:
        self.reloads.append(key_id)
        if self.on_reload is not None:
            self.ring = self.on_reload
        return self.ring


async def dump_database(engine: AsyncEngine) -> bytes:
    """Every row of every table, as bytes (what an offline thief of the database would see)."""
    out = bytearray()
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
                    out += b"\x00"
    return bytes(out)
