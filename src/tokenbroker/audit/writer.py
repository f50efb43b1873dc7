"""Group commit into the hash chain: the gateway never waits on the database per request.

``record()`` puts the event on a bounded queue and returns; a background writer commits what
arrived within one window (default 50 ms, counted from the moment the batch's first event was
queued) in a single transaction per batch (:func:`tokenbroker.audit.chain.append`, one tenant
after another in a fixed order). ``commit()`` queues the event and waits for the commit of
that very record: management flows use it (they read the table right after), and so does the
gateway with ``audit.durability = "sync"``; a waiting commit cuts the window short.

A commit is synchronous code (:func:`~tokenbroker.audit.chain.append_all`): on an async engine
it runs inside ``run_sync``; on a blocking engine (SQLite in the audit writer process) it runs
in a worker thread, so the event loop keeps reading records meanwhile.

When the queue is full or the last commit failed, ``healthy`` turns false; the gateway then
refuses new requests with 503 ``store_unavailable`` (``audit.on_failure = "deny"``) rather
than proxy unrecorded. A failed batch is retried with backoff, never dropped; a process killed
outright loses at most what was queued within the last window and the commit in flight
(``tests/audit_trail/test_durability.py`` kills one under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.audit.chain import Prepared, append_all, prepare
from tokenbroker.audit.pseudonyms import Pseudonyms
from tokenbroker.clock import utcnow
from tokenbroker.errors import StoreUnavailable
from tokenbroker.records import Event

log = logging.getLogger("tokenbroker.audit")
MAX_BATCH = 5000
BACK_PRESSURE_WINDOWS = 2
_Item = tuple[Prepared, float, "asyncio.Future[None] | None"]  # record, queued, waiter


class ChainedRecorder:
    def __init__(
        self,
        engine: AsyncEngine | Engine,
        *,
        window: float = 0.05,
        max_queue: int = 50_000,
        pseudonyms: Pseudonyms | None = None,
        on_progress: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._engine = engine
        # Told (records committed, failing) after each commit and when commits start failing:
        # the audit writer process reports both to the gateway (audit/writer_process.py).
        self._on_progress = on_progress
        self._window = window
        # How long recent commits took: a batch's commit starts that long (with a margin)
        # before its window ends, so it is durable when the window ends and callers do not
        # hit the back-pressure below merely because a commit is in flight.
        self._recent_commits: deque[float] = deque(maxlen=16)
        self._commit_seconds = 0.0
        self._pseudonyms = pseudonyms
        self._queue: deque[_Item] = deque()
        self._max_queue = max_queue
        self._arrived = asyncio.Event()
        self._urgent = asyncio.Event()
        self._lock = asyncio.Lock()  # one commit at a time: flush() never re-commits a batch
        self._task: asyncio.Task[None] | None = None
        self._batch: list[_Item] = []
        self._failing = False
        self.lost = 0

    @property
    def healthy(self) -> bool:
        return not self._failing and len(self._queue) < self._max_queue

    @property
    def queue_depth(self) -> int:
        """Events not committed yet (queued, or in the batch being committed)."""
        return len(self._queue) + len(self._batch)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, event: Event) -> None:
        """Queue ``event``; it is committed within one window (the commit starts early enough
        to end by then). When the oldest uncommitted event is more than two windows old (a
        slow or stalled database), the caller waits for the commit instead: back-pressure, so
        an answered request never waits unrecorded for long. (At one window, every commit
        that ran a little longer than expected stalled all requests: measured, 10% less
        throughput and twice the p99 latency, for no gain in what a crash can lose.)"""
        if self._lag() <= BACK_PRESSURE_WINDOWS * self._window:
            self._put(event, None)
            return
        # Back-pressure without cutting the window short: waiting callers join the batch being
        # collected, so commits stay large (one transaction per window) while the writer
        # catches up.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(event, done)
        if self._failing:
            self._fail_waiters([self._queue[-1]])
        await asyncio.shield(done)

    def _lag(self) -> float:
        oldest = self._batch or self._queue
        return time.monotonic() - oldest[0][1] if oldest else 0.0

    async def commit(self, event: Event) -> None:
        """Queue ``event`` and return once it is committed (StoreUnavailable if it cannot be
        yet; it stays queued and is retried)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(event, done)
        self._urgent.set()
        if self._failing:
            self._fail_waiters([self._queue[-1]])
        await asyncio.shield(done)

    def enqueue(self, batch: Sequence[Prepared]) -> None:
        """Queue records prepared elsewhere, without waiting (the writer process: its gateway
        waits instead, and bounds what it has outstanding)."""
        now = time.monotonic()
        self._queue.extend([(item, now, None) for item in batch])
        self._wake()

    def hurry(self) -> None:
        """Commit what is queued now rather than at the end of the window."""
        self._urgent.set()

    def _put(self, event: Event, done: asyncio.Future[None] | None) -> None:
        if len(self._queue) >= self._max_queue:
            self.lost += 1
            raise StoreUnavailable("the audit queue is full")
        self._queue.append((prepare(event, event.at or utcnow()), time.monotonic(), done))
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = None
            self.start()

    async def _run(self) -> None:
        while True:
            # Items leave the queue only into self._batch, which close() still commits if this
            # task is cancelled in the middle of a window.
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            first = self._queue.popleft()
            self._batch.append(first)
            wait = first[1] + self._window - self._commit_seconds - time.monotonic()
            if wait > 0 and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), wait)
            self._urgent.clear()
            while self._queue and len(self._batch) < MAX_BATCH:
                self._batch.append(self._queue.popleft())
            async with self._lock:
                started = time.monotonic()
                await self._commit(self._batch)
                self._batch = []
                self._learn(time.monotonic() - started)

    def _learn(self, took: float) -> None:
        self._recent_commits.append(took)
        # Beyond half a window, back-pressure is the right answer: the database is too slow.
        self._commit_seconds = min(1.25 * max(self._recent_commits), self._window / 2)

    async def _commit(self, batch: Sequence[_Item]) -> None:
        if not batch:
            return
        delay = 0.1
        while True:
            try:
                await self._write(batch)
                self._failing = False
                break
            except Exception:
                if not self._failing:
                    log.exception("audit commit failed; retrying (new requests are refused)")
                    if self._on_progress is not None:
                        self._on_progress(0, True)
                self._failing = True
                self._fail_waiters([*batch, *self._queue])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self._on_progress is not None:
            self._on_progress(len(batch), False)
        for item in batch:
            if item[2] is not None and not item[2].done():
                item[2].set_result(None)

    @staticmethod
    def _fail_waiters(items: Sequence[_Item]) -> None:
        """Waiters learn at once that the trail cannot be written; their events stay queued."""
        for item in items:
            if item[2] is not None and not item[2].done():
                item[2].set_exception(StoreUnavailable("the audit trail is unavailable"))
                item[2].exception()  # retrieved: the waiter may be gone

    async def _write(self, batch: Sequence[_Item]) -> None:
        by_tenant: dict[str, list[Prepared]] = {}
        for prepared, _, _ in batch:
            by_tenant.setdefault(prepared.tenant_id, []).append(prepared)
        engine = self._engine
        if isinstance(engine, AsyncEngine):
            async with engine.begin() as conn:
                await conn.run_sync(append_all, by_tenant, self._pseudonyms)
        else:
            await asyncio.to_thread(self._write_blocking, engine, by_tenant)

    def _write_blocking(self, engine: Engine, by_tenant: dict[str, list[Prepared]]) -> None:
        with engine.begin() as conn:
            append_all(conn, by_tenant, self._pseudonyms)

    async def flush(self) -> None:
        """Commit everything queued now (shutdown, erasure, tests)."""
        async with self._lock:
            while self._queue:
                self._batch.append(self._queue.popleft())
            if self._batch:
                await self._commit(self._batch)
            self._batch = []

    async def close(self) -> None:
        """Commit everything queued and stop. The commit in flight finishes first (``flush``
        waits for it), so the writer task is never cancelled in the middle of a commit."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


BatchingRecorder = ChainedRecorder  # the name the gateway and older tests know
