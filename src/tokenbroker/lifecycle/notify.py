"""Connection events: recorded, and queued for the tenant's webhook (see :mod:`webhooks`).

``connection.connected``, ``.refreshed``, ``.needs_reauth``, ``.deleted`` and ``.revoked`` let an
application tell its user to reconnect. The payload names ids and states, never a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import insert

from tokenbroker.db.schema import webhook_deliveries
from tokenbroker.ids import new_id
from tokenbroker.records import Event, Scalar
from tokenbroker.services import Services


async def connection_event(
    svc: Services,
    type_: str,
    *,
    tenant_id: str,
    user_id: str,
    provider: str,
    connection_id: str,
    outcome: str = "ok",
    actor: str = "system",
    detail: Mapping[str, Scalar] | None = None,
) -> None:
    detail = dict(detail or {})
    await svc.recorder.record(
        Event(
            type=type_,
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            provider=provider,
            connection_id=connection_id,
            outcome=outcome,
            detail=detail,
        )
    )
    webhook = svc.tenant(tenant_id).webhook
    if webhook is None or (webhook.events and type_ not in webhook.events):
        return
    now = svc.clock.now()
    delivery_id = new_id("wh")
    payload = {
        "id": delivery_id,
        "type": type_,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "tenant": tenant_id,
        "data": {
            "connection_id": connection_id,
            "user_id": user_id,
            "provider": provider,
            "outcome": outcome,
            **detail,
        },
    }
    async with svc.engine.begin() as conn:
        await conn.execute(
            insert(webhook_deliveries).values(
                id=delivery_id,
                tenant_id=tenant_id,
                event_type=type_,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now - timedelta(seconds=1),
                created_at=now,
                updated_at=now,
            )
        )
