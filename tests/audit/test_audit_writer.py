"""Group commit: every proxied request is recorded, nothing is lost at shutdown, and a writer
that cannot write stops the gateway (``on_failure = "deny"``) before anything reaches the API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agents import GATEWAY_CONFIG, proxy, ready
from harness import Harness, running
from sqlalchemy import select, text

from tokenbroker.audit.writer import BatchingRecorder
from tokenbroker.db.schema import events
from tokenbroker.gateway.app import GATEWAY
from tokenbroker.records import Event


async def _gateway_events(h: Harness) -> list[tuple[str, dict[str, object]]]:
    assert h.broker_app is not None
    assert h.svc is not None
    await h.broker_app[GATEWAY]._recorder.flush()  # type: ignore[attr-defined]
    async with h.svc.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.type, events.c.detail).where(events.c.type.like("proxy.%"))
        )
        return [(r.type, dict(r.detail)) for r in rows.all()]


async def test_every_proxied_request_has_started_and_finished_records(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, made = await ready(h)
        ids = []
        for i in range(10):
            status, headers, _ = await proxy(
                h, token, "GET", "/proxy/acme/files", headers={"X-Request-ID": f"req-{i}"}
            )
            assert status == 200
            ids.append(headers["X-Request-ID"])
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/files", data=b"{}")
        assert status == 403
        recorded = await _gateway_events(h)
        finished = [d for t, d in recorded if t == "proxy.finished"]
        started = [d for t, d in recorded if t == "proxy.started"]
        assert sorted(d["request_id"] for d in finished) == sorted(ids)
        assert sorted(d["request_id"] for d in started) == sorted(ids)
        assert all(d["agent_id"] == made["id"] and d["grant_id"] for d in finished)
        assert all(d["status"] == 200 and d["operation"] == "files.list" for d in finished)
        denied = [d for t, d in recorded if t == "proxy.denied"]
        assert len(denied) == 1
        assert denied[0]["error"] == "insufficient_grant"
        assert token not in json.dumps(recorded)


async def test_closing_the_writer_loses_nothing(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        writer = BatchingRecorder(h.svc.engine, window=0.05)
        for i in range(500):
            await writer.record(Event(type="test.event", tenant_id="default", detail={"i": i}))
            if i == 250:
                await asyncio.sleep(0.01)  # the writer is now inside a window
        await writer.close()
        async with h.svc.engine.connect() as conn:
            count = (
                await conn.execute(text("SELECT count(*) FROM events WHERE type = 'test.event'"))
            ).scalar_one()
        assert count == 500


async def test_a_writer_that_cannot_write_stops_the_gateway(tmp_path: Path) -> None:
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}", **GATEWAY_CONFIG) as h:
        assert h.svc is not None
        token, _ = await ready(h)
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        async with h.svc.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events RENAME TO events_away"))
        await proxy(h, token, "GET", "/proxy/acme/files")  # queued; its commit will fail
        for _ in range(100):
            status, _headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
            if status == 503:
                break
            await asyncio.sleep(0.02)
        assert json.loads(body)["error"] == "store_unavailable"
        before = h.counter("api_calls")
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 503
        assert h.counter("api_calls") == before
        async with h.svc.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        for _ in range(200):  # the writer retries, commits, and the gateway opens again
            status, _, _ = await proxy(h, token, "GET", "/proxy/acme/files")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200
