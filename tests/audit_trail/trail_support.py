"""Helpers for audit trail tests: a flow with gateway traffic, verification, raw row edits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agents import proxy, ready
from harness import ENV, Harness, cli_config
from sqlalchemy import select, text, update

from tokenbroker.audit.canonical import record_hash
from tokenbroker.audit.checkpoints import sign_head
from tokenbroker.audit.trail import trail_of
from tokenbroker.audit.verify import TenantReport, verify_tenant
from tokenbroker.db.schema import events
from tokenbroker.gateway.app import GATEWAY


async def flush(h: Harness) -> None:
    assert h.broker_app is not None
    await h.broker_app[GATEWAY]._recorder.flush()  # type: ignore[attr-defined]


async def traffic(h: Harness, calls: int = 5) -> str:
    """alice connected, an agent granted files:read, ``calls`` proxied requests; its token."""
    token, _ = await ready(h)
    for i in range(calls):
        status, _, _ = await proxy(
            h, token, "GET", "/proxy/acme/files", headers={"X-Request-ID": f"r-{i}"}
        )
        assert status == 200
    await flush(h)
    return token


async def verify(h: Harness, tenant: str = "default") -> TenantReport:
    assert h.svc is not None
    return await verify_tenant(h.svc.engine, trail_of(h.svc).signer, tenant)


async def sign(h: Harness, tenant: str = "default") -> None:
    assert h.svc is not None
    await sign_head(h.svc, tenant, "periodic")


async def rows(h: Harness, tenant: str = "default") -> list[dict[str, Any]]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        found = await conn.execute(
            select(events).where(events.c.tenant_id == tenant).order_by(events.c.seq)
        )
        return [dict(r._mapping) for r in found.all()]


async def execute(h: Harness, sql: str, **params: Any) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def rewrite(h: Harness, row_id: int, **values: Any) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(update(events).where(events.c.id == row_id).values(**values))


def rehash(row: dict[str, Any]) -> str:
    return record_hash(row)


async def cli(h: Harness, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``tokenbroker ARGS`` against the harness's database and keys, in a thread: the
    harness's broker and provider share this event loop and must keep answering meanwhile."""
    config = cli_config(h)
    return await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tokenbroker.cli",
            "--log-level",
            "WARNING",
            "-c",
            str(config),
            *args,
        ],
        capture_output=True,
        env={**os.environ, **ENV},
        cwd=h.tmp,
        check=False,
    )


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(stat[1]) == pid and stat[0] != "Z":
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has finished; only its exit status is left


async def until_gone(pid: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running after {timeout} s"
        await asyncio.sleep(0.05)


WORKER = str(Path(__file__).parents[1] / "support" / "audit_worker.py")


class Worker:
    """A broker process serving the gateway (``tests/support/audit_worker.py``); its output
    is collected in ``lines`` so that nothing it logs can block it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config: Path, port: int, cwd: Path) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER,
            str(config),
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **ENV},
            cwd=cwd,
        )
        worker = cls(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while (line := await proc.stdout.readline()).strip() != b"READY":
                assert line, b"".join(worker.lines)  # exited before it was ready
                worker.lines.append(line)
        worker._drain = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        await self.proc.wait()
        if self._drain is not None:
            await self._drain
