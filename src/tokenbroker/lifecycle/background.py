"""The background refresher: keeps recently used connections warm, and idle ones alive.

Only connections used in the last ``recent_use_seconds`` are refreshed ahead of expiry, plus
those whose refresh token would otherwise reach the idle expiry the template names. Idle
connections are left alone even when their access token expired: each refresh is a chance to
lose a rotated token, so it happens only when someone needs it. Providers whose tokens do not
expire are never refreshed. A connection in cooldown (after failures) is skipped, so one broken
connection cannot starve the rest.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select

from tokenbroker.connections.model import ACTIVE, DEGRADED, Connection
from tokenbroker.db.schema import connections
from tokenbroker.errors import TokenBrokerError
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.services import Services

log = logging.getLogger("tokenbroker.background")
_c = connections.c


async def due_connections(svc: Services, now: datetime, *, limit: int = 200) -> list[Connection]:
    cfg = svc.settings.refresh
    horizon = now + timedelta(seconds=cfg.skew_seconds + cfg.background_interval_seconds)
    recent = now - timedelta(seconds=cfg.recent_use_seconds)
    expiring_and_used = and_(_c.access_token_expires_at <= horizon, _c.last_used_at >= recent)
    idle_clauses = []
    expiring_providers: list[str] = []
    for name, result in (await svc.providers.resolve_all()).items():
        if isinstance(result, TokenBrokerError) or not result.tokens_expire:
            continue
        expiring_providers.append(name)
        ttl = result.refresh_token_idle_ttl
        if ttl:
            # Refresh once 80% of the idle lifetime has passed since the last refresh.
            cutoff = now - timedelta(seconds=int(ttl * 0.8))
            last = func.coalesce(_c.last_refresh_at, _c.created_at)
            idle_clauses.append(and_(_c.provider == name, last <= cutoff))
    if not expiring_providers:
        return []
    query = (
        select(connections)
        .where(
            _c.has_refresh_token.is_(True),
            _c.status.in_((ACTIVE, DEGRADED)),
            _c.provider.in_(expiring_providers),
            or_(_c.refresh_not_before.is_(None), _c.refresh_not_before <= now),
            or_(_c.lease_until.is_(None), _c.lease_until < now),
            or_(expiring_and_used, *idle_clauses),
        )
        .order_by(_c.access_token_expires_at)
        .limit(limit)
    )
    async with svc.engine.connect() as conn:
        return [Connection.from_row(r) for r in (await conn.execute(query)).all()]


async def refresh_due(svc: Services, refresher: Refresher, *, concurrency: int = 8) -> int:
    """One sweep; returns how many connections were refreshed."""
    due = await due_connections(svc, svc.clock.now())
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(connection: Connection) -> None:
        nonlocal done
        async with gate:
            try:
                await refresher.refresh_ahead(connection)
                done += 1
            except TokenBrokerError as exc:
                log.info("background refresh of %s: %s", connection.id, exc.code)

    await asyncio.gather(*(one(c) for c in due))
    return done


async def background_refresher(svc: Services, refresher: Refresher) -> None:
    interval = svc.settings.refresh.background_interval_seconds
    while True:
        try:
            await refresh_due(svc, refresher)
        except Exception:
            log.exception("background refresh sweep failed")
        await asyncio.sleep(interval)
