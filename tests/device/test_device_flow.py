"""The RFC 8628 device flow against the DEMO provider: polling, slow_down, denial, expiry."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_support import (
    OWNER,
    ShiftedClock,
    confirm,
    count,
    dump,
    get_session,
    make_due,
    pending_confirmation,
    poll_until,
    set_columns,
    shift,
    start,
)
from harness import running
from sqlalchemy import select

from tokenbroker.db.schema import connections, device_sessions, events, sealed_secrets
from tokenbroker.lifecycle import device


async def test_pending_slow_down_approved_confirmed_and_nothing_in_the_clear(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        assert h.state is not None
        clock = ShiftedClock()
        h.svc.clock = clock
        doc = await start(h)
        session_id = doc["id"]
        assert doc["status"] == "pending"
        assert doc["interval"] == 1
        assert doc["verification_uri"] == f"{h.issuer}/device"
        assert doc["user_code"] in doc["verification_uri_complete"]
        assert doc["expires_at"].endswith("Z")
        assert doc["account"] is None
        assert await count(h, events, type="device.started") == 1

        assert await device.poll_due(h.svc, owner=OWNER) == 0  # not due before the interval
        shift(h, clock, 1.5)
        assert await device.poll_due(h.svc, owner=OWNER) == 1  # authorization_pending
        assert h.counter("device_polls") == 1
        assert (await get_session(h, session_id))["status"] == "pending"
        assert await device.poll_due(h.svc, owner=OWNER) == 0  # the interval is honoured

        # A poll inside the provider's interval (as a replica with a skewed clock would send)
        # earns slow_down: the interval grows by 5 s and stays so.
        await make_due(h, session_id)
        assert await device.poll_due(h.svc, owner=OWNER) == 1
        assert h.counter("device_polls") == 2
        doc = await get_session(h, session_id)
        assert (doc["status"], doc["interval"]) == ("pending", 6)
        async with h.svc.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(device_sessions).where(device_sessions.c.id == session_id)
                )
            ).one()
        wait = (row.next_poll_at - clock.now()).total_seconds()
        assert 4 < wait <= 6, wait
        shift(h, clock, 5.5)
        assert await device.poll_due(h.svc, owner=OWNER) == 0
        assert h.counter("device_polls") == 2
        shift(h, clock, 8)
        assert await device.poll_due(h.svc, owner=OWNER) == 1
        assert h.counter("device_polls") == 3
        doc = await get_session(h, session_id)
        assert (doc["status"], doc["interval"]) == ("pending", 6)  # no second slow_down

        assert h.state.decide_device(doc["user_code"], "alice", approve=True)
        shift(h, clock, 14.5)
        assert await device.poll_due(h.svc, owner=OWNER) == 1
        doc = await get_session(h, session_id)
        assert doc["status"] == "pending_confirmation"
        assert doc["account"]["id"] == "alice"
        assert await count(h, connections) == 0  # nothing stored before the user is proven

        status, body = await confirm(h, session_id, "alice")
        assert status == 200, body
        connection = body["connection"]
        assert connection["provider"] == "acme"
        assert connection["account"]["id"] == "alice"
        assert "files:read" in connection["scopes"]
        assert connection["has_refresh_token"] is True
        assert body["device_session"]["status"] == "connected"
        _status, listed = await h.admin("GET", "/v1/connections?user_id=alice")
        assert [c["id"] for c in listed["connections"]] == [connection["id"]]
        doc = await get_session(h, session_id)
        assert (doc["status"], doc["connection_id"]) == ("connected", connection["id"])
        for type_ in ("device.authorized", "device.completed", "connection.connected"):
            assert await count(h, events, type=type_) == 1, type_
        status, body = await confirm(h, session_id, "alice")
        assert (status, body["error"]) == (409, "conflict")  # single use

        assert await count(h, sealed_secrets, owner_kind="device_session") == 0
        canaries = (
            set(h.state.device_codes) | set(h.state.access_tokens) | set(h.state.refresh_tokens)
        )
        assert len(canaries) >= 3
        contents = await dump(h)
        for canary in canaries:
            assert canary not in contents
            assert canary[:12] not in contents


async def test_denied_by_the_user_stores_nothing(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        assert h.state is not None
        doc = await start(h)
        assert h.state.decide_device(doc["user_code"], "alice", approve=False)
        # The background loop, as `tokenbroker serve` runs it.
        poller = asyncio.create_task(device.device_poller(h.svc, "replica-bg", interval=0.1))
        try:
            deadline = time.monotonic() + 10
            while (found := await get_session(h, doc["id"]))["status"] == "pending":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        assert (found["status"], found["error"]) == ("denied", "access_denied")
        assert await count(h, sealed_secrets) == 0
        assert await count(h, connections) == 0
        assert await count(h, events, type="device.denied") == 1
        status, body = await confirm(h, doc["id"], "alice")
        assert status == 409, body


async def test_expiry_in_the_broker_and_at_the_provider(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        assert h.state is not None
        first = await start(h)
        await set_columns(h, first["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
        doc = await poll_until(h, first["id"], "expired")
        assert doc["error"] == "expired_token"
        assert h.counter("device_polls") == 0  # an expired session is not polled
        assert await count(h, sealed_secrets) == 0

        second = await start(h)
        h.state.clock = lambda: time.time() + 3600  # the provider's device code has expired
        await make_due(h, second["id"])
        doc = await poll_until(h, second["id"], "expired", "failed")
        assert (doc["status"], doc["error"]) == ("expired", "expired_token")
        assert h.counter("device_polls") == 1
        assert await count(h, sealed_secrets) == 0
        assert await count(h, events, type="device.expired") == 2


async def test_unconfirmed_tokens_are_erased_when_the_session_expires(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        doc = await pending_confirmation(h)
        assert await count(h, sealed_secrets, owner_kind="device_session") >= 2
        await set_columns(h, doc["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
        await device.poll_due(h.svc, owner=OWNER)
        assert (await get_session(h, doc["id"]))["status"] == "expired"
        assert await count(h, sealed_secrets) == 0
        status, _body = await confirm(h, doc["id"], "alice")
        assert status == 409
        assert await count(h, connections) == 0
