"""``tokenbroker audit verify``: walk each tenant's chain and name the first fault.

Per tenant: every checkpoint's signature is checked (a wrong one is ``forged_checkpoint``; one
whose key is no longer in the ring is only a warning and vouches for nothing). The walk starts
after the newest valid ``retention`` checkpoint (or at seq 1 from the genesis hash), recomputes
each record's hash and link, and stops at the first fault, classified as:

- ``removed``: a seq is missing, or a record links to a predecessor that is nowhere;
- ``inserted``: a duplicate seq, or a record that the next one skips over;
- ``reordered``: a record links to one that comes later in the chain;
- ``altered``: a record's stored columns no longer give its hash;
- ``signature``: the chain is consistent but differs from a signed head (it was recomputed);
- ``truncated``: the chain ends before its newest signed head (or its head row).

Records after the newest signed head are reported as unsigned (a warning): by design a head
is signed at least every minute, so only that tail can be cut or extended undetected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.audit.canonical import GENESIS, record_hash
from tokenbroker.audit.chain import read_head
from tokenbroker.audit.rows import iter_rows
from tokenbroker.audit.signing import Head, Signer
from tokenbroker.db.schema import audit_checkpoints, audit_heads, events

LOOKAHEAD = 10_000


@dataclass(frozen=True)
class Fault:
    seq: int
    kind: str
    message: str


@dataclass(frozen=True)
class TenantReport:
    tenant_id: str
    records: int
    first_seq: int
    last_seq: int
    signed_seq: int
    fault: Fault | None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.fault is None


@dataclass(frozen=True)
class _Checkpoints:
    hashes: Mapping[int, frozenset[str]]
    anchor: tuple[int, str] | None
    signed_seq: int
    fault: Fault | None
    warnings: tuple[str, ...]


async def tenants(engine: AsyncEngine) -> list[str]:
    query = union(
        select(audit_heads.c.tenant_id),
        select(events.c.tenant_id).where(events.c.seq.is_not(None)).distinct(),
        select(audit_checkpoints.c.tenant_id),
    )
    async with engine.connect() as conn:
        return sorted({str(t) for t in (await conn.execute(query)).scalars()})


async def _checkpoints(engine: AsyncEngine, signer: Signer, tenant_id: str) -> _Checkpoints:
    c = audit_checkpoints.c
    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit_checkpoints).where(c.tenant_id == tenant_id))).all()
    hashes: dict[int, set[str]] = {}
    anchor: tuple[int, str] | None = None
    fault: Fault | None = None
    unknown = 0
    for row in rows:
        head = Head(tenant_id, int(row.seq), row.hash, row.at, row.kind)
        valid = signer.check(head, row.key_id, row.signature)
        if valid is None:
            unknown += 1
        elif not valid:
            if fault is None or head.seq < fault.seq:
                fault = Fault(head.seq, "forged_checkpoint", "a checkpoint's signature is wrong")
        else:
            hashes.setdefault(head.seq, set()).add(head.hash)
            if head.kind == "retention" and (anchor is None or head.seq > anchor[0]):
                anchor = (head.seq, head.hash)
    warnings = (f"{unknown} checkpoint(s) signed with keys no longer in the key ring",)
    return _Checkpoints(
        {seq: frozenset(h) for seq, h in hashes.items()},
        anchor,
        max(hashes, default=0),
        fault,
        warnings if unknown else (),
    )


async def _later_hashes(engine: AsyncEngine, tenant_id: str, seq: int) -> set[str]:
    e = events.c
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(e.hash)
            .where(e.tenant_id == tenant_id, e.seq >= seq)
            .order_by(e.seq)
            .limit(LOOKAHEAD)
        )
        return {str(h) for h in rows.scalars() if h is not None}


async def _classify(
    engine: AsyncEngine,
    tenant_id: str,
    row: Mapping[str, Any],
    k: int,
    prev: str,
    prev2: str | None,
) -> Fault:
    if prev2 is not None and row["prev_hash"] == prev2:
        return Fault(k - 1, "inserted", f"record {k - 1} is not part of the chain")
    later = await _later_hashes(engine, tenant_id, k)
    later.discard(row["hash"])
    if row["prev_hash"] in later:
        return Fault(k, "reordered", f"record {k} is out of order")
    if row["prev_hash"] == prev:
        return Fault(k, "altered", f"record {k} was changed after it was written")
    if row["prev_hash"] not in later:
        return Fault(k, "removed", f"a record before seq {k} was removed")
    return Fault(k, "altered", f"record {k} was changed after it was written")


async def verify_tenant(engine: AsyncEngine, signer: Signer, tenant_id: str) -> TenantReport:
    marks = await _checkpoints(engine, signer, tenant_id)
    warnings = list(marks.warnings)
    start, prev = (marks.anchor[0] + 1, marks.anchor[1]) if marks.anchor else (1, GENESIS)
    prev2: str | None = None
    expected, count = start, 0
    fault: Fault | None = None
    last_good_mark = start - 1
    async for row in iter_rows(engine, tenant_id, after_seq=start - 1):
        seq = int(row["seq"])
        if seq > expected:
            fault = Fault(expected, "removed", f"record {expected} is missing")
        elif seq < expected:
            fault = Fault(seq, "inserted", f"a second record claims seq {seq}")
        elif record_hash(row) != row["hash"] or row["prev_hash"] != prev:
            fault = await _classify(engine, tenant_id, row, expected, prev, prev2)
        elif seq in marks.hashes and row["hash"] not in marks.hashes[seq]:
            fault = Fault(
                last_good_mark + 1,
                "signature",
                f"records {last_good_mark + 1}..{seq} do not match the head signed at seq {seq}",
            )
        if fault is not None:
            break
        if seq in marks.hashes:
            last_good_mark = seq
        prev2, prev = prev, row["hash"]
        expected, count = expected + 1, count + 1
    last = expected - 1
    if fault is None:
        fault = marks.fault
    if fault is None:
        async with engine.connect() as conn:
            head = await read_head(conn, tenant_id)
        if marks.signed_seq > last:
            fault = Fault(
                last + 1,
                "truncated",
                f"the chain ends at {last}, its head was signed at {marks.signed_seq}",
            )
        elif head.seq > last:
            fault = Fault(
                last + 1, "truncated", f"the chain ends at {last}, its head is {head.seq}"
            )
        elif head.seq < last:
            fault = Fault(head.seq + 1, "inserted", f"records after the head ({head.seq})")
    if fault is None and last > marks.signed_seq:
        warnings.append(
            f"{last - max(marks.signed_seq, start - 1)} record(s) after the last signed head"
        )
    async with engine.connect() as conn:
        legacy = (
            await conn.execute(
                select(func.count())
                .select_from(events)
                .where(events.c.tenant_id == tenant_id, events.c.seq.is_(None))
            )
        ).scalar_one()
    if legacy:
        warnings.append(f"{legacy} record(s) written before the chain existed (unchained)")
    return TenantReport(tenant_id, count, start, last, marks.signed_seq, fault, tuple(warnings))


async def verify_all(engine: AsyncEngine, signer: Signer) -> list[TenantReport]:
    return [await verify_tenant(engine, signer, t) for t in await tenants(engine)]
