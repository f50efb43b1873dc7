"""Server-side web sessions: the cookie holds a random secret, the row only its SHA-256.

A session ends ``session_ttl_seconds`` after sign-in, or ``session_idle_seconds`` after the
last page it loaded, whichever comes first; the time of use is written at most once a minute
(``SEEN_PRECISION_SECONDS``), not on every page.

A row without ``user_id`` is a sign-in in progress (its ``state_hash`` is the OIDC ``state``);
signing in deletes it and creates a new signed-in row under a new secret (rotation), so a
cookie planted before sign-in is worthless after it. The CSRF token of a session is derived
from its secret (HMAC), so it changes with the session and never reveals the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from tokenbroker.db.schema import web_sessions
from tokenbroker.ids import digest, new_id, new_secret_value
from tokenbroker.services import Services

LOGIN_TTL_SECONDS = 600
SEEN_PRECISION_SECONDS = 60


@dataclass(frozen=True)
class WebSession:
    id: str
    tenant_id: str
    user_id: str
    email: str | None
    is_admin: bool
    expires_at: datetime
    csrf: str


@dataclass(frozen=True)
class PendingLogin:
    id: str
    tenant_id: str
    token_hash: str
    next_path: str | None
    expires_at: datetime


def derive(secret: str, purpose: str) -> str:
    """A value only the holder of ``secret`` can compute (CSRF token, PKCE verifier, nonce)."""
    mac = hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def start_login(svc: Services, tenant_id: str, next_path: str | None) -> tuple[str, str]:
    """A sign-in in progress; returns (cookie secret, OIDC state)."""
    secret, state = new_secret_value(), new_secret_value()
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
        await conn.execute(
            insert(web_sessions).values(
                id=new_id("ws"),
                tenant_id=tenant_id,
                user_id=None,
                is_admin=False,
                token_hash=digest(secret),
                state_hash=digest(state),
                next_path=next_path,
                expires_at=now + timedelta(seconds=LOGIN_TTL_SECONDS),
                created_at=now,
            )
        )
    return secret, state


async def take_login(svc: Services, state: str) -> PendingLogin | None:
    """The sign-in ``state`` belongs to, removed (single use even under concurrent callbacks)."""
    async with svc.engine.begin() as conn:
        row = (
            await conn.execute(
                select(web_sessions).where(
                    web_sessions.c.state_hash == digest(state), web_sessions.c.user_id.is_(None)
                )
            )
        ).first()
        if row is None:
            return None
        m = row._mapping
        won = await conn.execute(delete(web_sessions).where(web_sessions.c.id == m["id"]))
        if won.rowcount != 1:
            return None
    return PendingLogin(m["id"], m["tenant_id"], m["token_hash"], m["next_path"], m["expires_at"])


async def sign_in(
    svc: Services,
    *,
    tenant_id: str,
    user_id: str,
    email: str | None,
    is_admin: bool,
    ttl_seconds: int,
    previous_secret: str | None,
) -> str:
    """A new signed-in session (the previous one of this browser ends); returns its secret."""
    secret = new_secret_value()
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        if previous_secret:
            await conn.execute(
                delete(web_sessions).where(web_sessions.c.token_hash == digest(previous_secret))
            )
        await conn.execute(
            insert(web_sessions).values(
                id=new_id("ws"),
                tenant_id=tenant_id,
                user_id=user_id,
                email=email,
                is_admin=is_admin,
                token_hash=digest(secret),
                state_hash=None,
                expires_at=now + timedelta(seconds=ttl_seconds),
                created_at=now,
                last_seen_at=now,
            )
        )
    return secret


async def load(
    svc: Services, secret: str | None, *, idle_seconds: Callable[[str], int]
) -> WebSession | None:
    """The signed-in, unexpired session of this cookie secret, or None. ``idle_seconds`` gives
    a tenant's idle timeout (0: none); a session idle for longer is deleted."""
    if not secret or len(secret) > 128:
        return None
    async with svc.engine.connect() as conn:
        row = (
            await conn.execute(
                select(web_sessions).where(web_sessions.c.token_hash == digest(secret))
            )
        ).first()
    if row is None:
        return None
    m = row._mapping
    now = svc.clock.now()
    if m["user_id"] is None or m["expires_at"] <= now:
        return None
    seen: datetime = m["last_seen_at"] or m["created_at"]
    idle = idle_seconds(m["tenant_id"])
    if idle and now - seen >= timedelta(seconds=idle):
        async with svc.engine.begin() as conn:
            await conn.execute(delete(web_sessions).where(web_sessions.c.id == m["id"]))
        return None
    if now - seen >= timedelta(seconds=SEEN_PRECISION_SECONDS):
        async with svc.engine.begin() as conn:
            await conn.execute(
                update(web_sessions).where(web_sessions.c.id == m["id"]).values(last_seen_at=now)
            )
    return WebSession(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        email=m["email"],
        is_admin=bool(m["is_admin"]),
        expires_at=m["expires_at"],
        csrf=derive(secret, "csrf"),
    )


async def sign_out(svc: Services, secret: str) -> None:
    async with svc.engine.begin() as conn:
        await conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == digest(secret)))


async def known_users(svc: Services, tenant_id: str) -> list[tuple[str, bool, datetime]]:
    """Signed-in users of a tenant with a live session: (user id, admin, expiry)."""
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(web_sessions.c.user_id, web_sessions.c.is_admin, web_sessions.c.expires_at)
            .where(
                web_sessions.c.tenant_id == tenant_id,
                web_sessions.c.user_id.is_not(None),
                web_sessions.c.expires_at > svc.clock.now(),
            )
            .order_by(web_sessions.c.user_id)
        )
        return [(r.user_id, bool(r.is_admin), r.expires_at) for r in rows]
