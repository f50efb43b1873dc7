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
import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.clock import utcnow
from tokenbroker.errors import StoreUnavailable
from tokenbroker.records import Event

log = logging.getLogger("tokenbroker.audit")
_COLUMNS = (
    "tenant_id",
    "at",
    "type",
    "actor",
    "user_id",
    "provider",
    "connection_id",
    "outcome",
    "detail",
)


class BatchingRecorder:
    def __init__(
        self, engine: AsyncEngine, *, window: float = 0.05, max_queue: int = 50_000
    ) -> None:
        self._engine = engine
        self._window = window
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=max_queue)
        sqlite = engine.dialect.name == "sqlite"
        self._sqlite = sqlite
        marks = ", ".join("?" if sqlite else f"${i}" for i in range(1, len(_COLUMNS) + 1))
        # The driver's own executemany: no per-row statement compilation or type processing.
        self._sql = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({marks})"  # noqa: S608
        self._task: asyncio.Task[None] | None = None
        self._batch: list[tuple[Any, ...]] = []
        self._failing = False
        self.lost = 0

    @property
    def healthy(self) -> bool:
        return not self._failing and not self._queue.full()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, event: Event) -> None:
        at = event.at or utcnow()
        row = (
            event.tenant_id,
            # SQLite keeps naive UTC text in SQLAlchemy's format; PostgreSQL takes the datetime.
            at.replace(tzinfo=None).isoformat(" ") if self._sqlite else at,
            event.type,
            event.actor,
            event.user_id,
            event.provider,
            event.connection_id,
            event.outcome,
            json.dumps(event.detail, sort_keys=True, separators=(",", ":")),
        )
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.lost += 1
            raise StoreUnavailable("the audit queue is full") from None
        if self._task is None:
            self.start()

    async def _run(self) -> None:
        while True:
            # Rows leave the queue only into self._batch, which close() still commits if this
            # task is cancelled in the middle of a window.
            self._batch.append(await self._queue.get())
            await asyncio.sleep(self._window)
            while not self._queue.empty() and len(self._batch) < 5000:
                self._batch.append(self._queue.get_nowait())
            await self._commit(self._batch)
            self._batch = []

    async def _commit(self, batch: list[tuple[Any, ...]]) -> None:
        delay = 0.1
        while True:
            try:
                async with self._engine.begin() as conn:
                    await conn.exec_driver_sql(self._sql, batch)
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
        batch, self._batch = self._batch, []
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
