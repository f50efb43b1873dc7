"""``[audit] writer = "process"``: a gateway worker hands its records to a writer process of its
own and keeps the in-process writer's guarantees (every request recorded, ``sync`` answers
after the commit, ``deny`` while records cannot be written, nothing lost when the writer
process dies)."""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from agents import proxy, ready
from harness import ENV, Harness, free_port, running
from sqlalchemy import func, select, text
from trail_support import Worker, children_of, cli_config, until_gone

from tokenbroker.audit.process_recorder import ProcessRecorder, WriterProcessExited
from tokenbroker.audit.trail import open_gateway_recorder, trail_of
from tokenbroker.audit.verify import verify_tenant
from tokenbroker.db.schema import events
from tokenbroker.errors import ConfigError
from tokenbroker.records import Event


@asynccontextmanager
async def worker(h: Harness, **audit: Any) -> AsyncIterator[tuple[Worker, int]]:
    """A broker process on the harness's database with ``writer = "process"``."""
    port = free_port()
    config = cli_config(h, audit={"writer": "process", **audit})
    started = await Worker.start(config, port, h.tmp)
    try:
        yield started, port
    finally:
        await started.stop(signal.SIGKILL)
        for pid in children_of(started.proc.pid):
            os.kill(pid, signal.SIGKILL)


async def finished_ids(h: Harness) -> list[str]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        found = await conn.execute(select(events.c.detail).where(events.c.type == "proxy.finished"))
        return [str(r.detail["request_id"]) for r in found.all()]


async def until_recorded(h: Harness, ids: set[str], timeout: float = 10.0) -> list[str]:
    """The finished records once all of ``ids`` are among them (fails after ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not ids <= set(found := await finished_ids(h)):
            await asyncio.sleep(0.05)
    return found


async def call(h: Harness, port: int, token: str, request_id: str) -> int:
    status, _, _ = await proxy(
        h, token, "GET", "/proxy/acme/files", headers={"X-Request-ID": request_id}, port=port
    )
    return status


async def test_a_worker_records_every_request_through_its_writer_process(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        token, _ = await ready(h, operations=["*"])
        async with worker(h) as (broker, port):
            assert len(children_of(broker.proc.pid)) == 1  # its writer process
            ids = {f"w-{i}" for i in range(20)}
            for request_id in sorted(ids):
                assert await call(h, port, token, request_id) == 200
            found = await until_recorded(h, ids)
            assert sorted(found) == sorted(ids)  # each once
        assert h.svc is not None
        async with h.svc.engine.connect() as conn:
            started = (
                await conn.execute(text("SELECT count(*) FROM events WHERE type = 'proxy.started'"))
            ).scalar_one()
        assert started == 20
        trail = trail_of(h.svc)
        report = await verify_tenant(h.svc.engine, trail.signer, "default")
        assert report.ok, report


async def test_sync_durability_through_a_writer_process_answers_after_the_commit(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        token, _ = await ready(h, operations=["*"])
        async with worker(h, durability="sync", commit_window_ms=5000) as (_, port):
            for i in range(5):
                assert await call(h, port, token, f"s-{i}") == 200
                # No waiting: a five-second window would otherwise hold the record back.
                assert f"s-{i}" in await finished_ids(h)


async def test_a_writer_process_that_cannot_write_stops_the_gateway(tmp_path: Path) -> None:
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}") as h:
        assert h.svc is not None
        token, _ = await ready(h, operations=["*"])
        async with worker(h) as (_, port):
            assert await call(h, port, token, "before") == 200
            await until_recorded(h, {"before"})
            async with h.svc.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE events RENAME TO events_away"))
            answered = {"queued"} if await call(h, port, token, "queued") == 200 else set()
            async with asyncio.timeout(10):
                while True:
                    status, _, body = await proxy(h, token, "GET", "/proxy/acme/files", port=port)
                    if status == 503:
                        break
                    await asyncio.sleep(0.02)
            assert json.loads(body)["error"] == "store_unavailable"
            before = h.counter("api_calls")
            status, _, _ = await proxy(h, token, "GET", "/proxy/acme/files", port=port)
            assert status == 503
            assert h.counter("api_calls") == before  # refused before the upstream
            async with h.svc.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE events_away RENAME TO events"))
            async with asyncio.timeout(20):  # the writer retries, commits, the gateway opens
                while await call(h, port, token, "after") != 200:
                    await asyncio.sleep(0.05)
            await until_recorded(h, {"before", "after", *answered})


async def test_a_killed_writer_process_is_replaced_and_loses_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        token, _ = await ready(h, operations=["*"])
        async with worker(h, commit_window_ms=2000) as (broker, port):
            (first,) = children_of(broker.proc.pid)
            # Answered but, with a two-second window, not committed yet when the writer dies.
            for i in range(10):
                assert await call(h, port, token, f"k-{i}") == 200
            os.kill(first, signal.SIGKILL)
            await until_gone(first, timeout=10)
            async with asyncio.timeout(20):
                while not (now := children_of(broker.proc.pid)) or now == [first]:
                    await asyncio.sleep(0.05)
            answered = {f"k-{i}" for i in range(10)}
            async with asyncio.timeout(20):
                i = 0
                while len(answered) < 20:  # requests go through again once it is back
                    i += 1
                    if await call(h, port, token, f"n-{i}") == 200:
                        answered.add(f"n-{i}")
                    else:
                        await asyncio.sleep(0.05)
            found = await until_recorded(h, answered, timeout=20)
            assert set(found) == answered
            assert any("audit writer process exited" in line.decode() for line in broker.lines)


async def test_a_worker_sends_a_window_of_records_at_once_in_time_for_its_commit(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records wait in the worker for most of their window and go in one frame (one wake-up
    and one commit of the writer per window, not one per record), yet each is committed by the
    end of its window: what a worker killed outright could lose stays within one window."""
    window, allowance = 0.4, 0.2
    for name, value in ENV.items():  # what the writer process needs to read the configuration
        monkeypatch.setenv(name, value)
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        recorder = ProcessRecorder(cli_config(h), window=window)
        await recorder.start()
        committed: dict[int, float] = {}  # records in the table -> when first seen
        put: list[float] = []

        async def watch() -> None:
            assert h.svc is not None
            while True:
                async with h.svc.engine.connect() as conn:
                    found = select(func.count()).where(events.c.type == "test.tick")
                    count = int((await conn.execute(found)).scalar_one())
                committed.setdefault(count, time.monotonic())
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            for i in range(60):  # 1.2 s: three windows
                put.append(time.monotonic())
                await recorder.record(Event("test.tick", "default", detail={"i": i}))
                await asyncio.sleep(0.02)
            await recorder.flush()
            await asyncio.sleep(0.05)
        finally:
            watcher.cancel()
            await recorder.close()
        assert recorder.frames_sent <= 8, recorder.frames_sent  # a frame per 20 ms would be 60
        for number, at in enumerate(put, start=1):
            seen = min(when for count, when in committed.items() if count >= number)
            assert seen - at <= window + allowance, (number, seen - at)


async def test_a_busy_worker_sends_small_frames(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst goes in frames of at most SEND_AT_MOST (128) records, not one frame a window:
    the writer's commits stay small (one big commit a window slowed the worker on the other
    core, bench/gateway.py). Every record is still committed."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        recorder = ProcessRecorder(cli_config(h), window=5.0)  # the window alone: one frame
        await recorder.start()
        try:
            for i in range(1000):  # as requests do, each turn of the event loop puts a few
                await recorder.record(Event("test.burst", "default", detail={"i": i}))
                if i % 4 == 0:
                    await asyncio.sleep(0)
            sent_before_flush = recorder.frames_sent
            await recorder.flush()
        finally:
            await recorder.close()
        assert sent_before_flush >= 1000 // 128, sent_before_flush
        async with h.svc.engine.connect() as conn:
            found = select(func.count()).where(events.c.type == "test.burst")
            assert int((await conn.execute(found)).scalar_one()) == 1000


async def test_a_writer_process_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    recorder = ProcessRecorder(missing, window=0.05)
    with pytest.raises(WriterProcessExited):
        await recorder.start()
    assert not recorder.healthy


async def test_an_embedded_broker_cannot_use_a_writer_process(tmp_path: Path) -> None:
    """Settings built in code have no file for the writer process to read: a clear error."""
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}") as h:
        assert h.svc is not None
        settings = h.svc.settings
        audit = replace(settings.audit, writer="process")
        svc = replace(h.svc, settings=replace(settings, audit=audit))
        with pytest.raises(ConfigError, match='writer = "process"'):
            await open_gateway_recorder(svc)
        assert trail_of(svc).gateway_writer is None


class _Captured:
    """Stands in for the socket to a writer process: keeps the messages written to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def write(self, data: bytes) -> None:
        self.messages.append(marshal.loads(data[4:]))

    def request_ids(self) -> list[list[str]]:
        return [[str(r[7]["request_id"]) for r in m[1]] for m in self.messages]


def _started(request_id: str) -> Event:
    detail: dict[str, Any] = {"request_id": request_id}
    return Event.of_plain("proxy.started", "default", "agent:a", "usr", "demo", None, "ok", detail)


async def test_a_new_writer_process_gets_every_unconfirmed_frame_without_what_was_confirmed() -> (
    None
):
    """The worker keeps the frames it sent, as bytes, until they are confirmed: a restarted
    writer process gets them again in order, the first without the records the dead one
    confirmed, then those framed while none was running."""
    recorder = ProcessRecorder(Path("unused.toml"), window=10.0)
    first = _Captured()
    recorder._stream, recorder._alive = cast(asyncio.StreamWriter, first), True
    for i in range(1, 9):
        await recorder.record(_started(f"r{i}"))
        if i in (5, 8):
            recorder._send()
    recorder._progress(3, False)  # r1-r3 committed, then the writer process died
    recorder._alive = False
    await recorder.record(_started("r9"))
    recorder._send()  # framed, not written: no writer process is running
    assert first.request_ids() == [["r1", "r2", "r3", "r4", "r5"], ["r6", "r7", "r8"]]
    assert recorder.queue_depth == 6

    second = _Captured()
    recorder._resend(cast(asyncio.StreamWriter, second))
    assert second.request_ids() == [["r4", "r5"], ["r6", "r7", "r8"], ["r9"]]
    recorder._progress(9, False)
    assert recorder.queue_depth == 0
