"""Provider health shared by every replica: ``misconfigured`` is the operator's problem.

An ``invalid_client`` / ``unauthorized_client`` answer from a token endpoint means the client
credentials are wrong, not that any user's grant is bad. The provider is marked misconfigured
(every token kept, callers answered 503) until a token call succeeds again: one call is let
through as a probe every ``probe_seconds``, so fixing the configuration heals it on its own.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.clock import Clock
from tokenbroker.db.schema import provider_health
from tokenbroker.db.sql import upsert

log = logging.getLogger("tokenbroker.health")
OK = "ok"
MISCONFIGURED = "misconfigured"


class ProviderHealth:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        cache_seconds: float = 2.0,
        probe_seconds: float = 30.0,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._probe = timedelta(seconds=probe_seconds)
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def problem(self, provider: str) -> str | None:
        """The reason the provider is misconfigured, or None."""
        cached = self._cache.get(provider)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(provider_health).where(provider_health.c.provider == provider)
                )
            ).first()
        reason = None
        if row is not None and row._mapping["status"] == MISCONFIGURED:
            if row._mapping["updated_at"] + self._probe <= self._clock.now():
                return None  # let one call through as a probe; its outcome sets the status
            reason = str(row._mapping["reason"] or "invalid_client")
        self._cache[provider] = (time.monotonic(), reason)
        return reason

    async def set(self, provider: str, status: str, reason: str | None) -> None:
        if status == MISCONFIGURED:
            log.error("provider %r is misconfigured: %s", provider, reason)
        async with self._engine.begin() as conn:
            await upsert(
                conn,
                provider_health,
                {
                    "provider": provider,
                    "status": status,
                    "reason": reason,
                    "updated_at": self._clock.now(),
                },
                keys=["provider"],
            )
        self._cache[provider] = (time.monotonic(), reason if status == MISCONFIGURED else None)
