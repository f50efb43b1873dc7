"""Connection events reach the application's webhook: signed, retried, given up after 24 h."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from harness import WEBHOOK_SECRET, Harness, free_port, running
from sqlalchemy import func, select, update

from tokenbroker.db.schema import events, webhook_deliveries
from tokenbroker.lifecycle.notify import connection_event
from tokenbroker.lifecycle.webhooks import deliver_due, sign, verify_signature
from tokenbroker.secret import Secret

SECRET = Secret(WEBHOOK_SECRET)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback webhook endpoint that records requests and can fail the next N of them."""

    port: int = field(default_factory=free_port)
    fail_next: int = 0
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="try later")
        return web.Response(status=204)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


def _webhook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"url": receiver.url, "secret_env": "TB_WEBHOOK", **extra}


async def _rows(h: Harness) -> list[dict[str, Any]]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        rows = await conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id))
        return [dict(row._mapping) for row in rows]


async def _make_due(h: Harness, **values: Any) -> None:
    """Move every pending delivery's next attempt into the past (no sleeping for backoff)."""
    assert h.svc is not None
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with h.svc.engine.begin() as conn:
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.status == "pending")
            .values(next_attempt_at=past, **values)
        )


async def _count_events(h: Harness, type_: str) -> int:
    assert h.svc is not None
    query = select(func.count()).select_from(events).where(events.c.type == type_)
    async with h.svc.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_connected_event_is_delivered_signed_and_without_tokens(
    tmp_path: Path, database_url: str
) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        assert h.state is not None
        connection = await h.connect()
        assert await deliver_due(h.svc) == 1
        assert len(rx.received) == 1
        got = rx.received[0]
        headers = got.headers
        assert headers["Content-Type"] == "application/json"
        assert headers["TokenBroker-Event"] == "connection.connected"
        assert headers["User-Agent"] == "tokenbroker-webhooks/0.1"
        assert verify_signature(
            SECRET, headers["TokenBroker-Signature"], got.body, now=int(time.time())
        )
        doc = got.doc
        assert doc["type"] == "connection.connected"
        assert doc["id"] == headers["TokenBroker-Delivery"]
        assert doc["data"]["connection_id"] == connection["id"]
        assert doc["data"]["user_id"] == "alice"
        assert doc["data"]["provider"] == "acme"
        text = got.body.decode()
        for token in [*h.state.access_tokens, *h.state.refresh_tokens]:
            assert token not in text
        assert WEBHOOK_SECRET not in text
        (row,) = await _rows(h)
        assert (row["status"], row["attempts"]) == ("delivered", 1)
        # Nothing is sent twice.
        assert await deliver_due(h.svc) == 0
        assert len(rx.received) == 1


async def test_a_failing_receiver_gets_the_delivery_on_the_third_attempt(
    tmp_path: Path, database_url: str
) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        await h.connect()
        rx.fail_next = 2
        before = datetime.now(UTC)
        assert await deliver_due(h.svc) == 0
        (row,) = await _rows(h)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert row["last_error"] == "receiver answered HTTP 503"
        wait = row["next_attempt_at"] - before
        assert timedelta(seconds=23) <= wait <= timedelta(seconds=37)  # 30 s ± jitter
        assert await deliver_due(h.svc) == 0  # not due yet: nothing is sent
        assert len(rx.received) == 1
        await _make_due(h)
        assert await deliver_due(h.svc) == 0
        (row,) = await _rows(h)
        assert row["attempts"] == 2
        assert row["next_attempt_at"] - datetime.now(UTC) >= timedelta(seconds=47)  # ~1 min
        await _make_due(h)
        assert await deliver_due(h.svc) == 1
        (row,) = await _rows(h)
        assert (row["status"], row["attempts"]) == ("delivered", 3)
        ids = {got.headers["TokenBroker-Delivery"] for got in rx.received}
        assert len(rx.received) == 3
        assert ids == {row["id"]}


async def test_a_delivery_older_than_a_day_gives_up_and_is_recorded(
    tmp_path: Path, database_url: str
) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        await h.connect()
        rx.fail_next = 100
        assert await deliver_due(h.svc) == 0
        await _make_due(h, created_at=datetime.now(UTC) - timedelta(hours=25))
        assert await deliver_due(h.svc) == 0
        (row,) = await _rows(h)
        assert (row["status"], row["attempts"]) == ("gave_up", 2)
        assert await _count_events(h, "webhook.gave_up") == 1
        async with h.svc.engine.connect() as conn:
            detail = (
                await conn.execute(
                    select(events.c.detail).where(events.c.type == "webhook.gave_up")
                )
            ).scalar_one()
        assert detail["delivery_id"] == row["id"]
        assert WEBHOOK_SECRET not in json.dumps(detail)
        assert await deliver_due(h.svc) == 0
        assert len(rx.received) == 2


async def test_tampered_bodies_and_stale_timestamps_fail_verification(
    tmp_path: Path, database_url: str
) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        await h.connect()
        await deliver_due(h.svc)
        (got,) = rx.received
        header = got.headers["TokenBroker-Signature"]
        now = int(time.time())
        assert verify_signature(SECRET, header, got.body, now=now)
        tampered = got.body.replace(b"alice", b"mallo")
        assert not verify_signature(SECRET, header, tampered, now=now)
        assert not verify_signature(Secret("another-secret"), header, got.body, now=now)
        assert not verify_signature(SECRET, header, got.body, now=now + 301)
        stale = sign(SECRET, now - 3600, got.body)
        assert not verify_signature(SECRET, stale, got.body, now=now)


def test_signature_format_and_malformed_headers() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, 1700000000, body)
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, body, now=1700000100)
    assert verify_signature(SECRET, f"{header},v1=00", body, now=1700000000)
    for bad in ("", "garbage", "t=x,v1=00", "v1=" + header.split("v1=")[1], "t=1700000000"):
        assert not verify_signature(SECRET, bad, body, now=1700000000)


async def test_events_filter_leaves_out_other_event_types(
    tmp_path: Path, database_url: str
) -> None:
    webhook = _webhook(Receiver(), events=["connection.needs_reauth"])
    async with receiving() as rx:
        webhook["url"] = rx.url
        async with running(tmp_path, database_url, webhook=webhook) as h:
            assert h.svc is not None
            await h.connect()
            assert await _rows(h) == []
            assert await deliver_due(h.svc) == 0
            assert rx.received == []


async def test_deleting_a_connection_sends_deleted_and_revoked(
    tmp_path: Path, database_url: str
) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        connection = await h.connect()
        status, _doc = await h.admin("DELETE", f"/v1/connections/{connection['id']}")
        assert status == 200
        assert await deliver_due(h.svc) == 3
        types = sorted(got.headers["TokenBroker-Event"] for got in rx.received)
        assert types == ["connection.connected", "connection.deleted", "connection.revoked"]
        for got in rx.received:
            assert got.doc["data"]["connection_id"] == connection["id"]
            header = got.headers["TokenBroker-Signature"]
            assert verify_signature(SECRET, header, got.body, now=int(time.time()))


async def test_concurrent_sweeps_deliver_each_row_once(tmp_path: Path, database_url: str) -> None:
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        connection = await h.connect()
        for _ in range(7):
            await connection_event(
                h.svc,
                "connection.refreshed",
                tenant_id="default",
                user_id="alice",
                provider="acme",
                connection_id=connection["id"],
            )
        rx.delay = 0.05
        first, second = await asyncio.gather(deliver_due(h.svc), deliver_due(h.svc))
        assert first + second == 8
        ids = [got.headers["TokenBroker-Delivery"] for got in rx.received]
        assert len(ids) == 8
        assert len(set(ids)) == 8
        rows = await _rows(h)
        assert {(row["status"], row["attempts"]) for row in rows} == {("delivered", 1)}


async def test_erasing_a_user_deletes_the_deliveries_that_name_them(
    tmp_path: Path, database_url: str
) -> None:
    """Delivered and pending deliveries of the erased user go (they hold the user's id and
    account label); another user's stay."""
    async with receiving() as rx, running(tmp_path, database_url, webhook=_webhook(rx)) as h:
        assert h.svc is not None
        await h.connect("alice")
        assert await deliver_due(h.svc) == 1  # alice's connected event: delivered
        await h.connect("bob")  # bob's: pending
        status, doc = await h.admin("DELETE", "/v1/users/alice")
        assert status == 200, doc
        # connected (delivered) and what deleting the connection queued (pending)
        assert doc["webhook_deliveries"] >= 2
        remaining = await _rows(h)
        assert [row["payload"]["data"]["user_id"] for row in remaining] == ["bob"]
        assert "alice" not in json.dumps([row["payload"] for row in remaining])
        assert await deliver_due(h.svc) == 1  # only bob's
        assert [r.doc["data"]["user_id"] for r in rx.received] == ["alice", "bob"]
