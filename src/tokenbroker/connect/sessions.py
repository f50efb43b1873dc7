"""Connect sessions: an application asks the broker for a link that connects one user's account.

The link is a broker URL (``{public_url}/connect/{id}``); nothing is stored as a connection until
the user it was minted for is proven (:mod:`tokenbroker.connect.confirm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connections.store import merged_scopes
from tokenbroker.db.schema import connect_sessions
from tokenbroker.errors import BadRequest, NotFound
from tokenbroker.ids import new_id
from tokenbroker.protocol.redirects import check_return_to
from tokenbroker.records import Event
from tokenbroker.services import Services

CREATED = "created"
AUTHORIZING = "authorizing"
PENDING_CONFIRMATION = "pending_confirmation"
COMPLETED = "completed"
FAILED = "failed"


@dataclass(frozen=True)
class ConnectSession:
    id: str
    tenant_id: str
    user_id: str
    provider: str
    scopes: tuple[str, ...]
    return_to: str | None
    status: str
    error: str | None
    error_message: str | None
    expires_at: datetime
    connection_id: str | None
    account_id: str | None
    account_label: str | None

    @classmethod
    def from_mapping(cls, m: Any) -> ConnectSession:
        return cls(
            id=m["id"],
            tenant_id=m["tenant_id"],
            user_id=m["user_id"],
            provider=m["provider"],
            scopes=tuple(m["scopes"]),
            return_to=m["return_to"],
            status=m["status"],
            error=m["error"],
            error_message=m["error_message"],
            expires_at=m["expires_at"],
            connection_id=m["connection_id"],
            account_id=m["account_id"],
            account_label=m["account_label"],
        )

    def link(self, public_url: str) -> str:
        return f"{public_url}/connect/{self.id}"

    def public(self, public_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "provider": self.provider,
            "scopes": list(self.scopes),
            "status": self.status,
            "error": self.error,
            "message": self.error_message,
            "authorization_url": self.link(public_url),
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z"),
            "connection_id": self.connection_id,
            "account": {"id": self.account_id, "label": self.account_label},
        }


def check_user_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise BadRequest("user_id must be a non-empty string of at most 255 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest("user_id must not contain control characters")
    return value


def check_scopes(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(s, str) and s and " " not in s and len(s) <= 512 for s in value
    ):
        raise BadRequest("scopes must be a list of non-empty strings without spaces")
    return tuple(value)


async def create(
    svc: Services,
    *,
    tenant_id: str,
    user_id: str,
    provider: str,
    scopes: Sequence[str],
    return_to: str | None,
    actor: str = "admin",
) -> ConnectSession:
    spec = await svc.providers.get(provider)  # unknown or undiscoverable provider fails here
    tenant = svc.tenant(tenant_id)
    if return_to is not None:
        return_to = check_return_to(
            return_to,
            allowed_origins=tenant.connect.allowed_return_origins,
            public_url=svc.settings.public_url,
        )
    now = svc.clock.now()
    session_id = new_id("cs")
    wanted = merged_scopes(spec.scopes, scopes)
    expires_at = now + timedelta(seconds=tenant.connect.session_ttl_seconds)
    async with svc.engine.begin() as conn:
        await conn.execute(
            insert(connect_sessions).values(
                id=session_id,
                tenant_id=tenant_id,
                user_id=user_id,
                provider=provider,
                scopes=list(wanted),
                return_to=return_to,
                status=CREATED,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
        )
    await svc.recorder.record(
        Event(
            type="connect.session_created",
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            provider=provider,
            outcome="ok",
            detail={"connect_session_id": session_id, "scopes": " ".join(wanted)},
        )
    )
    found = await get(svc, session_id, tenant_id=tenant_id)
    assert found is not None
    return found


async def get(svc: Services, session_id: str, *, tenant_id: str | None) -> ConnectSession | None:
    """Load a session; with ``tenant_id`` it must belong to that tenant (else None)."""
    async with svc.engine.connect() as conn:
        return await load(conn, session_id, tenant_id=tenant_id)


async def load(
    conn: AsyncConnection, session_id: str, *, tenant_id: str | None
) -> ConnectSession | None:
    query = select(connect_sessions).where(connect_sessions.c.id == session_id)
    if tenant_id is not None:
        query = query.where(connect_sessions.c.tenant_id == tenant_id)
    row = (await conn.execute(query)).first()
    return None if row is None else ConnectSession.from_mapping(row._mapping)


async def require(svc: Services, session_id: str, *, tenant_id: str) -> ConnectSession:
    found = await get(svc, session_id, tenant_id=tenant_id)
    if found is None:
        raise NotFound(f"no connect session {session_id!r}")
    return found


async def mark_failed(
    conn: AsyncConnection, session_id: str, error: str, message: str, now: datetime
) -> None:
    await conn.execute(
        update(connect_sessions)
        .where(connect_sessions.c.id == session_id)
        .values(
            status=FAILED, error=error, error_message=message, flow_id_hash=None, updated_at=now
        )
    )
