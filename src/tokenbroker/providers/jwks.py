"""JWKS cache: keys fetched once, re-fetched on an unknown ``kid`` at most once a minute."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from tokenbroker.errors import DiscoveryError, TokenBrokerError
from tokenbroker.transport import Transport

REFETCH_INTERVAL = 60.0


@dataclass
class _Keys:
    jwks: dict[str, Any]
    fetched_at: float


class JwksCache:
    def __init__(self, transport: Transport, *, refetch_interval: float = REFETCH_INTERVAL) -> None:
        self._transport = transport
        self._interval = refetch_interval
        self._cache: dict[str, _Keys] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, jwks_uri: str, *, provider: str, kid: str | None) -> dict[str, Any]:
        cached = self._cache.get(jwks_uri)
        if cached is not None and self._usable(cached, kid):
            return cached.jwks
        async with self._locks.setdefault(jwks_uri, asyncio.Lock()):
            cached = self._cache.get(jwks_uri)
            if cached is not None and self._usable(cached, kid):
                return cached.jwks
            try:
                jwks = await self._fetch(jwks_uri, provider)
            except DiscoveryError:
                if cached is None:
                    raise
                # A failing endpoint is asked again only after the interval, like an unknown kid.
                self._cache[jwks_uri] = _Keys(cached.jwks, time.monotonic())
                return cached.jwks
            self._cache[jwks_uri] = _Keys(jwks, time.monotonic())
            return jwks

    def _usable(self, cached: _Keys, kid: str | None) -> bool:
        known = kid is None or any(k.get("kid") == kid for k in cached.jwks.get("keys", []))
        return known or time.monotonic() - cached.fetched_at < self._interval

    async def _fetch(self, jwks_uri: str, provider: str) -> dict[str, Any]:
        try:
            resp = await self._transport.get(jwks_uri, provider=provider, timeout=10)
        except TokenBrokerError as exc:
            raise DiscoveryError(f"JWKS of provider {provider!r}: {exc.message}") from None
        if resp.status != 200:
            raise DiscoveryError(f"JWKS of provider {provider!r}: answered {resp.status}")
        try:
            doc = json.loads(resp.body)
        except ValueError:
            raise DiscoveryError(f"JWKS of provider {provider!r} is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise DiscoveryError(f"JWKS of provider {provider!r} has no keys")
        return doc
