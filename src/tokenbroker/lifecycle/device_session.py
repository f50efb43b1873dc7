"""Device sessions (RFC 8628): starting one, reading it, and confirming its user.

§3.1-3.2: the broker asks the provider's device authorization endpoint for a ``user_code`` the
user enters at ``verification_uri``; the ``device_code`` is sealed at once. The tokens a later
poll obtains are held as *pending* until the application confirms the initiating user, who has
been shown the provider account first: whoever approves a user code may not be that user
(device-code phishing, §5.4), so nothing is stored as a connection before that proof.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.connect.complete import UserMismatch
from tokenbroker.connect.exchange import client_auth
from tokenbroker.connect.pending_store import HeldGrant, store_held_grant
from tokenbroker.connections.model import Connection
from tokenbroker.connections.store import find, merged_scopes
from tokenbroker.connections.store import get as get_connection
from tokenbroker.db.schema import device_sessions
from tokenbroker.errors import BadRequest, Conflict, NotFound
from tokenbroker.ids import new_id
from tokenbroker.lifecycle.notify import connection_event
from tokenbroker.protocol import rfc8628
from tokenbroker.records import Event, Scalar
from tokenbroker.services import Services
from tokenbroker.vault.envelope import SealContext

PENDING = "pending"
PENDING_CONFIRMATION = "pending_confirmation"
CONNECTED = "connected"
DENIED = "denied"
EXPIRED = "expired"
FAILED = "failed"
OWNER_KIND = "device_session"


class DeviceFlowUnsupported(BadRequest):
    code = "device_flow_unsupported"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class DeviceSession:
    id: str
    tenant_id: str
    user_id: str
    provider: str
    scopes: tuple[str, ...]
    status: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval_seconds: int
    next_poll_at: datetime
    account_id: str | None
    account_label: str | None
    connection_id: str | None
    error: str | None
    error_message: str | None
    expires_at: datetime
    granted_scopes: tuple[str, ...]
    connect_vars: Mapping[str, str]
    access_token_expires_at: datetime | None

    @classmethod
    def from_mapping(cls, m: Any) -> DeviceSession:
        values = {f.name: m[f.name] for f in fields(cls)}
        values["scopes"] = tuple(m["scopes"])
        values["granted_scopes"] = tuple(m["granted_scopes"] or ())
        values["connect_vars"] = dict(m["connect_vars"] or {})
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The management API's view: never the device code or a token."""
        account = None
        if self.account_id is not None:
            account = {"id": self.account_id, "label": self.account_label}
        return {
            "id": self.id,
            "user_id": self.user_id,
            "provider": self.provider,
            "scopes": list(self.scopes),
            "status": self.status,
            "user_code": self.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": self.verification_uri_complete,
            "interval": self.interval_seconds,
            "expires_at": _iso(self.expires_at),
            "account": account,
            "connection_id": self.connection_id,
            "error": self.error,
            "message": self.error_message,
        }


def seal_context(session: DeviceSession, field: str) -> SealContext:
    return SealContext(session.tenant_id, session.user_id, OWNER_KIND, session.id, field)


async def load(
    conn: AsyncConnection, session_id: str, *, tenant_id: str | None
) -> DeviceSession | None:
    query = select(device_sessions).where(device_sessions.c.id == session_id)
    if tenant_id is not None:
        query = query.where(device_sessions.c.tenant_id == tenant_id)
    row = (await conn.execute(query)).first()
    return None if row is None else DeviceSession.from_mapping(row._mapping)


async def require(svc: Services, session_id: str, *, tenant_id: str) -> DeviceSession:
    """A session of this tenant; another tenant's id is indistinguishable from none (404)."""
    async with svc.engine.connect() as conn:
        found = await load(conn, session_id, tenant_id=tenant_id)
    if found is None:
        raise NotFound(f"no device session {session_id!r}")
    return found


async def record(
    svc: Services,
    session: DeviceSession,
    type_: str,
    outcome: str,
    detail: dict[str, Scalar],
    *,
    actor: str = "system",
    connection_id: str | None = None,
) -> None:
    await svc.recorder.record(
        Event(
            type=type_,
            tenant_id=session.tenant_id,
            actor=actor,
            user_id=session.user_id,
            provider=session.provider,
            connection_id=connection_id,
            outcome=outcome,
            detail={"device_session_id": session.id, **detail},
        )
    )


async def start(
    svc: Services,
    *,
    tenant_id: str,
    user_id: str,
    provider: str,
    scopes: Sequence[str],
    actor: str = "admin",
) -> DeviceSession:
    """Ask the provider for a user code (§3.1) and keep the device code sealed."""
    spec = await svc.providers.get(provider)  # unknown or undiscoverable provider fails here
    endpoint = spec.device_authorization_endpoint
    if endpoint is None:
        raise DeviceFlowUnsupported(
            f"provider {provider!r} has no device_authorization_endpoint (RFC 8628): "
            "connect this user with a connect session instead"
        )
    async with svc.engine.connect() as conn:
        existing = await find(conn, tenant_id, user_id, provider)
    # Incremental consent as in the redirect flow: ask for what is held already as well.
    wanted = merged_scopes(spec.scopes, existing.scopes if existing else (), scopes)
    request = rfc8628.device_authorization_request(
        endpoint,
        auth=client_auth(spec),
        scopes=wanted,
        scope_separator=spec.scope_separator,
        resource=spec.resource,
    )
    raw = await svc.transport.send(request, provider=spec.name)
    now = svc.clock.now()
    answer = rfc8628.parse_device_authorization_response(
        raw.status,
        raw.content_type,
        raw.body,
        now=now,
        allow_insecure_loopback=spec.allow_insecure_loopback,
    )
    session_id = new_id("ds")
    async with svc.engine.begin() as conn:
        await conn.execute(
            insert(device_sessions).values(
                id=session_id,
                tenant_id=tenant_id,
                user_id=user_id,
                provider=provider,
                scopes=list(wanted),
                status=PENDING,
                user_code=answer.user_code,
                verification_uri=answer.verification_uri,
                verification_uri_complete=answer.verification_uri_complete,
                interval_seconds=answer.interval,
                next_poll_at=now + timedelta(seconds=answer.interval),
                expires_at=answer.expires_at,
                created_at=now,
                updated_at=now,
            )
        )
        ctx = SealContext(tenant_id, user_id, OWNER_KIND, session_id, "device_code")
        await svc.sealed.put(conn, ctx, answer.device_code)
        session = await load(conn, session_id, tenant_id=tenant_id)
    assert session is not None
    await record(svc, session, "device.started", "ok", {"scopes": " ".join(wanted)}, actor=actor)
    return session


async def confirm(
    svc: Services, tenant_id: str, device_session_id: str, user_id: str, *, actor: str = "admin"
) -> Connection:
    """The application proves its signed-in user is the one the session was started for."""
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        session = await load(conn, device_session_id, tenant_id=tenant_id)
        if session is None:
            raise NotFound(f"no device session {device_session_id!r}")
        if session.expires_at <= now:
            outcome, error = EXPIRED, "the device session expired before its user was confirmed"
        elif user_id != session.user_id:
            outcome, error = FAILED, "confirmed for another user than the session was started for"
        else:
            outcome, error = CONNECTED, None
        # Single use, even under concurrent confirmations: only one UPDATE can win.
        won = await conn.execute(
            update(device_sessions)
            .where(
                device_sessions.c.id == session.id,
                device_sessions.c.status == PENDING_CONFIRMATION,
            )
            .values(
                status=outcome,
                error=None if error is None else _ERROR_CODES[outcome],
                error_message=error,
                updated_at=now,
            )
        )
        if won.rowcount != 1:
            raise Conflict(f"device session {device_session_id!r} is not awaiting confirmation")
        if outcome == CONNECTED:
            connection_id = await store_held_grant(svc, conn, _held(session))
            await conn.execute(
                update(device_sessions)
                .where(device_sessions.c.id == session.id)
                .values(connection_id=connection_id)
            )
        else:
            await svc.sealed.delete_owner(conn, OWNER_KIND, session.id)
    if outcome == EXPIRED:
        await record(svc, session, "device.expired", "expired", {}, actor=actor)
        raise Conflict(f"device session {device_session_id!r} has expired")
    if outcome == FAILED:
        await record(
            svc, session, "device.failed", "denied", {"error": "user_mismatch"}, actor=actor
        )
        raise UserMismatch("the signed-in user is not the user this device session was started for")
    await record(
        svc, session, "device.completed", "ok", {}, actor=actor, connection_id=connection_id
    )
    await connection_event(
        svc,
        "connection.connected",
        tenant_id=tenant_id,
        user_id=session.user_id,
        provider=session.provider,
        connection_id=connection_id,
        actor=actor,
    )
    async with svc.engine.connect() as conn:
        connection = await get_connection(conn, tenant_id, connection_id)
    assert connection is not None
    return connection


_ERROR_CODES = {EXPIRED: "expired_token", FAILED: "user_mismatch"}


def _held(session: DeviceSession) -> HeldGrant:
    return HeldGrant(
        tenant_id=session.tenant_id,
        user_id=session.user_id,
        provider=session.provider,
        owner_kind=OWNER_KIND,
        owner_id=session.id,
        granted_scopes=session.granted_scopes,
        account_id=session.account_id,
        account_label=session.account_label,
        connect_vars=session.connect_vars,
        access_token_expires_at=session.access_token_expires_at,
    )
