"""The hash chain verifies after real traffic, and each kind of tampering is named at its seq."""

from __future__ import annotations

from pathlib import Path

from agents import GATEWAY_CONFIG
from harness import running
from trail_support import cli, execute, rehash, rewrite, rows, sign, traffic, verify


async def test_chain_verifies_after_a_flow_with_gateway_traffic(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        report = await verify(h)
        assert report.ok, report
        found = await rows(h)
        assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
        assert {"proxy.started", "proxy.finished", "connect.completed"} <= {
            r["type"] for r in found
        }
        assert all(r["user_id"] is None for r in found)
        assert any(r["user_ref"] for r in found)
        assert report.signed_seq == len(found)
        done = await cli(h, "audit", "verify")  # the CLI agrees, and exits 0
        assert done.returncode == 0, done.stderr
        assert b"default: ok" in done.stdout


async def test_an_edited_record_is_named(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        target = (await rows(h))[4]
        await rewrite(h, target["id"], detail={**target["detail"], "status": 500})
        report = await verify(h)
        assert report.fault is not None
        assert (report.fault.seq, report.fault.kind) == (5, "altered")
        done = await cli(h, "audit", "verify")
        assert done.returncode == 1
        assert b"FAILED at seq 5: altered" in done.stdout


async def test_a_removed_record_is_named(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        target = (await rows(h))[6]
        await execute(h, "DELETE FROM events WHERE id = :id", id=target["id"])
        report = await verify(h)
        assert report.fault is not None
        assert (report.fault.seq, report.fault.kind) == (7, "removed")


async def test_an_inserted_record_is_named(tmp_path: Path, database_url: str) -> None:
    """The forger shifts later records up and links a well-formed record in at seq 4."""
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        found = await rows(h)
        for row in reversed(found[3:]):
            await rewrite(h, row["id"], seq=row["seq"] + 1)
        forged = {**found[3], "seq": 4, "prev_hash": found[2]["hash"], "detail": {"x": 1}}
        forged.pop("id")
        forged["hash"] = rehash(forged)
        assert h.svc is not None
        from tokenbroker.db.schema import events

        async with h.svc.engine.begin() as conn:
            await conn.execute(events.insert().values(**forged))
        report = await verify(h)
        assert report.fault is not None
        assert (report.fault.seq, report.fault.kind) == (4, "inserted")


async def test_swapped_records_are_named(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        found = await rows(h)
        a, b = found[5], found[6]
        await rewrite(h, a["id"], seq=-1)
        await rewrite(h, b["id"], seq=a["seq"])
        await rewrite(h, a["id"], seq=b["seq"])
        report = await verify(h)
        assert report.fault is not None
        assert (report.fault.seq, report.fault.kind) == (6, "reordered")


async def test_a_truncated_tail_beyond_the_signed_head_is_named(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h)
        await sign(h)
        found = await rows(h)
        last = found[-1]["seq"]
        await execute(h, "DELETE FROM events WHERE seq > :s", s=last - 3)
        await execute(h, "UPDATE audit_heads SET seq = :s", s=last - 3)  # the forger hides it
        report = await verify(h)
        assert report.fault is not None
        assert (report.fault.seq, report.fault.kind) == (last - 2, "truncated")


async def test_a_chain_recomputed_without_the_key_fails_on_the_signature(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await traffic(h, calls=2)
        await sign(h)
        found = await rows(h)
        prev = found[2]["prev_hash"]
        for i, row in enumerate(found[2:]):
            edited = {**row, "prev_hash": prev}
            if i == 0:
                edited["detail"] = {**row["detail"], "forged": True}
            edited["hash"] = prev = rehash(edited)
            await rewrite(h, row["id"], **{k: edited[k] for k in ("detail", "prev_hash", "hash")})
        await execute(h, "UPDATE audit_heads SET hash = :v", v=prev)
        report = await verify(h)
        assert report.fault is not None
        assert report.fault.kind == "signature"
        assert report.fault.seq == 1  # no earlier signed head vouches for anything
        # forging the checkpoint too needs the key: a made-up signature is caught
        await execute(
            h, "UPDATE audit_checkpoints SET hash = :v, signature = :s", v=prev, s="0" * 64
        )
        report = await verify(h)
        assert report.fault is not None
        assert report.fault.kind == "forged_checkpoint"
