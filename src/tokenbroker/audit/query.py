"""Filtered, cursor-paginated reads of a tenant's trail (``GET /v1/audit``, export).

Records come in chain order (``seq``); a cursor is the seq of the last record returned, so a
page never shifts when records are appended or pruned. A filter by user computes the user's
pseudonym; a user without a key (never recorded, or erased) has no records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, true

from tokenbroker.audit.canonical import iso
from tokenbroker.audit.pseudonyms import Pseudonyms
from tokenbroker.db.schema import events
from tokenbroker.errors import BadRequest
from tokenbroker.services import Services

_e = events.c
PUBLIC_COLUMNS = (
    "seq",
    "at",
    "type",
    "actor",
    "user_ref",
    "agent_id",
    "provider",
    "connection_id",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
)


@dataclass(frozen=True)
class Filters:
    user_id: str | None = None
    agent_id: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    return parsed


def parse_cursor(value: str | None) -> int:
    if not value:
        return 0
    if not value.startswith("s") or not value[1:].isdigit():
        raise BadRequest("cursor is not valid")
    return int(value[1:])


def cursor_of(seq: int) -> str:
    return f"s{seq}"


async def condition(svc: Services, pseudonyms: Pseudonyms, tenant_id: str, f: Filters) -> Any:
    parts: list[ColumnElement[bool]] = []
    if f.user_id is not None:
        async with svc.engine.connect() as conn:
            ref = await pseudonyms.ref(conn, tenant_id, f.user_id)
        parts.append(false() if ref is None else _e.user_ref == ref)
    if f.agent_id is not None:
        parts.append(_e.agent_id == f.agent_id)
    if f.provider is not None:
        parts.append(_e.provider == f.provider)
    if f.since is not None:
        parts.append(_e.at >= f.since)
    if f.until is not None:
        parts.append(_e.at < f.until)
    return and_(true(), *parts)


def public(row: dict[str, Any]) -> dict[str, Any]:
    out = {name: row[name] for name in PUBLIC_COLUMNS}
    out["at"] = iso(row["at"])
    return out
