"""Disconnecting: disable at once, revoke at the provider (RFC 7009), then erase the tokens.

The connection row goes away in the same transaction that moves its sealed tokens to a durable
revocation job, so nothing can use them any more. The job is tried at once and, while the
provider cannot be reached, retried with exponential backoff for up to 24 hours; the tokens are
erased when revocation succeeds or gives up, and the outcome is recorded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from tokenbroker.connect.exchange import client_auth
from tokenbroker.connections.store import get
from tokenbroker.db.schema import connections, revocations
from tokenbroker.errors import NotFound, TokenBrokerError
from tokenbroker.ids import new_id
from tokenbroker.lifecycle.notify import connection_event
from tokenbroker.policy.grants import end_for_connection, ended_with_connection
from tokenbroker.protocol.rfc7009 import classify_revocation_response, revocation_request
from tokenbroker.secret import Secret
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext

log = logging.getLogger("tokenbroker.revocation")
GIVE_UP_AFTER = timedelta(hours=24)
MAX_BACKOFF = timedelta(hours=1)
TOKEN_FIELDS = ("refresh_token", "access_token")  # refresh token first (RFC 7009 §2.1)


async def delete_connection(
    svc: Services, tenant_id: str, connection_id: str, *, actor: str = "admin"
) -> str:
    """Returns ``"revoked"``, ``"erased"`` (nothing to revoke) or ``"revocation_pending"``."""
    now = svc.clock.now()
    job_id = new_id("rv")
    async with svc.engine.begin() as conn:
        found = await get(conn, tenant_id, connection_id)
        if found is None:
            raise NotFound(f"no connection {connection_id!r}")
        tokens = await svc.sealed.get_many(
            conn, tenant_id, found.user_id, "connection", found.id, TOKEN_FIELDS
        )
        for field, value in tokens.items():
            ctx = SealContext(tenant_id, found.user_id, "revocation", job_id, field)
            await svc.sealed.put(conn, ctx, value)
        await svc.sealed.delete_owner(conn, "connection", found.id)
        await conn.execute(delete(connections).where(connections.c.id == found.id))
        ended = await end_for_connection(conn, found.id, now)
        await svc.bus.publish(conn, "connection", found.id)
        await conn.execute(
            insert(revocations).values(
                id=job_id,
                tenant_id=tenant_id,
                user_id=found.user_id,
                provider=found.provider,
                connection_id=found.id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                give_up_at=now + GIVE_UP_AFTER,
                created_at=now,
                updated_at=now,
            )
        )
    await connection_event(
        svc,
        "connection.deleted",
        tenant_id=found.tenant_id,
        user_id=found.user_id,
        provider=found.provider,
        connection_id=found.id,
        actor=actor,
        detail={"revocation_id": job_id},
    )
    for event in ended_with_connection(
        ended,
        tenant_id=found.tenant_id,
        user_id=found.user_id,
        provider=found.provider,
        connection_id=found.id,
        actor=actor,
    ):
        await svc.recorder.record(event)
    return await attempt(svc, job_id)


async def attempt(svc: Services, job_id: str) -> str:
    """One revocation attempt; claims the job so two workers never run it at once."""
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        row = (await conn.execute(select(revocations).where(revocations.c.id == job_id))).first()
        if row is None or row._mapping["status"] != "pending":
            return "done"
        job = dict(row._mapping)
        claimed = await conn.execute(
            update(revocations)
            .where(
                revocations.c.id == job_id,
                revocations.c.attempts == job["attempts"],
                revocations.c.status == "pending",
            )
            .values(attempts=job["attempts"] + 1, next_attempt_at=now + timedelta(minutes=5))
        )
        if claimed.rowcount != 1:
            return "revocation_pending"
        tokens = await svc.sealed.get_many(
            conn, job["tenant_id"], job["user_id"], "revocation", job_id, TOKEN_FIELDS
        )
    outcome, error = await _revoke_all(svc, job["provider"], tokens)
    if outcome == "retry" and now < job["give_up_at"]:
        delay = _backoff(job["attempts"] + 1)
        async with svc.engine.begin() as conn:
            await conn.execute(
                update(revocations)
                .where(revocations.c.id == job_id)
                .values(next_attempt_at=now + delay, last_error=error, updated_at=now)
            )
        log.warning("revocation %s at %s will be retried: %s", job_id, job["provider"], error)
        return "revocation_pending"
    final = {"revoked": "done", "nothing": "done", "failed": "gave_up", "retry": "gave_up"}[outcome]
    async with svc.engine.begin() as conn:
        await svc.sealed.delete_owner(conn, "revocation", job_id)
        await conn.execute(
            update(revocations)
            .where(revocations.c.id == job_id)
            .values(status=final, last_error=error, updated_at=svc.clock.now())
        )
    await connection_event(
        svc,
        "connection.revoked",
        tenant_id=job["tenant_id"],
        user_id=job["user_id"],
        provider=job["provider"],
        connection_id=job["connection_id"],
        outcome=outcome if final == "done" else "gave_up",
        detail={"revocation_id": job_id, "attempts": job["attempts"] + 1, "error": error},
    )
    return {"revoked": "revoked", "nothing": "erased"}.get(outcome, "revocation_failed")


async def _revoke_all(
    svc: Services, provider: str, tokens: Mapping[str, Secret]
) -> tuple[str, str | None]:
    try:
        spec = await svc.providers.get(provider)
    except TokenBrokerError as exc:
        return "retry", exc.code
    if spec.revocation_endpoint is None or not tokens:
        return "nothing", None
    for field in TOKEN_FIELDS:
        if field not in tokens or field not in spec.revocation_token_types:
            continue
        request = revocation_request(
            spec.revocation_endpoint,
            tokens[field],
            "refresh_token" if field == "refresh_token" else "access_token",
            client_auth(spec),
        )
        try:
            resp = await svc.transport.send(request, provider=provider, timeout=10)
        except TokenBrokerError as exc:
            return "retry", exc.code
        verdict = classify_revocation_response(resp.status)
        if verdict != "revoked":
            return verdict, f"revocation endpoint answered {resp.status}"
    return "revoked", None


def _backoff(attempts: int) -> timedelta:
    base = min(MAX_BACKOFF.total_seconds(), 30 * 2 ** min(attempts, 12))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not secrecy


async def due_jobs(svc: Services, now: datetime, limit: int = 50) -> list[str]:
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(revocations.c.id)
            .where(revocations.c.status == "pending", revocations.c.next_attempt_at <= now)
            .limit(limit)
        )
        return list(rows.scalars())
