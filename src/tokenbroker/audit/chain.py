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
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.audit.canonical import GENESIS, HASHED_COLUMNS, encode_detail, hash_columns, iso
from tokenbroker.audit.pseudonyms import PERSONAL_FIELDS, Pseudonyms, scrub, user_ref
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


# Column order of the rows :func:`append` builds.
_INSERTED = (
    "tenant_id", "seq", "prev_hash", "at", "type", "actor", "user_id", "user_ref", "agent_id",
    "provider", "connection_id", "outcome", "detail", "hash",
)  # fmt: skip
assert sorted(_INSERTED) == sorted((*HASHED_COLUMNS, "hash"))


async def _insert_rows(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: ``COPY`` in the same transaction (several times cheaper for the server
    than row-by-row INSERTs); SQLite: the driver's own executemany. Neither processes the
    rows per statement: ``detail`` is already JSON text."""
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        if hasattr(driver, "copy_records_to_table"):  # asyncpg
            await driver.copy_records_to_table("events", records=rows, columns=_INSERTED)
            return
    sqlite = conn.dialect.name == "sqlite"
    marks = ", ".join("?" if sqlite else f"${i}" for i in range(1, len(_INSERTED) + 1))
    sql = f"INSERT INTO events ({', '.join(_INSERTED)}) VALUES ({marks})"  # noqa: S608
    await conn.exec_driver_sql(sql, rows)


class Prepared(NamedTuple):
    """An event with what its record needs that does not depend on its place in the chain,
    computed when it is queued: the commit then holds the head's lock only for hashing and
    inserting."""

    event: Event
    at: datetime
    at_iso: str
    agent: str | None
    detail_json: str | None  # None: the detail names a person, encoded with the user's key


def prepare(event: Event, at: datetime) -> Prepared:
    detail = event.detail
    encoded = encode_detail(detail) if PERSONAL_FIELDS.isdisjoint(detail) else None
    return Prepared(event, at, iso(at), agent_of(event), encoded)


async def append(
    conn: AsyncConnection,
    tenant_id: str,
    batch: Sequence[Prepared],
    pseudonyms: Pseudonyms | None,
) -> int:
    """Append ``batch`` to the tenant's chain; the new head seq."""
    head = await lock_head(conn, tenant_id)
    users = {p.event.user_id for p in batch if p.event.user_id is not None}
    if users and pseudonyms is None:
        raise TypeError("events naming a user need a pseudonym store")
    keys = await pseudonyms.keys(conn, tenant_id, users, create=True) if pseudonyms else {}
    refs = {user: user_ref(key, user) for user, key in keys.items()}  # once per user and batch
    sqlite = conn.dialect.name == "sqlite"
    seq, prev = head.seq, head.hash
    rows: list[tuple[Any, ...]] = []
    for event, at, at_iso, agent, detail_json in batch:
        seq += 1
        user = event.user_id
        key = keys.get(user) if user else None
        ref = refs.get(user) if user else None  # refs has exactly the users with keys
        if detail_json is None:
            detail_json = encode_detail(scrub(key, event.detail))
        type_, actor, provider = event.type, event.actor, event.provider
        connection_id, outcome = event.connection_id, event.outcome
        digest = hash_columns(
            actor, agent, at_iso, connection_id, detail_json, outcome, prev, provider, seq,
            tenant_id, type_, None, ref,
        )  # fmt: skip
        # SQLite keeps naive UTC text in SQLAlchemy's own format; PostgreSQL takes the datetime.
        stored_at: Any = f"{at_iso[:10]} {at_iso[11:-1]}" if sqlite else at
        rows.append(
            (
                tenant_id, seq, prev, stored_at, type_, actor, None, ref, agent, provider,
                connection_id, outcome, detail_json, digest,
            )
        )  # fmt: skip
        prev = digest
    if rows:
        await _insert_rows(conn, rows)
        await conn.execute(
            update(audit_heads)
            .where(_h.tenant_id == tenant_id)
            .values(seq=seq, hash=prev, updated_at=utcnow())
        )
    return seq
