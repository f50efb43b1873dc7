"""Delivering queued connection events to the application's webhook: signed, with retries.

:mod:`tokenbroker.lifecycle.notify` writes each event to ``webhook_deliveries``; this module
sends them. Each request carries the JSON payload and a Stripe-style signature header::

    TokenBroker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>

so a receiver can check the body with :func:`verify_signature` and refuse replays by age. A
delivery is claimed with a compare-and-swap on ``attempts`` (two replicas never send the same
one at once), answered 2xx → ``delivered``; anything else is retried with exponential backoff
and jitter (30 s, 1 min, 2 min … at most 1 h apart) and, after 24 h or 15 attempts,
``gave_up``, logged and recorded as a ``webhook.gave_up`` event. Neither the signing secret nor
the destination URL ever appears in a log line, an error or an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update

from tokenbroker.db.schema import webhook_deliveries
from tokenbroker.errors import TokenBrokerError
from tokenbroker.records import Event
from tokenbroker.secret import Secret
from tokenbroker.services import Services

log = logging.getLogger("tokenbroker.webhooks")

SIGNATURE_HEADER = "TokenBroker-Signature"
EVENT_HEADER = "TokenBroker-Event"
DELIVERY_HEADER = "TokenBroker-Delivery"
USER_AGENT = "tokenbroker-webhooks/0.1"
TIMEOUT_SECONDS = 10.0
GIVE_UP_AFTER = timedelta(hours=24)
MAX_ATTEMPTS = 15
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
CLAIM_LEASE = timedelta(minutes=5)  # a claimed row is retried after this if its sender died
CONCURRENCY = 10
WORKER_INTERVAL_SECONDS = 2.0


def _mac(secret: Secret, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.reveal().encode(), message, hashlib.sha256).hexdigest()


def sign(secret: Secret, timestamp: int, body: bytes) -> str:
    """The ``TokenBroker-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: Secret, header: str, body: bytes, *, now: int, tolerance: int = 300
) -> bool:
    """True when ``header`` signs exactly ``body`` and its timestamp is within ``tolerance``.

    For receivers: pass the raw request body (not re-encoded JSON) and the current Unix time.
    Several ``v1`` values are accepted (any one matching suffices), for secret rotation.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:  # compare every candidate: no early exit on a match
        matched |= hmac.compare_digest(expected, candidate.encode())
    return matched


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact, key-sorted JSON."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class WebhookSender:
    """Owns one aiohttp session for webhook POSTs; created lazily, closed with :meth:`close`."""

    def __init__(self, *, timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> str | None:
        """POST without following redirects; ``None`` on 2xx, else a short, URL-free reason."""
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"receiver answered HTTP {resp.status}"
        except TimeoutError:
            return f"receiver did not answer within {self._timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"receiver could not be reached ({type(exc).__name__})"


def backoff(attempts: int) -> timedelta:
    """Delay after the ``attempts``-th failure: 30 s doubling, at most 1 h, ±20 % jitter."""
    base = FIRST_BACKOFF.total_seconds() * 2 ** min(max(attempts - 1, 0), 12)
    base = min(base, MAX_BACKOFF.total_seconds())
    return timedelta(seconds=base * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only


async def deliver_due(
    svc: Services, *, limit: int = 50, sender: WebhookSender | None = None
) -> int:
    """Try every due ``pending`` delivery (at most ``limit``); returns how many were delivered.

    Without ``sender`` a temporary one is used and closed before returning.
    """
    now = svc.clock.now()
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(webhook_deliveries)
            .where(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now,
            )
            .order_by(webhook_deliveries.c.created_at)
            .limit(limit)
        )
        due = [dict(row._mapping) for row in rows]
    if not due:
        return 0
    own = sender is None
    active = sender or WebhookSender()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(row: dict[str, Any]) -> bool:
        async with gate:
            return await _attempt(svc, active, row)

    try:
        results = await asyncio.gather(*(one(row) for row in due))
    finally:
        if own:
            await active.close()
    return sum(results)


async def _attempt(svc: Services, sender: WebhookSender, row: dict[str, Any]) -> bool:
    """One claimed attempt at one delivery; True when the receiver accepted it."""
    now = svc.clock.now()
    delivery_id = row["id"]
    attempts = int(row["attempts"]) + 1
    async with svc.engine.begin() as conn:
        claimed = await conn.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.attempts == row["attempts"],
                webhook_deliveries.c.next_attempt_at <= now,
            )
            .values(attempts=attempts, next_attempt_at=now + CLAIM_LEASE, updated_at=now)
        )
        if claimed.rowcount != 1:
            return False  # another worker has it
    tenant = svc.settings.tenants.get(row["tenant_id"])
    webhook = tenant.webhook if tenant is not None else None
    if webhook is None:
        error: str | None = "no webhook is configured for this tenant any more"
    else:
        body = encode_payload(row["payload"])
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(webhook.secret, int(now.timestamp()), body),
            EVENT_HEADER: str(row["event_type"]),
            DELIVERY_HEADER: str(delivery_id),
        }
        error = await sender.post(webhook.url, body, headers)
    done = svc.clock.now()
    if error is None:
        await _finish(svc, delivery_id, attempts, status="delivered", error=None, at=done)
        return True
    expired = done - row["created_at"] >= GIVE_UP_AFTER
    if webhook is not None and attempts < MAX_ATTEMPTS and not expired:
        await _finish(
            svc, delivery_id, attempts, status="pending", error=error, at=done, retry=True
        )
        log.info("webhook delivery %s attempt %d failed: %s", delivery_id, attempts, error)
        return False
    if await _finish(svc, delivery_id, attempts, status="gave_up", error=error, at=done):
        await _record_gave_up(svc, row, attempts, error)
    return False


async def _finish(
    svc: Services,
    delivery_id: str,
    attempts: int,
    *,
    status: str,
    error: str | None,
    at: datetime,
    retry: bool = False,
) -> bool:
    """Write an attempt's outcome, only if no later claim took the row meanwhile."""
    values: dict[str, Any] = {"status": status, "last_error": error, "updated_at": at}
    if retry:
        values["next_attempt_at"] = at + backoff(attempts)
    async with svc.engine.begin() as conn:
        result = await conn.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.attempts == attempts,
            )
            .values(**values)
        )
    return bool(result.rowcount == 1)


async def _record_gave_up(svc: Services, row: Mapping[str, Any], attempts: int, error: str) -> None:
    payload = row["payload"] if isinstance(row["payload"], Mapping) else {}
    raw = payload.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    text = {k: v for k, v in data.items() if isinstance(v, str)}
    log.warning(
        "webhook delivery %s (%s, tenant %s) gave up after %d attempts: %s",
        row["id"],
        row["event_type"],
        row["tenant_id"],
        attempts,
        error,
    )
    await svc.recorder.record(
        Event(
            type="webhook.gave_up",
            tenant_id=row["tenant_id"],
            actor="system",
            user_id=text.get("user_id"),
            provider=text.get("provider"),
            connection_id=text.get("connection_id"),
            outcome="gave_up",
            detail={
                "delivery_id": row["id"],
                "event_type": row["event_type"],
                "attempts": attempts,
                "error": error,
            },
        )
    )


async def webhook_worker(svc: Services, interval: float = WORKER_INTERVAL_SECONDS) -> None:
    """The background loop: deliver what is due every ``interval`` seconds, until cancelled."""
    sender = WebhookSender()
    try:
        while True:
            try:
                await deliver_due(svc, sender=sender)
            except TokenBrokerError as exc:
                log.warning("webhook sweep failed: %s", exc.message)
            except Exception:
                log.exception("webhook sweep failed")
            await asyncio.sleep(interval)
    finally:
        await sender.close()
