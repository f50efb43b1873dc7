"""Configured providers, resolved on first use: template data, or OIDC / RFC 8414 discovery.

Discovery metadata is fetched once and cached (``metadata_ttl``); its ``issuer`` must equal the
configured one exactly (OIDC Discovery §4.3). A provider that cannot be discovered fails with an
error naming it, without affecting the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenbroker.config import ProviderSection
from tokenbroker.errors import DiscoveryError, TokenBrokerError, UnknownProvider
from tokenbroker.protocol.rfc8414 import metadata_urls, validate_metadata
from tokenbroker.providers.catalog import build_provider
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.transport import Transport


@dataclass
class _Entry:
    spec: ProviderSpec
    fetched_at: float


class ProviderRegistry:
    def __init__(
        self,
        sections: Mapping[str, ProviderSection],
        transport: Transport,
        *,
        metadata_ttl: float = 3600.0,
    ) -> None:
        self._sections = dict(sections)
        self._transport = transport
        self._ttl = metadata_ttl
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def names(self) -> list[str]:
        return sorted(self._sections)

    def has(self, name: str) -> bool:
        return name in self._sections

    async def get(self, name: str) -> ProviderSpec:
        section = self._sections.get(name)
        if section is None:
            raise UnknownProvider(f"unknown provider {name!r}")
        entry = self._cache.get(name)
        if entry is not None and time.monotonic() - entry.fetched_at < self._ttl:
            return entry.spec
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._cache.get(name)
            if entry is not None and time.monotonic() - entry.fetched_at < self._ttl:
                return entry.spec
            try:
                spec = await self._resolve(section)
            except DiscoveryError:
                if entry is not None:  # keep serving the last good metadata
                    return entry.spec
                raise
            self._cache[name] = _Entry(spec, time.monotonic())
            return spec

    async def resolve_all(self) -> dict[str, ProviderSpec | TokenBrokerError]:
        """Resolve every provider; failures are returned, not raised (for start-up and CLI)."""
        out: dict[str, ProviderSpec | TokenBrokerError] = {}
        for name in self.names():
            try:
                out[name] = await self.get(name)
            except TokenBrokerError as exc:
                out[name] = exc
        return out

    async def _resolve(self, section: ProviderSection) -> ProviderSpec:
        raw = section.section
        metadata: Mapping[str, Any] | None = None
        issuer = raw.get("issuer")
        if issuer and "template" not in raw and "authorization_endpoint" not in raw:
            metadata = await self._discover(section.name, str(issuer), raw)
        return build_provider(
            section.name, raw, client_secret=section.client_secret, metadata=metadata
        )

    async def _discover(self, name: str, issuer: str, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        insecure = bool(raw.get("allow_insecure_loopback", False))
        last_error = "no metadata document found"
        try:
            urls = metadata_urls(issuer, allow_insecure_loopback=insecure)
        except TokenBrokerError as exc:
            raise DiscoveryError(f"provider {name!r}: {exc.message}") from None
        for url in urls:
            try:
                resp = await self._transport.get(url, provider=name, timeout=10)
            except TokenBrokerError as exc:
                raise DiscoveryError(
                    f"discovery for provider {name!r} failed: {exc.message}"
                ) from None
            if resp.status == 404:
                last_error = f"{url} answered 404"
                continue
            if resp.status != 200:
                raise DiscoveryError(
                    f"discovery for provider {name!r} failed: {url} answered {resp.status}"
                )
            try:
                doc = json.loads(resp.body)
            except ValueError:
                raise DiscoveryError(
                    f"discovery for provider {name!r} failed: {url} is not JSON"
                ) from None
            if not isinstance(doc, dict):
                raise DiscoveryError(f"discovery for provider {name!r} failed: not a JSON object")
            try:
                validate_metadata(
                    doc, expected_issuer=issuer, allow_insecure_loopback=insecure, provider=name
                )
            except TokenBrokerError as exc:
                raise DiscoveryError(
                    f"discovery for provider {name!r} failed: {exc.message}"
                ) from None
            return doc
        raise DiscoveryError(f"discovery for provider {name!r} failed: {last_error}")
