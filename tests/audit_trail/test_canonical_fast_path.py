"""The writer's spliced encoding hashes to exactly what verify recomputes from stored rows, and
its shortcuts (time formatting, detail encoding) write exactly what the plain code writes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from tokenbroker.audit.canonical import (
    encode_detail,
    iso,
    posix_time,
    record_hash,
    record_hash_with,
)


def test_spliced_hash_equals_the_canonical_hash() -> None:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    values: list[object] = [
        None, "x", 'q"uo\\te', "ünïcode", "\U0001f600\n", 0, -5, 2**70, 1.5, 1e-7, True, False,
    ]  # fmt: skip
    for i in range(500):
        detail = {f"k{rng.randrange(20)}": rng.choice(values) for _ in range(rng.randrange(8))}
        row = {
            "tenant_id": "default",
            "seq": i,
            "prev_hash": "0" * 64,
            "at": datetime(2026, 11, 29, tzinfo=rng.choice(zones))
            + timedelta(microseconds=rng.randrange(10**9)),
            "type": rng.choice(["proxy.finished", "connect.completed"]),
            "actor": rng.choice([None, "agent:agt_1", "admin", 'ad"m\\in\n', "ädmin"]),
            "user_id": rng.choice([None, "alice", "bøb"]),
            "user_ref": rng.choice([None, "ab" * 32]),
            "agent_id": rng.choice([None, "agt_1"]),
            "provider": rng.choice([None, "acme"]),
            "connection_id": rng.choice([None, "conn_1"]),
            "outcome": rng.choice([None, "ok", "status:200"]),
            "detail": detail,
        }
        assert record_hash_with(row, encode_detail(detail)) == record_hash(row)


def test_posix_time_is_the_datetime_and_its_iso_text() -> None:
    rng = random.Random(11)
    # Fractions that round into the next second, and exact seconds, among ordinary times.
    edges = [0.0, 0.0000005, 0.4999995, 0.9999994999, 0.9999995, 0.99999951, 0.9999999]
    for _ in range(20_000):
        whole = rng.randrange(4 * 10**9)
        seconds = whole + (rng.choice(edges) if rng.random() < 0.5 else rng.random())
        at = datetime.fromtimestamp(seconds, UTC)
        assert posix_time(seconds) == (at, iso(at)), seconds
