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
from typing import Any

from tokenbroker.audit.canonical import posix_time
from tokenbroker.audit.chain import Prepared, prepared
from tokenbroker.records import Event, Scalar

# (type, tenant_id, actor, user_id, provider, connection_id, outcome, detail, at as POSIX time)
Record = tuple[
    str, str, str | None, str | None, str | None, str | None, str | None, dict[str, Scalar], float
]
_HEADER = 4


def to_record(event: Event, now: float) -> Record:
    detail = event.detail
    return (
        event.type, event.tenant_id, event.actor, event.user_id, event.provider,
        event.connection_id, event.outcome, detail if type(detail) is dict else dict(detail),
        event.at.timestamp() if event.at is not None else now,
    )  # fmt: skip


def plain(record: Record) -> Record:
    """``record`` with detail values of exactly the plain types (an ``Event`` admits their
    subclasses, e.g. an enum member, which marshal refuses)."""
    type_, tenant, actor, user, provider, connection, outcome, detail, at = record
    plain_detail = {k: _plain(v) for k, v in detail.items()}
    return (type_, tenant, actor, user, provider, connection, outcome, plain_detail, at)


def _plain(value: Scalar) -> Scalar:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return None


def to_prepared(record: Record) -> Prepared:
    """The writer process's side: ``record`` ready to be chained, without building the
    :class:`Event` again (its detail was checked when the worker built it)."""
    at, at_iso = posix_time(record[8])
    return prepared(*record[:8], at, at_iso)


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as a frame; records whose detail holds a subclass of a plain type (which
    marshal refuses) are sent as their plain values."""
    try:
        payload = marshal.dumps(message)
    except ValueError:
        if message[0] != "records":
            raise
        payload = marshal.dumps((message[0], [plain(r) for r in message[1]], *message[2:]))
    return len(payload).to_bytes(_HEADER, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream (the other side has gone)."""
    try:
        size = int.from_bytes(await reader.readexactly(_HEADER), "big")
        message = marshal.loads(await reader.readexactly(size))  # noqa: S302 (our own child)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        # A peer that dies with unread data resets a Unix socket instead of ending it.
        return None
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed audit writer message")
    return message
