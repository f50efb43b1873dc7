"""Retention: records older than ``[audit] retention_days`` (or ``audit prune --older-than``)
are deleted from the start of each tenant's chain, never from its middle.

In one transaction, with the tenant's head locked: find the longest prefix of the chain whose
records are all older than the cutoff, delete it, and write a signed ``retention`` checkpoint
holding the seq and hash of the last deleted record. Verification starts from that anchor, so
the shortened chain still verifies, and nobody without the key can move the anchor. Older
checkpoints inside the deleted prefix go too; unchained rows from before the chain existed are
deleted by age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from tokenbroker.audit.chain import lock_head
from tokenbroker.audit.checkpoints import write_checkpoint
from tokenbroker.audit.signing import Head
from tokenbroker.audit.trail import trail_of
from tokenbroker.audit.verify import tenants
from tokenbroker.db.schema import audit_checkpoints, events
from tokenbroker.services import Services

_e = events.c
_c = audit_checkpoints.c


@dataclass(frozen=True)
class Pruned:
    tenant_id: str
    records: int
    through_seq: int  # the new anchor (0: nothing pruned)


async def prune_tenant(svc: Services, tenant_id: str, cutoff: datetime) -> Pruned:
    signer = trail_of(svc).signer
    async with svc.engine.begin() as conn:
        head = await conn.run_sync(lock_head, tenant_id)
        first_young = (
            await conn.execute(
                select(func.min(_e.seq)).where(
                    _e.tenant_id == tenant_id, _e.seq.is_not(None), _e.at >= cutoff
                )
            )
        ).scalar()
        through = head.seq if first_young is None else int(first_young) - 1
        legacy = await conn.execute(
            delete(events).where(_e.tenant_id == tenant_id, _e.seq.is_(None), _e.at < cutoff)
        )
        row = (
            await conn.execute(select(_e.hash).where(_e.tenant_id == tenant_id, _e.seq == through))
        ).first()
        if through < 1 or row is None:
            return Pruned(tenant_id, legacy.rowcount, 0)
        result = await conn.execute(
            delete(events).where(_e.tenant_id == tenant_id, _e.seq <= through)
        )
        await conn.execute(
            delete(audit_checkpoints).where(_c.tenant_id == tenant_id, _c.seq <= through)
        )
        anchor = Head(tenant_id, through, str(row.hash), svc.clock.now(), "retention")
        await write_checkpoint(conn, signer, anchor)
    return Pruned(tenant_id, result.rowcount + legacy.rowcount, through)


async def prune(svc: Services, cutoff: datetime) -> list[Pruned]:
    await trail_of(svc).flush()
    return [await prune_tenant(svc, t, cutoff) for t in await tenants(svc.engine)]
