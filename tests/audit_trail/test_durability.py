"""No record is lost silently: ``sync`` commits before answering; ``group`` loses at most the
last window when the process is killed outright."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from agents import GATEWAY_CONFIG, proxy, ready
from harness import free_port, running
from sqlalchemy import select
from trail_support import Worker, children_of, cli_config, rows, until_gone

from tokenbroker.db.schema import events

WINDOW = 0.05
COMMIT_ALLOWANCE = 0.05  # the window bounds when a commit starts; the commit itself takes time


async def test_sync_durability_records_every_answered_request_at_once(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, audit={"durability": "sync"}, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        for i in range(10):
            status, _, _ = await proxy(
                h, token, "GET", "/proxy/acme/files", headers={"X-Request-ID": f"s-{i}"}
            )
            assert status == 200
            finished = [
                r["detail"]["request_id"] for r in await rows(h) if r["type"] == "proxy.finished"
            ]
            assert f"s-{i}" in finished  # no flush: committed before the answer


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["inline", "process"])
async def test_after_sigkill_under_load_every_request_answered_a_window_earlier_is_recorded(
    tmp_path: Path, database_url: str, writer: str
) -> None:
    """With ``writer = "process"`` the writer process outlives the killed worker and commits
    what it had received; the test waits for it to finish before counting."""
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        token, _ = await ready(h, operations=["*"])
        port = free_port()
        worker = await Worker.start(cli_config(h, audit={"writer": writer}), port, h.tmp)
        proc = worker.proc
        answered: dict[str, float] = {}
        stop = asyncio.Event()

        async def client(n: int) -> None:
            async with aiohttp.ClientSession() as http:
                i = 0
                while not stop.is_set():
                    request_id = f"k-{n}-{i}"
                    i += 1
                    try:
                        async with http.get(
                            f"http://127.0.0.1:{port}/proxy/acme/files",
                            headers={
                                "Authorization": f"Bearer {token}",
                                "X-Request-ID": request_id,
                            },
                        ) as resp:
                            await resp.read()
                            if resp.status == 200:
                                answered[request_id] = time.monotonic()
                    except aiohttp.ClientError:
                        return

        clients = [asyncio.create_task(client(n)) for n in range(8)]
        await asyncio.sleep(1.5)
        writers = children_of(proc.pid)
        assert len(writers) == (1 if writer == "process" else 0), writers
        killed_at = time.monotonic()
        await worker.stop(signal.SIGKILL)
        stop.set()
        await asyncio.gather(*clients)
        for pid in writers:
            await until_gone(pid, timeout=30)
        async with h.svc.engine.connect() as conn:
            found = await conn.execute(
                select(events.c.detail).where(events.c.type == "proxy.finished")
            )
            recorded = {r.detail["request_id"] for r in found.all()}
        due = {rid for rid, at in answered.items() if at < killed_at - WINDOW - COMMIT_ALLOWANCE}
        assert len(due) > 50, len(due)
        assert due - recorded == set()
