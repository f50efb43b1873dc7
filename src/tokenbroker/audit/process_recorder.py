"""The gateway's recorder when the audit is written by a process of its own.

Encoding, hashing and committing two records per proxied request took about a third of a
gateway worker's CPU time (``bench/gateway.py``). With ``[audit] writer = "process"`` a worker
instead hands each record to its writer process (:mod:`tokenbroker.audit.writer_process`): a
tuple, kept in the worker's outbox and sent with the others of the same commit window in one
frame, just early enough for the writer to commit it by the end of that window, or sooner once
:data:`SEND_AT_MOST` records are waiting. The writer commits each frame as it arrives, so a
quiet window costs one system call, one wake-up of the writer and one commit, and a busy one a
commit per :data:`SEND_AT_MOST` records. (On a virtual machine each wake-up of a process on
another core costs more than the audit work it carries: a frame every 5 ms took a fifth of the
writer's CPU, ``bench/audit_writer.py``.) How early is learnt: the time from sending a frame to
its commit being reported, with a margin, at most half a window. The worker keeps every frame
it sent, as bytes (the records' objects are freed once framed), until the writer reports its
records committed, so it keeps the in-process writer's guarantees:

- ``sync`` durability and management-style waits get their answer once the record is
  committed (their record is sent at once and the writer commits it at once);
- back-pressure: when the oldest unconfirmed record is more than two windows old, callers
  wait for the commit, as with :class:`~tokenbroker.audit.writer.ChainedRecorder`;
- ``healthy`` is false while the writer reports failing commits, while it is being
  restarted, or when too many records are unconfirmed (``on_failure = "deny"`` refuses then);
- the writer process dying is noticed at once: it is started again and every record it had
  not confirmed is sent again (a record committed just before the crash, and not yet
  confirmed, can therefore appear twice, never zero times).

Records already handed over survive the worker being killed: the writer commits what it has
received when the worker's end of the socket closes. A worker killed outright loses what was
still in its outbox: records younger than one window, as the in-process writer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import socket
import sys
import time
from collections import deque
from pathlib import Path

from tokenbroker.audit.wire import Record, frame, read_frame, to_record
from tokenbroker.audit.writer import BACK_PRESSURE_WINDOWS
from tokenbroker.errors import StoreUnavailable
from tokenbroker.records import Event

log = logging.getLogger("tokenbroker.audit")
START_SECONDS = 60.0
STOP_SECONDS = 30.0
# Records: a fuller outbox is sent at once, so a busy worker sends frames of this size rather
# than one a window. Measured with bench/gateway.py (2 cores, the writer beside the load
# generator): windows of ~800 records made the writer work in bursts whose memory traffic
# slowed the gateway worker on the other core by ~20% (a dummy process streaming memory on
# that core does the same; one only spinning does not) and starved the load generator; frames
# of at most 128 records cost the writer a few µs more per record and the worker ~15 µs less
# per request (audit on/off throughput 0.75-0.79 -> 0.90-0.95).
SEND_AT_MOST = 128
LEARN_FROM = 16  # frames: the commit delay the send time allows for is the longest of these


class WriterProcessExited(RuntimeError):
    pass


class _Frame:
    """Records ``last - count + 1`` to ``last``, framed. ``queued``: when the first of them was
    put; ``sent``: when they were written to the writer process (None: not yet, no writer
    process was running)."""

    __slots__ = ("count", "last", "payload", "queued", "sent")

    def __init__(self, last: int, count: int, queued: float, payload: bytes) -> None:
        self.last, self.count, self.queued, self.payload = last, count, queued, payload
        self.sent: float | None = None


class ProcessRecorder:
    def __init__(
        self, config: Path, *, window: float, sync: bool = False, max_queue: int = 50_000
    ) -> None:
        self._config = config
        self._window = window
        self._sync = sync
        self._max_queue = max_queue
        self._put_count = 0  # records numbered 1, 2, ... in the order they were put
        self._confirmed = 0  # every record up to this number is committed
        self._base = 0  # records confirmed by earlier writer processes
        self._outbox: list[Record] = []
        self._outbox_since = 0.0  # when the outbox's first record was put
        # Records sent (or, while no writer process runs, framed) and not confirmed yet, as
        # the frames that carried them: kept as bytes, not as the records' objects, until the
        # writer reports them committed, and sent again to a restarted writer.
        self._frames: deque[_Frame] = deque()
        # A record waits in the outbox this long; the writer then has the rest of the window to
        # commit it (see _learn). Half a window until the first commits have been timed.
        self._send_after = window / 2
        self._commit_delays: deque[float] = deque(maxlen=LEARN_FROM)
        self._urgent = False
        self._scheduled: asyncio.TimerHandle | asyncio.Handle | None = None
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._failing = False
        self._alive = False
        self._closing = False
        self._proc: asyncio.subprocess.Process | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self.lost = 0
        self.frames_sent = 0  # frames of records handed to writer processes

    @property
    def healthy(self) -> bool:
        return self._alive and not self._failing and self.queue_depth < self._max_queue

    @property
    def queue_depth(self) -> int:
        """Records the writer process has not confirmed committed."""
        return self._put_count - self._confirmed

    # --- the writer process -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer process and wait until it is ready (raises if it cannot start)."""
        ours, theirs = socket.socketpair()
        with theirs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tokenbroker.audit.writer_process",
                "--fd",
                str(theirs.fileno()),
                str(self._config),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        reader, stream = await asyncio.open_connection(sock=ours)
        try:
            ready = await asyncio.wait_for(read_frame(reader), START_SECONDS)
        except (TimeoutError, ValueError):
            ready = None
        if ready != ("ready",):
            stream.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            raise WriterProcessExited(f"the audit writer process did not start (exit {code})")
        self._proc, self._stream, self._alive = proc, stream, True
        self._listener = asyncio.create_task(self._listen(reader, proc))
        self._resend(stream)

    def _resend(self, stream: asyncio.StreamWriter) -> None:
        """A restart: every frame not confirmed goes again, in order (the first without the
        records the last writer process confirmed, if it confirmed part of it)."""
        now = time.monotonic()
        for sent in self._frames:
            unconfirmed = sent.last - self._confirmed
            if unconfirmed < sent.count:
                _, records, urgent = marshal.loads(sent.payload[4:])  # noqa: S302 (our own)
                sent.payload = frame(("records", records[-unconfirmed:], urgent))
                sent.count = unconfirmed
            stream.write(sent.payload)
            sent.sent = now

    async def _listen(self, reader: asyncio.StreamReader, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ConnectionError, ValueError):
            while (message := await read_frame(reader)) is not None:
                if message[0] == "progress":
                    self._progress(self._base + int(message[1]), bool(message[2]))
        if self._closing:
            return
        self._alive = False
        self._fail_waiters()
        code = await proc.wait()
        log.error(
            "the audit writer process exited (code %s); starting another, %d records to resend",
            code,
            self.queue_depth,
        )
        self._base = self._confirmed
        delay = 0.1
        while not self._closing:
            try:
                await self.start()
                return
            except (OSError, WriterProcessExited) as exc:
                log.error("the audit writer process could not be started again: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _progress(self, confirmed: int, failing: bool) -> None:
        self._failing = failing
        if confirmed > self._confirmed:
            self._confirmed = confirmed
            self._learn(confirmed)
            waiters = self._waiters
            while waiters and waiters[0][0] <= confirmed:
                done = waiters.popleft()[1]
                if not done.done():
                    done.set_result(None)
        if failing:
            self._fail_waiters()

    def _learn(self, confirmed: int) -> None:
        """Time the frames now committed. A record is sent when it is ``window - margin`` old,
        the margin being 1.25 times the longest recent delay from sending to the commit being
        reported (at most half a window): it is then committed by the end of its window."""
        frames, now, delays = self._frames, time.monotonic(), self._commit_delays
        while frames and frames[0].last <= confirmed:
            sent = frames.popleft().sent
            if sent is not None:
                delays.append(now - sent)
        if delays:
            margin = min(1.25 * max(delays), self._window / 2)
            self._send_after = self._window - margin

    def _fail_waiters(self) -> None:
        """Waiters learn at once that the trail cannot be written; their records stay."""
        while self._waiters:
            done = self._waiters.popleft()[1]
            if not done.done():
                done.set_exception(StoreUnavailable("the audit trail is unavailable"))
                done.exception()  # retrieved: the waiter may be gone

    # --- the recorder -------------------------------------------------------------------------
    async def record(self, event: Event) -> None:
        """Hand ``event`` over; wait for its commit only in ``sync`` mode or under
        back-pressure (see :meth:`ChainedRecorder.record`)."""
        if self._sync:
            await self.commit(event)
            return
        number = self._put(event)
        frames = self._frames
        oldest = frames[0].queued if frames else self._outbox_since
        if time.monotonic() - oldest > BACK_PRESSURE_WINDOWS * self._window:
            await self._until(number)

    async def commit(self, event: Event) -> None:
        """Hand ``event`` over and return once it is committed (StoreUnavailable if it cannot
        be yet; it stays and is retried)."""
        await self._until(self._put(event, urgent=True))

    async def flush(self) -> None:
        """Return once everything put so far is committed."""
        self._send()
        if self._stream is not None and self._alive:
            self._stream.write(frame(("flush",)))
        await self._until(self._put_count)

    async def close(self) -> None:
        """Send what is left, let the writer process commit it and end."""
        self._send()
        self._closing = True
        proc, stream = self._proc, self._stream
        if proc is None or stream is None:
            return
        with contextlib.suppress(OSError):
            stream.write_eof()  # the writer commits what it has and exits
        try:
            await asyncio.wait_for(proc.wait(), STOP_SECONDS)
        except TimeoutError:
            log.error(
                "the audit writer process did not finish within %.0f s; %d records may be lost",
                STOP_SECONDS,
                self.queue_depth,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._listener is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        stream.close()
        self._alive = False

    # --- internals ----------------------------------------------------------------------------
    def _put(self, event: Event, *, urgent: bool = False) -> int:
        if self._put_count - self._confirmed >= self._max_queue:
            self.lost += 1
            raise StoreUnavailable("the audit queue is full")
        outbox = self._outbox
        if not outbox:
            self._outbox_since = time.monotonic()
        outbox.append(to_record(event, time.time()))
        self._put_count = number = self._put_count + 1
        scheduled = self._scheduled
        if urgent or len(self._outbox) >= SEND_AT_MOST:
            self._urgent = self._urgent or urgent
            if isinstance(scheduled, asyncio.TimerHandle):
                scheduled.cancel()
                scheduled = None
            if scheduled is None:
                self._scheduled = asyncio.get_running_loop().call_soon(self._send)
        elif scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(self._send_after, self._send)
        return number

    def _send(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()  # when called directly (flush, close)
            self._scheduled = None
        batch, self._outbox = self._outbox, []
        urgent, self._urgent = self._urgent, False
        if not batch:
            return
        payload = frame(("records", batch, urgent))
        framed = _Frame(self._put_count, len(batch), self._outbox_since, payload)
        self._frames.append(framed)
        if self._alive and self._stream is not None:
            self._stream.write(framed.payload)
            framed.sent = time.monotonic()
            self.frames_sent += 1
        # Not alive: the frame waits in self._frames and goes to the next writer process.

    async def _until(self, number: int) -> None:
        if number <= self._confirmed:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((number, done))
        if self._failing or not self._alive:
            self._fail_waiters()
        await asyncio.shield(done)
