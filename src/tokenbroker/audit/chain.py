"""Appending to a tenant's hash chain: one transaction per batch, never an update in place.

The transaction first UPDATEs the tenant's row in ``audit_heads`` (SQLite takes its write
lock, PostgreSQL a row lock), so replicas sharing the database append whole batches one after
another. It then assigns gapless ``seq`` numbers, links each record to the one before
(``prev_hash``), hashes it (:mod:`tokenbroker.audit.canonical`), inserts the batch and moves
the head. Users become pseudonyms here (:mod:`tokenbroker.audit.pseudonyms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.audit.canonical import GENESIS, HASHED_COLUMNS, encode_detail, record_hash_with
from tokenbroker.audit.pseudonyms import Pseudonyms, scrub, user_ref
from tokenbroker.clock import utcnow
from tokenbroker.db.schema import audit_heads
from tokenbroker.db.sql import insert_if_missing
from tokenbroker.records import Event

_h = audit_heads.c


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


async def lock_head(conn: AsyncConnection, tenant_id: str) -> ChainHead:
    """Lock the tenant's head row (creating it at the genesis) and return it."""
    for _ in range(2):
        row = (
            await conn.execute(
                update(audit_heads)
                .where(_h.tenant_id == tenant_id)
                .values(seq=_h.seq)
                .returning(_h.seq, _h.hash)
            )
        ).first()
        if row is not None:
            return ChainHead(int(row.seq), str(row.hash))
        values = {"tenant_id": tenant_id, "seq": 0, "hash": GENESIS, "updated_at": utcnow()}
        await insert_if_missing(conn, audit_heads, values, keys=("tenant_id",))
    raise RuntimeError("the audit head row could not be created")


async def read_head(conn: AsyncConnection, tenant_id: str) -> ChainHead:
    row = (await conn.execute(select(_h.seq, _h.hash).where(_h.tenant_id == tenant_id))).first()
    return ChainHead(0, GENESIS) if row is None else ChainHead(int(row.seq), str(row.hash))


def agent_of(event: Event) -> str | None:
    agent = event.detail.get("agent_id")
    if isinstance(agent, str):
        return agent
    if event.actor and event.actor.startswith("agent:"):
        return event.actor.removeprefix("agent:")
    return None


_INSERTED = (*HASHED_COLUMNS, "hash")


async def _insert_rows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """The driver's own executemany (no per-row statement processing): ``detail`` is already
    JSON text, and SQLite keeps naive UTC text in SQLAlchemy's own format."""
    sqlite = conn.dialect.name == "sqlite"
    marks = ", ".join("?" if sqlite else f"${i}" for i in range(1, len(_INSERTED) + 1))
    sql = f"INSERT INTO events ({', '.join(_INSERTED)}) VALUES ({marks})"  # noqa: S608
    params = [
        tuple(
            (r[c].astimezone(UTC).replace(tzinfo=None).isoformat(" ") if sqlite else r[c])
            if c == "at"
            else r[c]
            for c in _INSERTED
        )
        for r in rows
    ]
    await conn.exec_driver_sql(sql, params)


async def append(
    conn: AsyncConnection,
    tenant_id: str,
    batch: Sequence[tuple[Event, datetime]],
    pseudonyms: Pseudonyms | None,
) -> int:
    """Append ``batch`` (events with their times) to the tenant's chain; the new head seq."""
    head = await lock_head(conn, tenant_id)
    users = [e.user_id for e, _ in batch if e.user_id is not None]
    if users and pseudonyms is None:
        raise TypeError("events naming a user need a pseudonym store")
    keys = await pseudonyms.keys(conn, tenant_id, users, create=True) if pseudonyms else {}
    seq, prev = head.seq, head.hash
    rows: list[dict[str, Any]] = []
    for event, at in batch:
        seq += 1
        key = keys.get(event.user_id) if event.user_id is not None else None
        row: dict[str, Any] = {
            "tenant_id": tenant_id,
            "seq": seq,
            "prev_hash": prev,
            "at": at,
            "type": event.type,
            "actor": event.actor,
            "user_id": None,
            "user_ref": user_ref(key, event.user_id) if key and event.user_id else None,
            "agent_id": agent_of(event),
            "provider": event.provider,
            "connection_id": event.connection_id,
            "outcome": event.outcome,
        }
        detail_json = encode_detail(scrub(key, event.detail))
        row["hash"] = prev = record_hash_with(row, detail_json)
        row["detail"] = detail_json
        rows.append(row)
    if rows:
        await _insert_rows(conn, rows)
        await conn.execute(
            update(audit_heads)
            .where(_h.tenant_id == tenant_id)
            .values(seq=seq, hash=prev, updated_at=utcnow())
        )
    return seq
