"""The background refresher refreshes only what is used, or about to idle out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import Harness, running
from sqlalchemy import update

from tokenbroker.db.schema import connections
from tokenbroker.lifecycle.background import refresh_due


async def _set(h: Harness, connection_id: str, **values: object) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(
            update(connections).where(connections.c.id == connection_id).values(**values)
        )


async def _sweep(h: Harness) -> int:
    assert h.svc is not None
    assert h.refresher is not None
    return await refresh_due(h.svc, h.refresher)


async def test_recently_used_expiring_connections_are_refreshed_ahead(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.refresher is not None
        connection = await h.connect()
        await h.refresher.access_token("default", connection["id"])  # marks it used
        soon = datetime.now(UTC) + timedelta(seconds=30)
        await _set(h, connection["id"], access_token_expires_at=soon)
        assert await _sweep(h) == 1
        assert h.counter("refresh_calls") == 1
        row = await h.connection_row(connection["id"])
        assert row["version"] == 2


async def test_idle_connections_are_not_refreshed_even_when_expired(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await h.connect()
        await h.expire_access_token(connection["id"])
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        await _set(h, connection["id"], last_used_at=long_ago)
        assert await _sweep(h) == 0
        await _set(h, connection["id"], last_used_at=None)
        assert await _sweep(h) == 0
        assert h.counter("refresh_calls") == 0


async def test_connections_near_their_idle_expiry_are_refreshed(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, provider={"refresh_token_idle_ttl": 3600}) as h:
        connection = await h.connect()
        old = datetime.now(UTC) - timedelta(minutes=50)  # 83% of the idle lifetime
        await _set(h, connection["id"], created_at=old, last_refresh_at=None)
        assert await _sweep(h) == 1
        assert await _sweep(h) == 0  # refreshed just now: not due again


async def test_providers_whose_tokens_do_not_expire_are_never_refreshed(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, provider={"tokens_expire": False}) as h:
        assert h.refresher is not None
        connection = await h.connect()
        await h.refresher.access_token("default", connection["id"])
        await h.expire_access_token(connection["id"])
        assert await _sweep(h) == 0
        assert h.counter("refresh_calls") == 0


async def test_connections_in_cooldown_are_skipped(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.refresher is not None
        connection = await h.connect()
        await h.refresher.access_token("default", connection["id"])
        later = datetime.now(UTC) + timedelta(minutes=5)
        soon = datetime.now(UTC) + timedelta(seconds=30)
        await _set(h, connection["id"], access_token_expires_at=soon, refresh_not_before=later)
        assert await _sweep(h) == 0
        await _set(h, connection["id"], refresh_not_before=None)
        assert await _sweep(h) == 1
