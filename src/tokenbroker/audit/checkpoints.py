"""Signed checkpoints of each tenant's chain head: periodic, at every export, at retention.

:func:`checkpoint_loop` runs in every broker process (``runtime.make_app``) and signs each
tenant's head at least every ``[audit] checkpoint_seconds`` (60) when it moved since the last
checkpoint; replicas may both sign the same head, which is harmless. Export and prune sign
too. A checkpoint stores the key id, never key material (:mod:`tokenbroker.audit.signing`).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

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
