"""Helpers for audit trail tests: a flow with gateway traffic, verification, raw row edits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agents import proxy, ready
from harness import ENV, Harness, to_toml
from sqlalchemy import select, text, update

from tokenbroker.audit.canonical import record_hash
from tokenbroker.audit.checkpoints import sign_head
from tokenbroker.audit.trail import trail_of
from tokenbroker.audit.verify import TenantReport, verify_tenant
from tokenbroker.db.schema import events
from tokenbroker.gateway.app import GATEWAY


async def flush(h: Harness) -> None:
    assert h.broker_app is not None
    await h.broker_app[GATEWAY]._recorder.flush()  # type: ignore[attr-defined]


async def traffic(h: Harness, calls: int = 5) -> str:
    """alice connected, an agent granted files:read, ``calls`` proxied requests; its token."""
    token, _ = await ready(h)
    for i in range(calls):
        status, _, _ = await proxy(
            h, token, "GET", "/proxy/acme/files", headers={"X-Request-ID": f"r-{i}"}
        )
        assert status == 200
    await flush(h)
    return token


async def verify(h: Harness, tenant: str = "default") -> TenantReport:
    assert h.svc is not None
    return await verify_tenant(h.svc.engine, trail_of(h.svc).signer, tenant)


async def sign(h: Harness, tenant: str = "default") -> None:
    assert h.svc is not None
    await sign_head(h.svc, tenant, "periodic")


async def rows(h: Harness, tenant: str = "default") -> list[dict[str, Any]]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        found = await conn.execute(
            select(events).where(events.c.tenant_id == tenant).order_by(events.c.seq)
        )
        return [dict(r._mapping) for r in found.all()]


async def execute(h: Harness, sql: str, **params: Any) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def rewrite(h: Harness, row_id: int, **values: Any) -> None:
    assert h.svc is not None
    async with h.svc.engine.begin() as conn:
        await conn.execute(update(events).where(events.c.id == row_id).values(**values))


def rehash(row: dict[str, Any]) -> str:
    return record_hash(row)


def cli_config(h: Harness) -> Path:
    """The harness's configuration as a file (declared operations left out)."""
    raw = dict(h.raw_config)
    raw["providers"] = {
        name: {k: v for k, v in section.items() if k != "operations"}
        for name, section in raw["providers"].items()
    }
    config = h.tmp / "cli.toml"
    config.write_text(to_toml(raw), encoding="utf-8")
    return config


def cli(h: Harness, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``tokenbroker ARGS`` against the harness's database and keys."""
    config = cli_config(h)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenbroker.cli",
            "--log-level",
            "WARNING",
            "-c",
            str(config),
            *args,
        ],
        capture_output=True,
        env={**os.environ, **ENV},
        cwd=h.tmp,
        check=False,
    )
