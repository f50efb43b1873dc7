"""An event's detail holds only plain scalars: a secret can never be put in a record."""

from __future__ import annotations

import enum

import pytest

from tokenbroker.records import Event
from tokenbroker.secret import Secret


class Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize("value", [Secret("tok-123"), b"bytes", ["a"], {"k": "v"}, object()])
def test_an_event_refuses_anything_but_a_plain_scalar(value: object) -> None:
    with pytest.raises(TypeError, match="plain scalar"):
        Event(type="t", tenant_id="default", detail={"x": value})  # type: ignore[dict-item]


def test_subclasses_of_plain_types_are_accepted() -> None:
    assert Event(type="t", tenant_id="default", detail={"c": Colour.RED}).detail["c"] == "red"


def test_the_unchecked_constructor_makes_the_same_event() -> None:
    detail: dict[str, str | int | float | bool | None] = {
        "request_id": "r1", "raw": False, "status": 200, "latency_ms": 0.25, "grant_id": None,
    }  # fmt: skip
    fields = ("proxy.finished", "default", "agent:a1", "alice", "acme", "c1", "status:200")
    checked = Event(
        type=fields[0], tenant_id=fields[1], actor=fields[2], user_id=fields[3],
        provider=fields[4], connection_id=fields[5], outcome=fields[6], detail=detail,
    )  # fmt: skip
    assert Event.of_plain(*fields, detail) == checked
