"""Group commit for the recording seam: the gateway never waits on the database per request.

``record()`` puts the event on a bounded queue and returns; a background writer commits
everything that arrived within one window (default 50 ms) in a single transaction. When the
queue is full or the last commit failed, ``healthy`` turns false; the gateway then refuses new
requests with 503 ``store_unavailable`` (``audit.on_failure = "deny"``) rather than proxy
unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.clock import utcnow
from tokenbroker.db.schema import events
from tokenbroker.errors import StoreUnavailable
from tokenbroker.records import Event

log = logging.getLogger("tokenbroker.audit")


class BatchingRecorder:
    def __init__(
        self, engine: AsyncEngine, *, window: float = 0.05, max_queue: int = 50_000
    ) -> None:
        self._engine = engine
        self._window = window
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.lost = 0

    @property
    def healthy(self) -> bool:
        return not self._failing and not self._queue.full()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, event: Event) -> None:
        row = {
            "tenant_id": event.tenant_id,
            "at": event.at or utcnow(),
            "type": event.type,
            "actor": event.actor,
            "user_id": event.user_id,
            "provider": event.provider,
            "connection_id": event.connection_id,
            "outcome": event.outcome,
            "detail": dict(event.detail),
        }
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.lost += 1
            raise StoreUnavailable("the audit queue is full") from None
        if self._task is None:
            self.start()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await asyncio.sleep(self._window)
            batch = [first]
            while not self._queue.empty() and len(batch) < 5000:
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[dict[str, Any]]) -> None:
        delay = 0.1
        while True:
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(insert(events), batch)
                self._failing = False
                return
            except Exception:
                if not self._failing:
                    log.exception("audit commit failed; retrying (new requests are refused)")
                self._failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def flush(self) -> None:
        """Commit everything queued now (shutdown, tests)."""
        batch: list[dict[str, Any]] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._commit(batch)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
