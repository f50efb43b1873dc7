"""The refresh lease: compare-and-swap on the connection's ``version``.

Only the holder of an unexpired lease on version *v* may send *v*'s refresh token, and only it
may store *v + 1*. No transaction or pooled connection is held while the provider is called:
claiming, storing and releasing are each one short transaction. A holder that dies leaves a
lease that simply expires (``lease_seconds``), and a stale writer's UPDATE matches no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connections.model import ACTIVE, DEGRADED, NEEDS_REAUTH
from tokenbroker.db.schema import connections
from tokenbroker.protocol.token_response import TokenResponse
from tokenbroker.secret import Secret
from tokenbroker.vault.envelope import SealContext
from tokenbroker.vault.sealed_store import SealedStore

_c = connections.c


async def claim(
    conn: AsyncConnection, connection_id: str, version: int, owner: str, now: datetime, ttl: int
) -> bool:
    result = await conn.execute(
        update(connections)
        .where(
            _c.id == connection_id,
            _c.version == version,
            _c.status != NEEDS_REAUTH,
            or_(_c.lease_until.is_(None), _c.lease_until < now),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


def _held(connection_id: str, version: int, owner: str) -> list[ColumnElement[bool]]:
    return [_c.id == connection_id, _c.version == version, _c.lease_owner == owner]


async def store(
    conn: AsyncConnection,
    sealed: SealedStore,
    *,
    tenant_id: str,
    user_id: str,
    connection_id: str,
    version: int,
    owner: str,
    tokens: TokenResponse,
    scopes: tuple[str, ...] | None,
    now: datetime,
) -> bool:
    """Store the new tokens as version + 1, in the caller's transaction; False if not held."""
    values: dict[str, object] = dict(
        version=version + 1,
        lease_owner=None,
        lease_until=None,
        status=ACTIVE,
        status_reason=None,
        access_token_expires_at=tokens.expires_at,
        last_refresh_at=now,
        last_refresh_error=None,
        refresh_failures=0,
        refresh_not_before=None,
        updated_at=now,
    )
    if scopes is not None:
        values["scopes"] = list(scopes)
    result = await conn.execute(
        update(connections).where(*_held(connection_id, version, owner)).values(**values)
    )
    if result.rowcount != 1:
        return False
    fields: Mapping[str, Secret | None] = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,  # None: the provider kept the old one
        "id_token": tokens.id_token,
    }
    for field, value in fields.items():
        if value is not None:
            ctx = SealContext(tenant_id, user_id, "connection", connection_id, field)
            await sealed.put(conn, ctx, value)
    return True


async def mark_needs_reauth(
    conn: AsyncConnection, connection_id: str, version: int, owner: str, reason: str, now: datetime
) -> bool:
    """Only if the stored version is still the one whose refresh token was sent."""
    result = await conn.execute(
        update(connections)
        .where(*_held(connection_id, version, owner))
        .values(
            status=NEEDS_REAUTH,
            status_reason=reason,
            last_refresh_error=reason,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )
    return result.rowcount == 1


async def release_failed(
    conn: AsyncConnection,
    connection_id: str,
    version: int,
    owner: str,
    *,
    error: str,
    failures: int,
    not_before: datetime,
    now: datetime,
    degrade: bool = True,
    hold_until: datetime | None = None,
) -> None:
    """A temporary failure: keep every token, mark degraded, and earn a cooldown.

    ``hold_until``: nobody may claim the lease before then (a request that timed out may still
    be processed by the provider; sending the same refresh token again before it surely has
    could trip reuse detection, in this process or any other).
    """
    values: dict[str, object] = dict(
        lease_owner=None,
        lease_until=hold_until,
        last_refresh_error=error,
        refresh_failures=failures,
        refresh_not_before=not_before,
        updated_at=now,
    )
    if degrade:
        values["status"] = DEGRADED
    await conn.execute(
        update(connections).where(*_held(connection_id, version, owner)).values(**values)
    )


async def release(conn: AsyncConnection, connection_id: str, version: int, owner: str) -> None:
    await conn.execute(
        update(connections)
        .where(*_held(connection_id, version, owner))
        .values(lease_owner=None, lease_until=None)
    )
