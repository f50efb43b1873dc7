"""Retention keeps the chain verifiable; erasure unties records from the person, rewriting none."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from agents import GATEWAY_CONFIG, proxy
from harness import running
from sqlalchemy import text
from trail_support import cli, execute, flush, rows, sign, traffic, verify

from tokenbroker.audit.retention import prune


async def test_pruning_old_records_leaves_a_chain_that_verifies(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        assert h.svc is not None
        await traffic(h, calls=4)
        await sign(h)
        found = await rows(h)
        old = found[: len(found) // 2]
        ago = h.svc.clock.now() - timedelta(days=40)
        await execute(h, "UPDATE events SET at = :at WHERE seq <= :s", at=ago, s=old[-1]["seq"])
        # the edit above broke those records' hashes: pruning removes exactly them
        pruned = await prune(h.svc, h.svc.clock.now() - timedelta(days=30))
        default = next(p for p in pruned if p.tenant_id == "default")
        assert (default.records, default.through_seq) == (len(old), old[-1]["seq"])
        report = await verify(h)
        assert report.ok, report
        assert report.first_seq == old[-1]["seq"] + 1
        done = await cli(h, "audit", "prune", "--older-than", "30")
        assert done.returncode == 0, done.stderr
        assert (await cli(h, "audit", "verify")).returncode == 0
        # the anchor cannot be moved without the key
        await execute(h, "UPDATE audit_checkpoints SET seq = seq + 1 WHERE kind = 'retention'")
        report = await verify(h)
        assert report.fault is not None  # the forged anchor vouches for nothing: seq 1 is gone
        assert (report.fault.seq, report.fault.kind) == (1, "removed")


async def test_erasing_a_user_keeps_records_but_unties_them(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        assert h.svc is not None
        token = await traffic(h, calls=3)
        before = await rows(h)
        status, listed = await h.admin("GET", "/v1/audit?user_id=alice")
        assert status == 200
        assert listed["records"]
        status, doc = await h.admin("DELETE", "/v1/users/alice")
        assert status == 200, doc
        assert list(doc["connections"].values()) == ["revoked"]
        await flush(h)
        # the agent's session ended with the user
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 401
        after = await rows(h)
        assert [r["hash"] for r in after[: len(before)]] == [r["hash"] for r in before]
        assert "alice" not in json.dumps([{**r, "at": str(r["at"])} for r in after])
        status, listed = await h.admin("GET", "/v1/audit?user_id=alice")
        assert status == 200
        assert listed["records"] == []
        async with h.svc.engine.connect() as conn:
            for table in (
                "connections",
                "grants",
                "agent_sessions",
                "connect_sessions",
                "sealed_secrets",
                "audit_user_keys",
            ):
                count = (
                    await conn.execute(
                        text(f"SELECT count(*) FROM {table} WHERE user_id = 'alice'")
                    )
                ).scalar_one()
                assert count == 0, table
        await sign(h)
        report = await verify(h)
        assert report.ok, report
        # the CLI does the same for another user
        await h.connect("bob", ["files:read"])
        done = await cli(h, "users", "erase", "bob")
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().rstrip().endswith(": revoked")  # at the provider
        status, listed = await h.admin("GET", "/v1/audit?user_id=bob")
        assert listed["records"] == []
        assert (await cli(h, "audit", "verify")).returncode == 0
