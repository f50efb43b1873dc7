"""What the gateway and its audit writer process say to each other over their socket pair.

Frames are a 4-byte big-endian length and a :mod:`marshal` payload. ``marshal`` rather than
``pickle``: an event is only tuples, dicts and plain scalars, which marshal encodes several
times faster, and loading a marshal payload never runs code. Both ends are one installation
(the writer process is started from the gateway's own interpreter), so marshal's
version-specific format is not a concern.

Gateway to writer: ``("records", [record, ...], urgent)`` and ``("flush",)``.
Writer to gateway: ``("ready",)``, then ``("progress", committed, failing)`` where
``committed`` counts the records committed so far, in the order they were sent.
"""

from __future__ import annotations

import asyncio
import marshal
from datetime import UTC, datetime
from typing import Any

from tokenbroker.records import Event, Scalar

# (type, tenant_id, actor, user_id, provider, connection_id, outcome, detail, at as POSIX time)
Record = tuple[
    str, str, str | None, str | None, str | None, str | None, str | None, dict[str, Scalar], float
]
_HEADER = 4


def to_record(event: Event, now: float) -> Record:
    detail = event.detail
    if type(detail) is not dict or not all(type(v) in _MARSHALLED for v in detail.values()):
        detail = {k: _plain(v) for k, v in detail.items()}  # e.g. a str subclass such as an enum
    at = event.at.timestamp() if event.at is not None else now
    return (
        event.type, event.tenant_id, event.actor, event.user_id, event.provider,
        event.connection_id, event.outcome, detail, at,
    )  # fmt: skip


_MARSHALLED = frozenset({str, int, float, bool, type(None)})


def _plain(value: Scalar) -> Scalar:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return None


def to_event(record: Record) -> Event:
    type_, tenant_id, actor, user_id, provider, connection_id, outcome, detail, at = record
    return Event(
        type_, tenant_id, actor, user_id, provider, connection_id, outcome, detail,
        datetime.fromtimestamp(at, UTC),
    )  # fmt: skip


def frame(message: tuple[Any, ...]) -> bytes:
    payload = marshal.dumps(message)
    return len(payload).to_bytes(_HEADER, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream (the other side has gone)."""
    try:
        size = int.from_bytes(await reader.readexactly(_HEADER), "big")
        message = marshal.loads(await reader.readexactly(size))  # noqa: S302 (our own child)
    except asyncio.IncompleteReadError:
        return None
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed audit writer message")
    return message
