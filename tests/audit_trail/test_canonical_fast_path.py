"""The writer's spliced encoding hashes to exactly what verify recomputes from stored rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from tokenbroker.audit.canonical import encode_detail, record_hash, record_hash_with


def test_spliced_hash_equals_the_canonical_hash() -> None:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    values: list[object] = [None, "x", 'q"uo\\te', "ünïcode", 0, -5, 1.5, True, False]
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
