"""The recording seam: one small interface, ``record(event)``, that every flow writes through.

This issue stores events in a plain table. The audit issue hardens the storage (hash chain,
batching, signatures) behind the same :class:`Recorder` protocol without changing callers.
An event's ``detail`` holds only plain scalars; a :class:`~tokenbroker.secret.Secret` in it is
a programming error and is refused, so a token cannot reach the trail by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.clock import utcnow
from tokenbroker.db.schema import events
from tokenbroker.secret import Secret

Scalar = str | int | float | bool | None
_PLAIN = frozenset({str, int, float, bool, type(None)})
log = logging.getLogger("tokenbroker.records")


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "connect.started", "connection.deleted", "admin.connect_session.created"
    tenant_id: str
    actor: str | None = None  # "admin", "browser", "system", "agent:<id>"
    user_id: str | None = None
    provider: str | None = None
    connection_id: str | None = None
    outcome: str | None = None  # "ok", "failed", "denied", ...
    detail: Mapping[str, Scalar] = field(default_factory=dict)
    at: datetime | None = None

    def __post_init__(self) -> None:
        for key, value in self.detail.items():
            if type(value) in _PLAIN:
                continue  # exactly a plain type (a Secret is none of them): the common case
            if isinstance(value, Secret) or not isinstance(value, Scalar):
                raise TypeError(f"event detail {key!r} must be a plain scalar")

    @classmethod
    def of_plain(
        cls,
        type_: str,
        tenant_id: str,
        actor: str | None,
        user_id: str | None,
        provider: str | None,
        connection_id: str | None,
        outcome: str | None,
        detail: dict[str, Scalar],
    ) -> Event:
        """An event whose detail the caller built from values of exactly the plain types, so
        nothing needs checking (the gateway's two records per request): a quarter of what the
        frozen dataclass's ``__init__`` and ``__post_init__`` cost."""
        event = object.__new__(cls)
        event.__dict__.update(
            type=type_, tenant_id=tenant_id, actor=actor, user_id=user_id, provider=provider,
            connection_id=connection_id, outcome=outcome, detail=detail, at=None,
        )  # fmt: skip
        return event


class Recorder(Protocol):
    async def record(self, event: Event) -> None: ...


class TableRecorder:
    """Writes each event to the ``events`` table in its own short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, event: Event) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(events).values(
                    tenant_id=event.tenant_id,
                    at=event.at or utcnow(),
                    type=event.type,
                    actor=event.actor,
                    user_id=event.user_id,
                    provider=event.provider,
                    connection_id=event.connection_id,
                    outcome=event.outcome,
                    detail=dict(event.detail),
                )
            )
        log.info("event %s tenant=%s outcome=%s", event.type, event.tenant_id, event.outcome)


class MemoryRecorder:
    """For tests: keeps events in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def record(self, event: Event) -> None:
        self.events.append(event)


class NullRecorder:
    """Records nothing (``[audit] enabled = false``: benchmarking the audit's cost only)."""

    async def record(self, event: Event) -> None:
        return None
