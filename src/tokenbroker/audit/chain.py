"""Appending to a tenant's hash chain: one transaction per batch, never an update in place.

The transaction first UPDATEs the tenant's row in ``audit_heads`` (SQLite takes its write
lock, PostgreSQL a row lock), so replicas sharing the database append whole batches one after
another. It then assigns gapless ``seq`` numbers, links each record to the one before
(``prev_hash``), hashes it (:mod:`tokenbroker.audit.canonical`), inserts the batch and moves
the head. Users become pseudonyms here (:mod:`tokenbroker.audit.pseudonyms`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.audit.canonical import GENESIS, HASHED_COLUMNS, encode_detail, hash_columns, iso
from tokenbroker.audit.pseudonyms import PERSONAL_FIELDS, Pseudonyms, scrub, user_ref
from tokenbroker.clock import utcnow
from tokenbroker.db.schema import audit_heads
from tokenbroker.db.sql import insert_if_missing_statement
from tokenbroker.records import Event, Scalar

_h = audit_heads.c


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


# Built once: every commit runs both, and building a statement costs more than running it.
_LOCK_HEAD = (
    update(audit_heads)
    .where(_h.tenant_id == bindparam("tenant"))
    .values(seq=_h.seq)
    .returning(_h.seq, _h.hash)
)
_MOVE_HEAD = (
    update(audit_heads)
    .where(_h.tenant_id == bindparam("tenant"))
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), updated_at=bindparam("now"))
)


def lock_head(conn: Connection, tenant_id: str) -> ChainHead:
    """Lock the tenant's head row (creating it at the genesis) and return it. Synchronous, like
    :func:`append`: async callers use ``await conn.run_sync(lock_head, tenant_id)``."""
    for _ in range(2):
        row = conn.execute(_LOCK_HEAD, {"tenant": tenant_id}).first()
        if row is not None:
            return ChainHead(int(row.seq), str(row.hash))
        values = {"tenant_id": tenant_id, "seq": 0, "hash": GENESIS, "updated_at": utcnow()}
        keys = ("tenant_id",)
        conn.execute(insert_if_missing_statement(conn.dialect.name, audit_heads, values, keys=keys))
    raise RuntimeError("the audit head row could not be created")


async def read_head(conn: AsyncConnection, tenant_id: str) -> ChainHead:
    row = (await conn.execute(select(_h.seq, _h.hash).where(_h.tenant_id == tenant_id))).first()
    return ChainHead(0, GENESIS) if row is None else ChainHead(int(row.seq), str(row.hash))


def agent_of(actor: str | None, detail: Mapping[str, Scalar]) -> str | None:
    agent = detail.get("agent_id")
    if isinstance(agent, str):
        return agent
    if actor and actor.startswith("agent:"):
        return actor.removeprefix("agent:")
    return None


# Column order of the rows :func:`append` builds.
_INSERTED = (
    "tenant_id", "seq", "prev_hash", "at", "type", "actor", "user_id", "user_ref", "agent_id",
    "provider", "connection_id", "outcome", "detail", "hash",
)  # fmt: skip
assert sorted(_INSERTED) == sorted((*HASHED_COLUMNS, "hash"))


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: ``COPY`` in the same transaction (several times cheaper for the server
    than row-by-row INSERTs); SQLite: the driver's own executemany. Neither processes the
    rows per statement: ``detail`` is already JSON text."""
    if conn.dialect.name == "postgresql":
        adapted = conn.connection.dbapi_connection
        driver: Any = getattr(adapted, "driver_connection", None)
        if isinstance(adapted, AdaptedConnection) and hasattr(driver, "copy_records_to_table"):
            # asyncpg, from synchronous code: SQLAlchemy's documented bridge to the driver.
            adapted.run_async(
                lambda asyncpg: asyncpg.copy_records_to_table(
                    "events", records=rows, columns=_INSERTED
                )
            )
            return
    sqlite = conn.dialect.name == "sqlite"
    marks = ", ".join("?" if sqlite else f"${i}" for i in range(1, len(_INSERTED) + 1))
    sql = f"INSERT INTO events ({', '.join(_INSERTED)}) VALUES ({marks})"  # noqa: S608
    conn.exec_driver_sql(sql, rows)


class Prepared(NamedTuple):
    """An event's fields with what its record needs that does not depend on its place in the
    chain, computed when it is queued: the commit then holds the head's lock only for hashing
    and inserting. Built from an :class:`~tokenbroker.records.Event` (:func:`prepare`) or, in
    the audit writer process, straight from what the gateway sent
    (:func:`tokenbroker.audit.wire.to_prepared`)."""

    tenant_id: str
    type_: str
    actor: str | None
    user_id: str | None
    provider: str | None
    connection_id: str | None
    outcome: str | None
    detail: Mapping[str, Scalar]
    at: datetime
    at_iso: str
    agent: str | None
    detail_json: str | None  # None: the detail names a person, encoded with the user's key


def prepared(
    type_: str,
    tenant_id: str,
    actor: str | None,
    user_id: str | None,
    provider: str | None,
    connection_id: str | None,
    outcome: str | None,
    detail: Mapping[str, Scalar],
    at: datetime,
    at_iso: str,
) -> Prepared:
    encoded = encode_detail(detail) if PERSONAL_FIELDS.isdisjoint(detail) else None
    return Prepared(
        tenant_id, type_, actor, user_id, provider, connection_id, outcome, detail, at, at_iso,
        agent_of(actor, detail), encoded,
    )  # fmt: skip


def prepare(event: Event, at: datetime) -> Prepared:
    return prepared(
        event.type, event.tenant_id, event.actor, event.user_id, event.provider,
        event.connection_id, event.outcome, event.detail, at, iso(at),
    )  # fmt: skip


def append_all(
    conn: Connection,
    batches: Mapping[str, Sequence[Prepared]],
    pseudonyms: Pseudonyms | None,
) -> None:
    """Append each tenant's batch to its chain, tenants in a fixed order (no deadlock between
    replicas committing batches of the same tenants)."""
    for tenant_id in sorted(batches):
        append(conn, tenant_id, batches[tenant_id], pseudonyms)


def append(
    conn: Connection,
    tenant_id: str,
    batch: Sequence[Prepared],
    pseudonyms: Pseudonyms | None,
) -> int:
    """Append ``batch`` to the tenant's chain; the new head seq. Synchronous: the writer runs
    a whole commit either inside ``AsyncConnection.run_sync`` (one greenlet for all of its
    statements) or, on SQLite in the audit writer process, on a blocking engine in one thread
    hand-off rather than a few per statement."""
    head = lock_head(conn, tenant_id)
    users = {p.user_id for p in batch if p.user_id is not None}
    if users and pseudonyms is None:
        raise TypeError("events naming a user need a pseudonym store")
    keys = pseudonyms.keys_in(conn, tenant_id, users, create=True) if pseudonyms else {}
    refs = {user: user_ref(key, user) for user, key in keys.items()}  # once per user and batch
    sqlite = conn.dialect.name == "sqlite"
    seq, prev = head.seq, head.hash
    rows: list[tuple[Any, ...]] = []
    for (
        _, type_, actor, user, provider, connection_id, outcome, detail, at, at_iso, agent,
        detail_json,
    ) in batch:  # fmt: skip
        seq += 1
        key = keys.get(user) if user else None
        ref = refs.get(user) if user else None  # refs has exactly the users with keys
        if detail_json is None:
            detail_json = encode_detail(scrub(key, detail))
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
        _insert_rows(conn, rows)
        values = {"tenant": tenant_id, "new_seq": seq, "new_hash": prev, "now": utcnow()}
        conn.execute(_MOVE_HEAD, values)
    return seq
