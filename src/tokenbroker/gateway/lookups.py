"""Hot-path lookups with caches that every replica drops on invalidation.

Per request the gateway needs the agent session, the user's connection to the provider, the
agent's grants and the access token. All four are cached in memory, keyed so one user's entry
can never answer for another (token digest; (tenant, user, provider); (tenant, user, agent,
provider); connection id + version). An entry is used only while its generation equals the
:class:`~tokenbroker.invalidation.InvalidationBus` generation, which moves at once on this
replica and within one poll interval on the others. Sessions are re-checked for expiry on
every use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tokenbroker.connections.model import Connection
from tokenbroker.connections.store import find
from tokenbroker.ids import digest
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.policy import sessions
from tokenbroker.policy.decision import GrantView
from tokenbroker.policy.grants import active_for
from tokenbroker.policy.sessions import AgentSession, InvalidToken
from tokenbroker.secret import Secret
from tokenbroker.services import Services

MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class CachedToken:
    value: Secret
    version: int
    expires_at: datetime | None


class Lookups:
    def __init__(self, svc: Services, refresher: Refresher) -> None:
        self._svc = svc
        self._refresher = refresher
        self._generation = -1
        self._sessions: dict[str, AgentSession] = {}
        self._connections: dict[tuple[str, str, str], Connection | None] = {}
        self._grants: dict[tuple[str, str, str, str], tuple[GrantView, ...]] = {}
        self._tokens: dict[str, CachedToken] = {}
        self._skew = timedelta(seconds=svc.settings.refresh.skew_seconds)

    def _fresh(self) -> None:
        generation = self._svc.bus.generation
        if generation != self._generation or len(self._sessions) > MAX_ENTRIES:
            self._sessions.clear()
            self._connections.clear()
            self._grants.clear()
            self._tokens.clear()
            self._generation = generation

    def forget_connection(self, tenant_id: str, user_id: str, provider: str) -> None:
        self._connections.pop((tenant_id, user_id, provider), None)

    async def session(self, presented: str, now: datetime) -> AgentSession:
        self._fresh()
        key = digest(presented)
        found = self._sessions.get(key)
        if found is None:
            found = await sessions.authenticate(self._svc, presented)
            self._sessions[key] = found
        if found.expires_at <= now:
            self._sessions.pop(key, None)
            raise InvalidToken("the agent session has expired")
        return found

    async def connection(self, tenant_id: str, user_id: str, provider: str) -> Connection | None:
        self._fresh()
        key = (tenant_id, user_id, provider)
        if key in self._connections:
            return self._connections[key]
        async with self._svc.engine.connect() as conn:
            found = await find(conn, tenant_id, user_id, provider)
        self._connections[key] = found
        return found

    async def grants(self, session: AgentSession, provider: str) -> tuple[GrantView, ...]:
        self._fresh()
        key = (session.tenant_id, session.user_id, session.agent_id, provider)
        cached = self._grants.get(key)
        if cached is None:
            async with self._svc.engine.connect() as conn:
                found = await active_for(
                    conn, session.tenant_id, session.user_id, session.agent_id, provider
                )
            cached = tuple(g.view() for g in found)
            self._grants[key] = cached
        return cached

    async def token(
        self, connection: Connection, now: datetime, *, newer_than: int | None = None
    ) -> CachedToken:
        """The access token; through the refresher when missing, about to expire, or stale."""
        cached = self._tokens.get(connection.id)
        if (
            cached is not None
            and (newer_than is None or cached.version > newer_than)
            and (cached.expires_at is None or cached.expires_at - self._skew > now)
        ):
            return cached
        fresh = await self._refresher.access_token(
            connection.tenant_id, connection.id, newer_than=newer_than
        )
        token = CachedToken(
            fresh.value, fresh.connection.version, fresh.connection.access_token_expires_at
        )
        self._tokens[connection.id] = token
        self.forget_connection(connection.tenant_id, connection.user_id, connection.provider)
        return token
