"""The one place the web pages read the audit trail (``events``).

Kept small on purpose: the trail names users by pseudonym (``user_ref``), so the user filter
goes through :func:`tokenbroker.audit.query.condition`. Newest first, paginated by ``seq``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from tokenbroker.audit.query import Filters, condition
from tokenbroker.audit.trail import trail_of
from tokenbroker.db.schema import events
from tokenbroker.services import Services


@dataclass(frozen=True)
class ActivityItem:
    seq: int
    at: datetime
    type: str
    actor: str | None
    provider: str | None
    outcome: str | None
    agent_id: str | None
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class ActivityPage:
    items: list[ActivityItem]
    next_before: int | None  # pass as ``before`` for the next (older) page


async def user_events(
    svc: Services,
    tenant_id: str,
    user_id: str,
    *,
    agent_id: str | None = None,
    provider: str | None = None,
    before: int | None = None,
    limit: int = 25,
) -> ActivityPage:
    """One user's own events, optionally of one agent and one provider."""
    filters = Filters(user_id=user_id, agent_id=agent_id, provider=provider)
    where = await condition(svc, trail_of(svc).pseudonyms, tenant_id, filters)
    query = select(events).where(events.c.tenant_id == tenant_id, events.c.seq.is_not(None), where)
    if before is not None:
        query = query.where(events.c.seq < before)
    async with svc.engine.connect() as conn:
        rows = (await conn.execute(query.order_by(events.c.seq.desc()).limit(limit + 1))).all()
    items = [_item(dict(row._mapping)) for row in rows[:limit]]
    return ActivityPage(items, items[-1].seq if len(rows) > limit and items else None)


def _item(m: Mapping[str, Any]) -> ActivityItem:
    detail = m["detail"] if isinstance(m["detail"], Mapping) else {}
    return ActivityItem(
        seq=m["seq"],
        at=m["at"],
        type=m["type"],
        actor=m["actor"],
        provider=m["provider"],
        outcome=m["outcome"],
        agent_id=m["agent_id"],
        detail=detail,
    )
