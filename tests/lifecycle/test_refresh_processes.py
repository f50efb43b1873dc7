"""Refresh across broker processes sharing one database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from harness import ENV, Harness, running

from tokenbroker.errors import NeedsReauth
from tokenbroker.vault.rotation import check_all

WORKER = str(Path(__file__).parents[1] / "support" / "refresh_worker.py")
SHORT_LEASE = {
    "refresh": {
        "attempt_timeout_seconds": 1,
        "lease_seconds": 3,
        "wait_seconds": 10,
        "request_wait_ms": 10_000,  # these callers wait for the refresh's own outcome
    }
}

pytestmark = pytest.mark.slow


async def _spawn(h: Harness, mode: str, connection_id: str, count: int, go: Path):  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        WORKER,
        mode,
        str(h.write_config()),
        connection_id,
        str(count),
        str(go),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"READY", line
    return proc


async def test_concurrent_uses_in_several_processes_cause_one_refresh(
    tmp_path: Path, database_url: str
) -> None:
    processes = 3 if database_url.startswith("postgresql") else 2
    async with running(tmp_path, database_url) as h:
        connection = await h.connect()
        await h.expire_access_token(connection["id"])
        go = tmp_path / "go"
        procs = [await _spawn(h, "use", connection["id"], 50, go) for _ in range(processes)]
        go.touch()
        outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
        assert all(r["errors"] == [] for r in results), results
        tokens = {t for r in results for t in r["tokens"]}
        assert len(tokens) == 1
        assert h.counter("refresh_calls") == 1
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["version"]) == ("active", 2)


async def test_a_process_killed_holding_the_lease_is_taken_over_after_expiry(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **SHORT_LEASE) as h:
        assert h.state is not None
        assert h.refresher is not None
        connection = await h.connect()
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_delay_seconds = 0.5
        h.state.behaviour.reuse_grace_seconds = 60  # the provider's retry grace (e.g. Cognito)
        go = tmp_path / "go"
        proc = await _spawn(h, "use", connection["id"], 1, go)
        go.touch()
        for _ in range(400):
            if h.counter("refresh_calls") >= 1:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-refresh: the request is at the provider
        await proc.wait()
        row = await h.connection_row(connection["id"])
        assert row["lease_owner"] is not None
        h.state.behaviour.token_delay_seconds = 0
        token = await h.refresher.access_token("default", connection["id"])
        assert token.connection.version == 2
        assert token.connection.status == "active"


async def test_sigkill_at_random_points_never_leaves_an_unreadable_record(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'crash.db'}"  # the lease logic is the same SQL on both
    rng = random.Random(20261129)
    crash_lease = {
        "refresh": {"attempt_timeout_seconds": 1, "lease_seconds": 2, "request_wait_ms": 10_000}
    }
    async with running(tmp_path, database_url, **crash_lease) as h:
        assert h.svc is not None
        assert h.refresher is not None
        connection = await h.connect()
        outcomes: list[str] = []
        for round_ in range(20):
            go = tmp_path / f"go{round_}"
            proc = await _spawn(h, "loop", connection["id"], 1, go)
            go.touch()
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            report = await check_all(h.svc.engine, h.svc.sealed._envelope)
            assert report.ok, report.failures
            row = await h.connection_row(connection["id"])
            assert row["status"] in ("active", "needs_reauth"), row
            try:
                used = await h.refresher.access_token(
                    "default", connection["id"], newer_than=row["version"]
                )
                assert used.connection.status == "active"
                outcomes.append("usable")
            except NeedsReauth:
                row = await h.connection_row(connection["id"])
                assert row["status"] == "needs_reauth"
                assert row["status_reason"]
                outcomes.append("needs_reauth")
                connection = await h.connect()  # the user reconnects
        assert len(outcomes) == 20
