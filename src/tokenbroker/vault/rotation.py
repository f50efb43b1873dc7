"""Online key operations behind ``tokenbroker keys rewrap|retire|check``.

Each batch runs in its own short transaction, so the broker keeps serving while they run.
Re-wrapping writes with compare-and-swap on the old key id and blob: a value rewritten
meanwhile (a refresh sealed it under the active key) is left alone, never overwritten.
Reports name records by owner and field, and failures by a reason code: never any plaintext.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.db.schema import sealed_secrets
from tokenbroker.vault.envelope import Envelope, SealContext, SealOpenError

log = logging.getLogger(__name__)

_Row: TypeAlias = Row[*tuple[Any, ...]]

DEFAULT_BATCH: Final = 500
SQLITE_PAUSE_SECONDS: Final = 0.1
_t = sealed_secrets.c
_COLUMNS = (
    _t.id,
    _t.tenant_id,
    _t.user_id,
    _t.owner_kind,
    _t.owner_id,
    _t.field,
    _t.key_id,
    _t.blob,
)


@dataclass(frozen=True)
class CheckFailure:
    owner_kind: str
    owner_id: str
    field: str
    key_id: str
    reason: str  # malformed | unknown_key | retired_key | tampered | not_text


@dataclass(frozen=True)
class CheckReport:
    """``by_key``: records per key id; ``failures``: the records that did not open."""

    total: int
    by_key: Mapping[str, int]
    failures: tuple[CheckFailure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures


def _context(row: _Row) -> SealContext:
    return SealContext(row.tenant_id, row.user_id, row.owner_kind, row.owner_id, row.field)


async def _read_batch(
    conn: AsyncConnection, *, after_id: int, limit: int, not_key: str | None = None
) -> Sequence[_Row]:
    stmt = select(*_COLUMNS).where(_t.id > after_id).order_by(_t.id).limit(limit)
    if not_key is not None:
        stmt = stmt.where(_t.key_id != not_key)
    return (await conn.execute(stmt)).all()


async def _swap_batch(conn: AsyncConnection, envelope: Envelope, rows: Sequence[_Row]) -> int:
    """Re-wrap ``rows`` with compare-and-swap; returns how many rows were changed."""
    changed = 0
    for row in rows:
        try:
            blob = envelope.rewrap(row.blob, _context(row))
        except SealOpenError as exc:
            log.warning(
                "not re-wrapped: %s %s field %s (%s)",
                row.owner_kind,
                row.owner_id,
                row.field,
                exc.reason,
            )
            continue
        if blob == row.blob:
            continue
        result = await conn.execute(
            update(sealed_secrets)
            .where(_t.id == row.id, _t.key_id == row.key_id, _t.blob == row.blob)
            .values(key_id=envelope.key_id_of(blob), blob=blob)
        )
        changed += result.rowcount
    return changed


async def rewrap_all(
    engine: AsyncEngine, envelope: Envelope, *, batch_size: int = DEFAULT_BATCH
) -> int:
    """Move every sealed value to the active key; returns how many were re-wrapped.

    Values that do not open are skipped and logged (``keys check`` lists them), so the old key
    still counts as in use and ``keys retire`` keeps refusing it.
    """
    total, after_id = 0, 0
    sqlite = engine.dialect.name == "sqlite"
    while True:
        active = envelope.keyring().active_id
        started = time.monotonic()
        async with engine.begin() as conn:
            rows = await _read_batch(conn, after_id=after_id, limit=batch_size, not_key=active)
            if not rows:
                return total
            total += await _swap_batch(conn, envelope, rows)
        after_id = rows[-1].id
        if sqlite:
            # SQLite has one write lock: leave it free between batches for at least as long as
            # a batch held it and longer than a waiting writer's busy-retry sleep, or a running
            # broker's commits wait until the rewrap ends (bench/reliability.py --only rotation).
            await asyncio.sleep(max(time.monotonic() - started, SQLITE_PAUSE_SECONDS))


async def count_by_key(engine: AsyncEngine) -> dict[str, int]:
    """Sealed values per key id (``keys retire`` refuses a key whose count is not zero)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(_t.key_id, func.count()).group_by(_t.key_id))
        return {key_id: int(count) for key_id, count in rows}


async def check_all(
    engine: AsyncEngine, envelope: Envelope, *, batch_size: int = DEFAULT_BATCH
) -> CheckReport:
    """Open every sealed value (batches, read-only) and report counts and failures."""
    by_key: dict[str, int] = {}
    failures: list[CheckFailure] = []
    total, after_id = 0, 0
    while True:
        async with engine.connect() as conn:
            rows = await _read_batch(conn, after_id=after_id, limit=batch_size)
        if not rows:
            return CheckReport(total=total, by_key=by_key, failures=tuple(failures))
        for row in rows:
            total += 1
            by_key[row.key_id] = by_key.get(row.key_id, 0) + 1
            reason = _open_reason(envelope, row)
            if reason is not None:
                failures.append(
                    CheckFailure(row.owner_kind, row.owner_id, row.field, row.key_id, reason)
                )
        after_id = rows[-1].id


def _open_reason(envelope: Envelope, row: _Row) -> str | None:
    try:
        plaintext = envelope.open(row.blob, _context(row))
    except SealOpenError as exc:
        return exc.reason
    try:
        plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return "not_text"
    return None
