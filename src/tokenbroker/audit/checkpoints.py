"""Signed checkpoints of each tenant's chain head: periodic, at every export, at retention.

:func:`checkpoint_loop` runs in every broker process (``runtime.make_app``) and signs each
tenant's head at least every ``[audit] checkpoint_seconds`` (60) when it moved since the last
checkpoint; replicas may both sign the same head, which is harmless. Export and prune sign
too. A checkpoint stores the key id, never key material (:mod:`tokenbroker.audit.signing`).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.audit.chain import read_head
from tokenbroker.audit.signing import Head, Signer
from tokenbroker.audit.trail import trail_of
from tokenbroker.db.schema import audit_checkpoints, audit_heads
from tokenbroker.services import Services

log = logging.getLogger("tokenbroker.audit")
_c = audit_checkpoints.c


async def write_checkpoint(conn: AsyncConnection, signer: Signer, head: Head) -> None:
    key_id, signature = signer.sign(head)
    await conn.execute(
        insert(audit_checkpoints).values(
            tenant_id=head.tenant_id,
            seq=head.seq,
            hash=head.hash,
            key_id=key_id,
            signature=signature,
            at=head.at,
            kind=head.kind,
        )
    )


async def sign_head(svc: Services, tenant_id: str, kind: str, *, force: bool = True) -> Head:
    """Sign the tenant's current head (unless unchanged since the last checkpoint and not
    ``force``); returns it."""
    signer = trail_of(svc).signer
    async with svc.engine.begin() as conn:
        current = await read_head(conn, tenant_id)
        head = Head(tenant_id, current.seq, current.hash, svc.clock.now(), kind)
        if not force:
            last = (
                await conn.execute(select(func.max(_c.seq)).where(_c.tenant_id == tenant_id))
            ).scalar()
            if last is not None and int(last) >= current.seq:
                return head
            if last is None and current.seq == 0:
                return head
        await write_checkpoint(conn, signer, head)
    return head


async def sign_all(svc: Services, kind: str = "periodic") -> None:
    async with svc.engine.connect() as conn:
        tenants = list((await conn.execute(select(audit_heads.c.tenant_id))).scalars())
    for tenant_id in tenants:
        await sign_head(svc, tenant_id, kind, force=False)


async def checkpoint_loop(svc: Services, interval: float | None = None) -> None:
    every = interval if interval is not None else float(svc.settings.audit.checkpoint_seconds)
    while True:
        try:
            await sign_all(svc)
        except Exception:
            log.exception("signing the audit chain heads failed; retrying")
        await asyncio.sleep(every)


async def count_checkpoints_by_key(engine: AsyncEngine) -> dict[str, int]:
    """Checkpoints per signing key id (``keys retire`` refuses a key that still signs some)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(_c.key_id, func.count()).group_by(_c.key_id))
        return {str(key_id): int(count) for key_id, count in rows.all()}


async def resign_checkpoints(engine: AsyncEngine, signer: Signer) -> int:
    """``keys rewrap`` for checkpoints: re-sign, with the active key, each one signed with
    another key that still verifies (compare-and-swap on the old signature). One whose
    signature is wrong, or whose key is gone, is left as it is: ``audit verify`` reports it."""
    active = signer.active_key_id
    changed = 0
    async with engine.begin() as conn:
        rows = await conn.execute(
            select(
                _c.id, _c.tenant_id, _c.seq, _c.hash, _c.at, _c.kind, _c.key_id, _c.signature
            ).where(_c.key_id != active)
        )
        for row in rows.all():
            head = Head(row.tenant_id, int(row.seq), row.hash, row.at, row.kind)
            if signer.check(head, row.key_id, row.signature) is not True:
                log.warning("checkpoint %s does not verify with its key; not re-signed", row.id)
                continue
            key_id, signature = signer.sign(head)
            result = await conn.execute(
                update(audit_checkpoints)
                .where(_c.id == row.id, _c.key_id == row.key_id, _c.signature == row.signature)
                .values(key_id=key_id, signature=signature)
            )
            changed += result.rowcount
    return changed
