"""The gateway-to-writer-process wire: an event arrives as the same record it would have
been in-process."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime

from tokenbroker.audit.chain import prepare
from tokenbroker.audit.wire import frame, read_frame, to_prepared, to_record
from tokenbroker.records import Event


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


async def _through_the_wire(message: tuple[object, ...]) -> tuple[object, ...] | None:
    reader = asyncio.StreamReader()
    reader.feed_data(frame(message))
    reader.feed_eof()
    return await read_frame(reader)


async def test_an_event_arrives_unchanged() -> None:
    at = datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC)
    event = Event(
        type="proxy.finished",
        tenant_id="default",
        actor="agent:a1",
        user_id="alice",
        provider="acme",
        connection_id="c1",
        outcome="status:200",
        detail={"request_id": "r1", "raw": False, "status": 200, "latency_ms": 0.25, "x": None},
        at=at,
    )
    message = await _through_the_wire(("records", [to_record(event, 0.0)], False))
    assert message is not None
    (record,) = message[1]  # type: ignore[misc]
    assert to_prepared(record) == prepare(event, at)  # the time to the microsecond


async def test_an_event_without_a_time_gets_the_time_it_was_handed_over() -> None:
    event = Event(type="t", tenant_id="default")
    now = datetime(2026, 11, 30, 1, 2, 3, 5, tzinfo=UTC)
    assert to_prepared(to_record(event, now.timestamp())) == prepare(event, now)


async def test_subclasses_of_plain_types_travel_as_their_plain_values() -> None:
    event = Event(type="t", tenant_id="default", detail={"colour": Colour.RED, "n": Level.HIGH})
    message = await _through_the_wire(("records", [to_record(event, 1.0)], True))
    assert message is not None
    (record,) = message[1]  # type: ignore[misc]
    detail = to_prepared(record).detail
    assert detail == {"colour": "red", "n": 3}
    assert type(detail["colour"]) is str
    assert type(detail["n"]) is int
    assert message[2] is True


async def test_the_end_of_the_stream_is_none() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(frame(("ready",))[:3])
    reader.feed_eof()
    assert await read_frame(reader) is None
