"""Cache invalidation across replicas sharing one database.

A write that narrows what agents may do (grant revoked, session revoked, connection deleted or
refreshed) appends a row to ``invalidations`` in its own transaction and bumps this process's
generation at once. Every replica polls the newest row id (one indexed query every
``interval``, default 0.2 s) and bumps its generation when it moved; hot-path caches compare
generations and drop their entries. Works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.clock import Clock
from tokenbroker.db.schema import invalidations

log = logging.getLogger("tokenbroker.invalidation")


class InvalidationBus:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._last_id = 0
        self.generation = 0

    async def publish(self, conn: AsyncConnection, kind: str, key: str) -> None:
        """Call inside the transaction that made the change; takes effect here at once."""
        await conn.execute(insert(invalidations).values(kind=kind, key=key, at=self._clock.now()))
        self.generation += 1

    async def poll(self) -> bool:
        async with self._engine.connect() as conn:
            newest = (await conn.execute(select(func.max(invalidations.c.id)))).scalar()
        newest = int(newest or 0)
        if newest != self._last_id:
            self._last_id = newest
            self.generation += 1
            return True
        return False

    async def run(self, interval: float = 0.2) -> None:
        sweeps = 0
        while True:
            try:
                await self.poll()
                sweeps += 1
                if sweeps % 3000 == 0:  # about every 10 minutes: forget rows nobody needs
                    await self._prune()
            except Exception:
                log.exception("invalidation poll failed; dropping caches to stay safe")
                self.generation += 1
            await asyncio.sleep(interval)

    async def _prune(self) -> None:
        cutoff = self._clock.now() - timedelta(hours=1)
        async with self._engine.begin() as conn:
            newest = (await conn.execute(select(func.max(invalidations.c.id)))).scalar()
            await conn.execute(
                delete(invalidations).where(
                    invalidations.c.at < cutoff, invalidations.c.id != (newest or 0)
                )
            )
