"""Reading audit records in bounded batches (keyset pagination on ``(seq, id)``).

Verification, export and the query API all iterate this way, so no caller ever holds more
than one batch of a tenant's trail in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.db.schema import events

BATCH = 1000
_e = events.c


async def iter_rows(
    engine: AsyncEngine,
    tenant_id: str,
    *,
    after_seq: int = 0,
    where: ColumnElement[bool] | None = None,
    batch: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Chained records of a tenant with ``seq > after_seq`` in chain order, batch by batch."""
    size = batch or BATCH
    last: tuple[int, int] | None = None
    while True:
        if last is None:
            position: ColumnElement[bool] = _e.seq > after_seq
        else:
            position = or_(_e.seq > last[0], and_(_e.seq == last[0], _e.id > last[1]))
        query = (
            select(events)
            .where(
                _e.tenant_id == tenant_id,
                _e.seq.is_not(None),
                position,
                true() if where is None else where,
            )
            .order_by(_e.seq, _e.id)
            .limit(size)
        )
        async with engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        for row in rows:
            yield row
        if len(rows) < size:
            return
        last = (int(rows[-1]["seq"]), int(rows[-1]["id"]))
