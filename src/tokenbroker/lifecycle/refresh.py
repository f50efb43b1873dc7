"""Refresh that never loses a token (RFC 6749 §6, RFC 9700 §4.14).

Single flight at two levels. In one process, concurrent callers for a connection share one
task. Across processes and replicas, that task must win the database lease on the current
``version`` before it may send the refresh token; everyone else waits for the version to move.
Each attempt runs under a hard deadline well inside the lease, and backoff waits happen after
the lease is released, so two holders can never send the same refresh token.

A request waits for the shared refresh at most ``request_wait_ms``: a token endpoint that hangs
or a long backoff answers it with a typed 503 (``Retry-After``) while the refresh itself goes
on, still single flight, and stores its tokens for the next call.

Failures are classified: ``invalid_grant`` → ``needs_reauth`` (only if our version is still the
stored one); ``invalid_client`` / ``unauthorized_client`` → the provider is misconfigured, every
token kept; 5xx, 429, timeouts and network errors → retried with jittered backoff, tokens kept,
the connection ``degraded`` until the next success, with a cooldown for the background refresher.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import update

from tokenbroker.config import RefreshSettings
from tokenbroker.connect.exchange import client_auth, parse_tokens
from tokenbroker.connections.model import NEEDS_REAUTH, Connection
from tokenbroker.connections.store import get
from tokenbroker.db.schema import connections
from tokenbroker.errors import (
    NeedsReauth,
    NotFound,
    ProviderError,
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnavailable,
    RefreshUnavailable,
    TokenBrokerError,
)
from tokenbroker.lifecycle import lease
from tokenbroker.lifecycle.attempts import RetryableFailure, UncertainFailure, retry_after_seconds
from tokenbroker.lifecycle.health import MISCONFIGURED, OK, ProviderHealth
from tokenbroker.lifecycle.notify import connection_event
from tokenbroker.lifecycle.shared_tasks import SharedTasks
from tokenbroker.observability.metrics import METRICS
from tokenbroker.protocol.rfc6749 import refresh_token_request
from tokenbroker.protocol.token_response import TokenResponse
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext

log = logging.getLogger("tokenbroker.refresh")
FATAL_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
USED_GRAIN_SECONDS = 60
# A caller whose refresh another process holds retries the lease at these intervals (doubling
# from the first to the cap): it sees the new token at most MAX_POLL after it is stored, so a
# use waits one provider round trip plus under 50 ms (bench/reliability.py). One attempt is a
# read and one short UPDATE: at the cap, 40 a second per waiting process and connection (the
# callers of one process share it).
FIRST_POLL = 0.01
MAX_POLL = 0.025


@dataclass(frozen=True)
class AccessToken:
    """A usable access token and the connection version it belongs to."""

    value: Secret
    connection: Connection


class Refresher:
    def __init__(self, svc: Services, health: ProviderHealth) -> None:
        self._svc = svc
        self._health = health
        self._settings: RefreshSettings = svc.settings.refresh
        self._owner = f"{secrets.token_hex(6)}"
        self._inflight: SharedTasks[str, None] = SharedTasks()
        self._fetches: SharedTasks[tuple[str, str, int | None], AccessToken] = SharedTasks()

    @property
    def health(self) -> ProviderHealth:
        return self._health

    def needs_refresh(self, connection: Connection, now: datetime) -> bool:
        expires = connection.access_token_expires_at
        if expires is None or not connection.has_refresh_token:
            return False
        return expires - timedelta(seconds=self._settings.skew_seconds) <= now

    async def access_token(
        self, tenant_id: str, connection_id: str, *, newer_than: int | None = None
    ) -> AccessToken:
        """The connection's access token, refreshed first when it is about to expire.

        ``newer_than``: the caller saw this version's token rejected (an upstream 401); return a
        newer one, refreshing if nobody has yet.

        Concurrent callers for the same connection share one fetch (load, refresh if due,
        unseal): a burst of requests finding an expired token costs one refresh and one read,
        not one read per request after it.
        """
        task = self._fetches.join(
            (tenant_id, connection_id, newer_than),
            lambda: self._fetch(tenant_id, connection_id, newer_than),
        )
        return await asyncio.shield(task)

    async def _fetch(
        self, tenant_id: str, connection_id: str, newer_than: int | None
    ) -> AccessToken:
        connection = await self._load(tenant_id, connection_id)
        now = self._svc.clock.now()
        stale = newer_than is not None and connection.version <= newer_than
        if connection.status == NEEDS_REAUTH:
            raise NeedsReauth(connection.status_reason or "the connection needs its user again")
        if stale or self.needs_refresh(connection, now):
            wait = self._settings.request_wait_ms / 1000
            await self._single_flight(tenant_id, connection, force=stale, wait=wait)
            connection = await self._load(tenant_id, connection_id)
        token = await self._read(connection, "access_token")
        if token is None:
            raise NeedsReauth("the connection holds no access token")
        await self._mark_used(connection, now)
        return AccessToken(token, connection)

    async def _mark_used(self, connection: Connection, now: datetime) -> None:
        """``last_used_at`` decides what the background refresher keeps warm (1-minute grain)."""
        last = connection.last_used_at
        if last is not None and now - last < timedelta(seconds=USED_GRAIN_SECONDS):
            return
        async with self._svc.engine.begin() as conn:
            await conn.execute(
                update(connections)
                .where(connections.c.id == connection.id)
                .values(last_used_at=now)
            )

    async def refresh_ahead(self, seen: Connection) -> None:
        """Background refresh of the version we saw; a no-op if someone refreshed meanwhile."""
        await self._single_flight(seen.tenant_id, seen, force=True)

    async def refresh_now(self, tenant_id: str, connection_id: str) -> Connection:
        """Force one refresh (admin), even when the token is still fresh."""
        connection = await self._load(tenant_id, connection_id)
        if not connection.has_refresh_token:
            raise NeedsReauth("this connection has no refresh token")
        await self._single_flight(tenant_id, connection, force=True)
        return await self._load(tenant_id, connection_id)

    # --- single flight ---------------------------------------------------------------------
    async def _single_flight(
        self, tenant_id: str, seen: Connection, *, force: bool, wait: float | None = None
    ) -> None:
        """Join the connection's refresh (start it if none runs); ``wait``: give up waiting
        after this many seconds, leaving the refresh to finish on its own."""
        task = self._inflight.join(
            seen.id,
            lambda: self._refresh(tenant_id, seen, force),
            on_done=METRICS.refresh_done(seen.provider),
        )
        if wait is None:
            await asyncio.shield(task)
            return
        done, _pending = await asyncio.wait({task}, timeout=wait)  # never cancels the task
        if not done:
            raise RefreshUnavailable(
                f"the refresh of the {seen.provider} connection is taking longer than "
                f"{wait:g} s; it goes on, and the next call uses its token",
                retry_after=1,
            )
        task.result()

    async def _refresh(self, tenant_id: str, seen: Connection, force: bool) -> None:
        svc, cfg = self._svc, self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.wait_seconds
        attempts, poll = 0, FIRST_POLL
        while True:
            current = await self._load(tenant_id, seen.id)
            if current.status == NEEDS_REAUTH:
                raise NeedsReauth(current.status_reason or "the connection needs its user again")
            now = svc.clock.now()
            if current.version > seen.version and (force or not self.needs_refresh(current, now)):
                return  # another holder refreshed meanwhile: use its token
            problem = await self._health.problem(current.provider)
            if problem is not None:
                raise ProviderMisconfigured(
                    f"provider {current.provider!r} rejected the broker's client credentials "
                    f"({problem}); the operator must fix its configuration"
                )
            async with svc.engine.begin() as conn:
                claimed = await lease.claim(
                    conn, current.id, current.version, self._owner, now, cfg.lease_seconds
                )
            if not claimed:
                if loop.time() + poll > deadline:
                    raise RefreshUnavailable(
                        f"a refresh of the {current.provider} connection is still in progress",
                        retry_after=max(1, cfg.lease_seconds // 3),
                    )
                await asyncio.sleep(poll)
                poll = min(poll * 2, MAX_POLL)
                continue
            try:
                await self._attempt(current)
                return
            except RetryableFailure as retry:
                attempts += 1
                delay = self._backoff(attempts, retry.retry_after)
                if attempts >= cfg.max_attempts or loop.time() + delay > deadline:
                    raise RefreshUnavailable(
                        f"provider {current.provider!r} is unavailable for refresh ({retry.error})",
                        retry_after=max(1, int(delay)),
                    ) from None
                await asyncio.sleep(delay)  # outside the lease: it was released

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        base: float = min(0.25 * 2 ** (attempts - 1), 5.0) * random.uniform(0.5, 1.5)  # noqa: S311
        return max(base, retry_after or 0.0)

    # --- one attempt, holding the lease on `current.version` --------------------------------
    async def _attempt(self, current: Connection) -> None:
        svc, cfg = self._svc, self._settings
        try:
            spec = await svc.providers.get(current.provider)
        except TokenBrokerError as exc:
            await self._release_failed(current, exc.code, None)
            raise RetryableFailure(exc.code, None) from None
        refresh_token = await self._read(current, "refresh_token")
        if refresh_token is None:
            await self._give_up(current, "no refresh token is stored")
        request = refresh_token_request(
            spec.token_endpoint,
            refresh_token=refresh_token,
            auth=client_auth(spec),
            scopes=current.scopes if spec.refresh_sends_scope else None,
            scope_separator=spec.scope_separator,
            resource=spec.resource,
        )
        try:
            raw = await asyncio.wait_for(
                svc.transport.send(
                    request, provider=spec.name, timeout=cfg.attempt_timeout_seconds
                ),
                timeout=cfg.attempt_timeout_seconds,
            )
            if raw.status == 429:
                retry_after = retry_after_seconds(raw.headers.get("Retry-After"))
                await self._release_failed(current, "rate_limited", retry_after)
                raise RetryableFailure("rate_limited", retry_after)
            tokens = parse_tokens(spec, raw.status, raw.content_type, raw.body, svc.clock.now())
        except (TimeoutError, ProviderTimeout):
            # Nobody sends this refresh token again until twice the deadline after it was sent.
            uncertain = float(cfg.attempt_timeout_seconds)
            await self._release_failed(current, "timeout", None, hold_for=uncertain)
            raise UncertainFailure("timeout", uncertain) from None
        except ProviderUnavailable as exc:
            await self._release_failed(current, exc.code, None)
            raise RetryableFailure(exc.code, None) from None
        except ProviderError as exc:
            await self._classified(current, spec, exc)
        except TokenBrokerError as exc:  # malformed answer: keep the token, try again later
            await self._release_failed(current, exc.code, None)
            raise RetryableFailure(exc.code, None) from None
        await self._store(current, spec, tokens)

    async def _classified(
        self, current: Connection, spec: ProviderSpec, exc: ProviderError
    ) -> NoReturn:
        if exc.oauth_error == "invalid_grant":
            await self._give_up(current, "invalid_grant: the provider no longer accepts the grant")
        if exc.oauth_error in FATAL_CLIENT_ERRORS:
            async with self._svc.engine.begin() as conn:
                await lease.release(conn, current.id, current.version, self._owner)
            await self._health.set(spec.name, MISCONFIGURED, exc.oauth_error)
            await self._svc.recorder.record(
                Event(
                    type="provider.misconfigured",
                    tenant_id=current.tenant_id,
                    actor="system",
                    provider=current.provider,
                    outcome="failed",
                    detail={"reason": exc.oauth_error},
                )
            )
            raise ProviderMisconfigured(
                f"provider {spec.name!r} answered {exc.oauth_error}: check its client_id and "
                "client secret"
            )
        await self._release_failed(current, exc.oauth_error, None)
        raise RetryableFailure(exc.oauth_error, None)

    async def _give_up(self, current: Connection, reason: str) -> NoReturn:
        now = self._svc.clock.now()
        async with self._svc.engine.begin() as conn:
            marked = await lease.mark_needs_reauth(
                conn, current.id, current.version, self._owner, reason, now
            )
            if marked:
                await self._svc.bus.publish(conn, "connection", current.id)
        if marked:
            await connection_event(
                self._svc,
                "connection.needs_reauth",
                tenant_id=current.tenant_id,
                user_id=current.user_id,
                provider=current.provider,
                connection_id=current.id,
                outcome="needs_reauth",
                detail={"reason": reason, "version": current.version},
            )
            raise NeedsReauth(reason)
        raise RetryableFailure("lost_lease", 0.0)  # someone else moved the version: re-read

    async def _store(self, current: Connection, spec: ProviderSpec, tokens: TokenResponse) -> None:
        svc = self._svc
        now = svc.clock.now()
        async with svc.engine.begin() as conn:
            stored = await lease.store(
                conn,
                svc.sealed,
                tenant_id=current.tenant_id,
                user_id=current.user_id,
                connection_id=current.id,
                version=current.version,
                owner=self._owner,
                tokens=tokens,
                scopes=tokens.scope,
                now=now,
            )
        if not stored:
            log.error("refresh of %s finished after its lease was lost", current.id)
            raise RetryableFailure("lost_lease", 0.0)
        if await self._health.problem(spec.name) is not None:
            await self._health.set(spec.name, OK, None)
        await connection_event(
            svc,
            "connection.refreshed",
            tenant_id=current.tenant_id,
            user_id=current.user_id,
            provider=current.provider,
            connection_id=current.id,
            detail={"version": current.version + 1, "rotated": tokens.refresh_token is not None},
        )

    async def _release_failed(
        self,
        current: Connection,
        error: str,
        retry_after: float | None,
        *,
        hold_for: float | None = None,
    ) -> None:
        """Release the lease after a temporary failure; ``hold_for``: seconds during which no
        process may claim it again (an answer may still be coming)."""
        cfg = self._settings
        failures = current.refresh_failures + 1
        cooldown = min(cfg.cooldown_max_seconds, cfg.cooldown_base_seconds * 2 ** (failures - 1))
        now = self._svc.clock.now()
        not_before = now + timedelta(seconds=max(cooldown, retry_after or 0))
        hold_until = None if hold_for is None else now + timedelta(seconds=hold_for)
        async with self._svc.engine.begin() as conn:
            await lease.release_failed(
                conn,
                current.id,
                current.version,
                self._owner,
                error=error,
                failures=failures,
                not_before=not_before,
                now=now,
                hold_until=hold_until,
            )
        log.warning("refresh of %s failed (%s); tokens kept", current.id, error)

    # --- reading ----------------------------------------------------------------------------
    async def _load(self, tenant_id: str, connection_id: str) -> Connection:
        async with self._svc.engine.connect() as conn:
            found = await get(conn, tenant_id, connection_id)
        if found is None:
            raise NotFound(f"no connection {connection_id!r}")
        return found

    async def _read(self, connection: Connection, field: str) -> Secret | None:
        ctx = SealContext(
            connection.tenant_id, connection.user_id, "connection", connection.id, field
        )
        async with self._svc.engine.connect() as conn:
            return await self._svc.sealed.get(conn, ctx)
