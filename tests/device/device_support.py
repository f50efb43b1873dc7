"""Helpers for the device-flow tests: start, read and drive device sessions in a harness."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from harness import Harness
from sqlalchemy import func, select, text, update

from tokenbroker.db.schema import device_sessions
from tokenbroker.lifecycle import device

OWNER = "test-replica-a"


class ShiftedClock:
    """The broker's clock, moved forward together with the demo provider's."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, UTC)


def shift(h: Harness, clock: ShiftedClock, seconds: float) -> None:
    assert h.state is not None
    clock.offset = seconds
    h.state.clock = lambda: time.time() + seconds


async def count(h: Harness, table: Any, **where: str) -> int:
    assert h.svc is not None
    query = select(func.count()).select_from(table)
    for key, value in where.items():
        query = query.where(table.c[key] == value)
    async with h.svc.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def start(h: Harness, user_id: str = "alice", **extra: Any) -> dict[str, Any]:
    body = {"user_id": user_id, "provider": "acme", "scopes": ["files:read"], **extra}
    status, doc = await h.admin("POST", "/v1/device-sessions", body)
    assert status == 201, doc
    return dict(doc)


async def get_session(h: Harness, session_id: str) -> dict[str, Any]:
    status, doc = await h.admin("GET", f"/v1/device-sessions/{session_id}")
    assert status == 200, doc
    return dict(doc)


async def set_columns(h: Harness, session_id: str, **values: Any) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(
            update(device_sessions).where(device_sessions.c.id == session_id).values(**values)
        )


async def make_due(h: Harness, session_id: str) -> None:
    await set_columns(h, session_id, next_poll_at=datetime.now(UTC) - timedelta(seconds=30))


async def poll_until(h: Harness, session_id: str, *statuses: str) -> dict[str, Any]:
    assert h.svc is not None
    deadline = time.monotonic() + 15
    while True:
        await device.poll_due(h.svc, owner=OWNER)
        doc = await get_session(h, session_id)
        if doc["status"] in statuses:
            return doc
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(0.2)


async def pending_confirmation(h: Harness, user_id: str = "alice") -> dict[str, Any]:
    assert h.state is not None
    doc = await start(h, user_id)
    assert h.state.decide_device(doc["user_code"], user_id, approve=True)
    return await poll_until(h, doc["id"], "pending_confirmation")


async def confirm(
    h: Harness, session_id: str, user_id: str, key: str | None = None
) -> tuple[int, Any]:
    path = f"/v1/device-sessions/{session_id}/confirm"
    if key is None:
        return await h.admin("POST", path, {"user_id": user_id})
    return await h.admin("POST", path, {"user_id": user_id}, key=key)


async def dump(h: Harness) -> str:
    assert h.svc is not None
    parts: list[str] = []
    async with h.svc.engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        for name in names:
            for row in (await conn.execute(text(f'SELECT * FROM "{name}"'))).all():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value).decode("latin-1"))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)
