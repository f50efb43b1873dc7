"""No record is lost silently: ``sync`` commits before answering; ``group`` loses at most the
last window when the process is killed outright."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from agents import GATEWAY_CONFIG, proxy, ready
from harness import ENV, free_port, running
from sqlalchemy import select
from trail_support import cli_config, rows

from tokenbroker.db.schema import events

WORKER = str(Path(__file__).parents[1] / "support" / "audit_worker.py")
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
async def test_after_sigkill_under_load_every_request_answered_a_window_earlier_is_recorded(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        token, _ = await ready(h, operations=["*"])
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER,
            str(cli_config(h)),
            str(port),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **ENV},
            cwd=h.tmp,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"READY", line
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
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        stop.set()
        await proc.wait()
        await asyncio.gather(*clients)
        async with h.svc.engine.connect() as conn:
            found = await conn.execute(
                select(events.c.detail).where(events.c.type == "proxy.finished")
            )
            recorded = {r.detail["request_id"] for r in found.all()}
        due = {rid for rid, at in answered.items() if at < killed_at - WINDOW - COMMIT_ALLOWANCE}
        assert len(due) > 50, len(due)
        assert due - recorded == set()
