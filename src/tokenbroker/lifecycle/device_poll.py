"""Polling the token endpoint for device sessions (RFC 8628 §3.4-3.5), safe across replicas.

A due session is claimed with a compare-and-swap on ``poll_owner``/``poll_until`` (and on
``next_poll_at``), so one replica polls it at a time and a holder that dies leaves a claim that
simply expires. Each claim polls once: ``authorization_pending`` waits ``interval``,
``slow_down`` adds 5 seconds to it for good (§3.5), ``access_denied`` and ``expired_token`` end
the session. Tokens are checked like the redirect flow's (ID token per OIDC Core §3.1.3.7,
account, connect-time variables) and held sealed as *pending* until the user is confirmed.
No transaction is held while the provider is called.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update

from tokenbroker.connect import complete
from tokenbroker.connect.exchange import ProviderGrant, client_auth, parse_tokens
from tokenbroker.connect.held import AccountMismatchError
from tokenbroker.connect.pending_store import grant_from_tokens
from tokenbroker.connections.store import find
from tokenbroker.db.schema import device_sessions
from tokenbroker.errors import (
    DiscoveryError,
    ProviderError,
    ProviderUnavailable,
    TokenBrokerError,
)
from tokenbroker.lifecycle import device_session as ds
from tokenbroker.protocol import rfc8628
from tokenbroker.records import Scalar
from tokenbroker.services import Services

log = logging.getLogger("tokenbroker.device")
POLL_LEASE_SECONDS = 60  # longer than a token call (10 s) plus JWKS and userinfo calls
_d = device_sessions.c


def _due(now: datetime) -> ColumnElement[bool]:
    free = or_(_d.poll_until.is_(None), _d.poll_until < now)
    return and_(_d.status == ds.PENDING, or_(_d.next_poll_at <= now, _d.expires_at <= now), free)


async def poll_due(svc: Services, *, owner: str, limit: int = 20) -> int:
    """Poll each due pending session once; returns how many sessions this caller handled.

    Unconfirmed sessions past their expiry lose their held tokens here too.
    """
    now = svc.clock.now()
    await _expire_unconfirmed(svc, now, limit)
    async with svc.engine.connect() as conn:
        ids = (
            await conn.execute(
                select(_d.id).where(_due(now)).order_by(_d.next_poll_at).limit(limit)
            )
        ).scalars()
        candidates = list(ids)
    handled = 0
    for session_id in candidates:
        session = await _claim(svc, session_id, owner, now)
        if session is None:
            continue  # another replica has it, or it was just polled
        handled += 1
        try:
            await _poll_one(svc, session, owner)
        except Exception:  # one broken session must not stop the others; its claim expires
            log.exception("device session %s: poll failed", session_id)
    return handled


async def _claim(
    svc: Services, session_id: str, owner: str, now: datetime
) -> ds.DeviceSession | None:
    async with svc.engine.begin() as conn:
        won = await conn.execute(
            update(device_sessions)
            .where(_d.id == session_id, _due(now))
            .values(poll_owner=owner, poll_until=now + timedelta(seconds=POLL_LEASE_SECONDS))
        )
        if won.rowcount != 1:
            return None
        return await ds.load(conn, session_id, tenant_id=None)


async def _poll_one(svc: Services, session: ds.DeviceSession, owner: str) -> None:
    if session.expires_at <= svc.clock.now():
        await _finish(svc, session, owner, ds.EXPIRED, "expired_token", "the device code expired")
        return
    try:
        spec = await svc.providers.get(session.provider)
    except (ProviderUnavailable, DiscoveryError) as exc:
        log.warning("device session %s: provider not reachable: %s", session.id, exc.message)
        await _release(svc, session, owner, session.interval_seconds)
        return
    except TokenBrokerError as exc:
        await _finish(svc, session, owner, ds.FAILED, exc.code, exc.message)
        return
    async with svc.engine.connect() as conn:
        device_code = await svc.sealed.get(conn, ds.seal_context(session, "device_code"))
    if device_code is None:
        await _finish(svc, session, owner, ds.FAILED, "invalid_flow", "the device code is gone")
        return
    request = rfc8628.device_token_request(
        spec.token_endpoint, device_code=device_code, auth=client_auth(spec), resource=spec.resource
    )
    try:
        raw = await svc.transport.send(request, provider=spec.name)
        tokens = parse_tokens(spec, raw.status, raw.content_type, raw.body, svc.clock.now())
    except ProviderError as exc:
        await _polled_error(svc, session, owner, exc)
        return
    except ProviderUnavailable as exc:
        log.warning("device session %s: token endpoint unavailable: %s", session.id, exc.message)
        await _release(svc, session, owner, session.interval_seconds)
        return
    except TokenBrokerError as exc:
        await _finish(svc, session, owner, ds.FAILED, exc.code, exc.message)
        return
    try:
        async with svc.engine.connect() as conn:
            existing = await find(conn, session.tenant_id, session.user_id, session.provider)
        grant = await grant_from_tokens(
            svc,
            spec,
            tokens,
            requested_scopes=session.scopes,
            has_stored_refresh_token=bool(existing and existing.has_refresh_token),
        )
        if existing is not None and existing.account_id not in (None, grant.account_id):
            raise AccountMismatchError(
                f"the {spec.name} account that approved is not the one already connected for "
                "this user; nothing was changed"
            )
    except TokenBrokerError as exc:
        await _finish(svc, session, owner, ds.FAILED, exc.code, exc.message)
        return
    if not await _hold_pending(svc, session, owner, grant):
        log.warning("device session %s: claim lost before the tokens were held", session.id)
        return
    if not svc.tenant(session.tenant_id).connect.require_verification:
        await ds.confirm(svc, session.tenant_id, session.id, session.user_id, actor="system")


async def _polled_error(
    svc: Services, session: ds.DeviceSession, owner: str, exc: ProviderError
) -> None:
    outcome = rfc8628.classify_poll(exc.oauth_error)
    if outcome in ("pending", "slow_down"):
        interval = rfc8628.next_interval(session.interval_seconds, outcome)
        await _release(svc, session, owner, interval)
    elif outcome == "denied":
        message = "the user denied the request at the provider"
        await _finish(svc, session, owner, ds.DENIED, "access_denied", message)
    elif outcome == "expired":
        message = "the device code expired at the provider"
        await _finish(svc, session, owner, ds.EXPIRED, "expired_token", message)
    else:
        await _finish(svc, session, owner, ds.FAILED, exc.oauth_error, exc.message)


def _held_by(session: ds.DeviceSession, owner: str) -> ColumnElement[bool]:
    return and_(_d.id == session.id, _d.status == ds.PENDING, _d.poll_owner == owner)


async def _release(svc: Services, session: ds.DeviceSession, owner: str, interval: int) -> None:
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        await conn.execute(
            update(device_sessions)
            .where(_held_by(session, owner))
            .values(
                poll_owner=None,
                poll_until=None,
                interval_seconds=interval,
                next_poll_at=now + timedelta(seconds=interval),
                updated_at=now,
            )
        )


async def _finish(
    svc: Services, session: ds.DeviceSession, owner: str, status: str, error: str, message: str
) -> None:
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        won = await conn.execute(
            update(device_sessions)
            .where(_held_by(session, owner))
            .values(
                status=status,
                error=error,
                error_message=message,
                poll_owner=None,
                poll_until=None,
                updated_at=now,
            )
        )
        if won.rowcount == 1:
            await svc.sealed.delete_owner(conn, ds.OWNER_KIND, session.id)
    if won.rowcount == 1:
        await ds.record(svc, session, f"device.{status}", status, {"error": error})


async def _hold_pending(
    svc: Services, session: ds.DeviceSession, owner: str, grant: ProviderGrant
) -> bool:
    """Seal the tokens as pending; the user then has a connect link's lifetime to confirm."""
    now = svc.clock.now()
    ttl = svc.tenant(session.tenant_id).connect.session_ttl_seconds
    async with svc.engine.begin() as conn:
        won = await conn.execute(
            update(device_sessions)
            .where(_held_by(session, owner))
            .values(
                status=ds.PENDING_CONFIRMATION,
                poll_owner=None,
                poll_until=None,
                account_id=grant.account_id,
                account_label=grant.account_label,
                granted_scopes=list(grant.scopes),
                connect_vars=dict(grant.connect_vars),
                access_token_expires_at=grant.tokens.expires_at,
                expires_at=max(session.expires_at, now + timedelta(seconds=ttl)),
                updated_at=now,
            )
        )
        if won.rowcount != 1:
            return False
        await svc.sealed.delete_field(conn, ds.OWNER_KIND, session.id, "device_code")
        for field, value in complete.token_values(grant).items():
            await svc.sealed.put(conn, ds.seal_context(session, field), value)
    detail: dict[str, Scalar] = {"account_id": grant.account_id}
    await ds.record(svc, session, "device.authorized", "pending_confirmation", detail)
    return True


async def _expire_unconfirmed(svc: Services, now: datetime, limit: int) -> None:
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(_d.id)
            .where(_d.status == ds.PENDING_CONFIRMATION, _d.expires_at <= now)
            .limit(limit)
        )
        ids = list(rows.scalars())
    for session_id in ids:
        async with svc.engine.begin() as conn:
            won = await conn.execute(
                update(device_sessions)
                .where(
                    _d.id == session_id,
                    _d.status == ds.PENDING_CONFIRMATION,
                    _d.expires_at <= now,
                )
                .values(
                    status=ds.EXPIRED,
                    error="expired_token",
                    error_message="the device session expired before its user was confirmed",
                    updated_at=now,
                )
            )
            if won.rowcount == 1:
                await svc.sealed.delete_owner(conn, ds.OWNER_KIND, session_id)
            session = await ds.load(conn, session_id, tenant_id=None)
        if won.rowcount == 1 and session is not None:
            await ds.record(svc, session, "device.expired", "expired", {})
