"""Storing a provider grant held sealed by a flow as the user's connection.

Both flows that obtain tokens for a user — connect links (:mod:`tokenbroker.connect.complete`)
and the device grant (:mod:`tokenbroker.lifecycle.device_session`) — hold them sealed as
*pending* under their own owner until the user is proven, then call :func:`store_held_grant`:
one connection per (tenant, user, provider); a reconnect with another provider account changes
nothing (``account_mismatch``); incremental consent merges scopes; the pending tokens are
re-sealed for the connection and the pending copies erased, all in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connections.model import ACTIVE
from tokenbroker.connections.store import find, merged_scopes
from tokenbroker.db.schema import connections
from tokenbroker.errors import AccountMismatch
from tokenbroker.ids import new_id
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext

TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")


class AccountMismatchError(AccountMismatch):
    pass


@dataclass(frozen=True)
class HeldGrant:
    """What a flow holds once the provider answered: where its tokens are sealed, and facts."""

    tenant_id: str
    user_id: str
    provider: str
    owner_kind: str  # sealed_secrets owner of the pending tokens, e.g. "device_session"
    owner_id: str
    granted_scopes: Sequence[str]
    account_id: str | None
    account_label: str | None
    connect_vars: Mapping[str, str]
    access_token_expires_at: datetime | None


async def store_held_grant(svc: Services, conn: AsyncConnection, held: HeldGrant) -> str:
    """Create or update the connection from ``held``; returns its id.

    Raises :class:`AccountMismatchError` (nothing written) when the user already has a
    connection to this provider under another provider account.
    """
    now = svc.clock.now()
    existing = await find(conn, held.tenant_id, held.user_id, held.provider)
    granted = tuple(held.granted_scopes)
    pending = await svc.sealed.get_many(
        conn, held.tenant_id, held.user_id, held.owner_kind, held.owner_id, TOKEN_FIELDS
    )
    values = dict(
        status=ACTIVE,
        status_reason=None,
        account_id=held.account_id,
        account_label=held.account_label,
        connect_vars=dict(held.connect_vars),
        access_token_expires_at=held.access_token_expires_at,
        updated_at=now,
    )
    if existing is None:
        connection_id = new_id("conn")
        await conn.execute(
            insert(connections).values(
                id=connection_id,
                tenant_id=held.tenant_id,
                user_id=held.user_id,
                provider=held.provider,
                scopes=list(granted),
                has_refresh_token="refresh_token" in pending,
                version=1,
                created_at=now,
                **values,
            )
        )
    else:
        if existing.account_id not in (None, held.account_id):
            raise AccountMismatchError("the provider account differs from the connected one")
        connection_id = existing.id
        await conn.execute(
            update(connections)
            .where(connections.c.id == existing.id)
            .values(
                scopes=list(merged_scopes(granted)),
                has_refresh_token=existing.has_refresh_token or "refresh_token" in pending,
                version=connections.c.version + 1,
                lease_owner=None,
                lease_until=None,
                last_refresh_error=None,
                **values,
            )
        )
    for field, value in pending.items():
        ctx = SealContext(held.tenant_id, held.user_id, "connection", connection_id, field)
        await svc.sealed.put(conn, ctx, value)
    if existing is not None and "id_token" not in pending:
        await svc.sealed.delete_field(conn, "connection", connection_id, "id_token")
    await svc.sealed.delete_owner(conn, held.owner_kind, held.owner_id)
    # Every replica's gateway drops what it cached of this user's connection (a "none", or a
    # status of needs_reauth, or fewer scopes): the agent the user just authorized can go on.
    await svc.bus.publish(conn, "connection", connection_id)
    return connection_id
