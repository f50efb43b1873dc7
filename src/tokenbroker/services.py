"""The broker's services, built once per process and handed to flows and routes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.clock import Clock
from tokenbroker.config import Settings, TenantSettings
from tokenbroker.invalidation import InvalidationBus
from tokenbroker.providers.jwks import JwksCache
from tokenbroker.providers.registry import ProviderRegistry
from tokenbroker.records import Recorder
from tokenbroker.transport import Transport
from tokenbroker.vault.sealed_store import SealedStore


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sealed: SealedStore
    providers: ProviderRegistry
    jwks: JwksCache
    transport: Transport
    recorder: Recorder
    clock: Clock
    bus: InvalidationBus

    def tenant(self, tenant_id: str) -> TenantSettings:
        return self.settings.tenants[tenant_id]
