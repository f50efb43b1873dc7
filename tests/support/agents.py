"""Helpers for gateway tests: an agent, a grant and an agent session for a user."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from harness import Harness

DEMO_OPERATIONS = [
    {"name": "files.list", "method": "GET", "path": "/files", "scopes": ["files:read"]},
    {"name": "files.create", "method": "POST", "path": "/files", "scopes": ["files:write"]},
    {"name": "me", "method": "GET", "path": "/me", "scopes": []},
    {"name": "echo", "method": "GET", "path": "/echo/{rest*}", "scopes": ["files:read"]},
    {"name": "echo.post", "method": "POST", "path": "/echo/{rest*}", "scopes": ["files:read"]},
    {"name": "batch", "method": "POST", "path": "/batch", "scopes": [], "explicit": True},
]
GATEWAY_CONFIG: dict[str, Any] = {"provider": {"operations": DEMO_OPERATIONS}}


async def agent(h: Harness, name: str = "mail-agent") -> dict[str, Any]:
    status, doc = await h.admin("POST", "/v1/agents", {"name": name})
    assert status == 201, doc
    return dict(doc)


async def grant(
    h: Harness,
    agent_id: str,
    scopes: list[str],
    *,
    user_id: str = "alice",
    operations: list[str] | None = None,
    expires_in: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": user_id,
        "agent_id": agent_id,
        "provider": "acme",
        "scopes": scopes,
    }
    if operations is not None:
        body["operations"] = operations
    if expires_in is not None:
        body["expires_in"] = expires_in
    status, doc = await h.admin("POST", "/v1/grants", body)
    assert status == 201, doc
    return dict(doc)


async def session(h: Harness, agent_id: str, user_id: str = "alice") -> str:
    """An agent session token for ``user_id`` (opened with the admin key)."""
    return str((await opened_session(h, agent_id, user_id))["token"])


async def opened_session(h: Harness, agent_id: str, user_id: str = "alice") -> dict[str, Any]:
    """The whole answer of opening an agent session (``id``, ``token``, ``expires_at``)."""
    status, doc = await h.admin(
        "POST", "/v1/agent-sessions", {"user_id": user_id, "agent_id": agent_id}
    )
    assert status == 201, doc
    return dict(doc)


async def proxy(
    h: Harness,
    token: str | None,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    port: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{port or h.broker_port}{path}",
            headers=sent,
            data=data,
            allow_redirects=False,
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def ready(
    h: Harness, scopes: list[str] | None = None, **grant_kw: Any
) -> tuple[str, dict[str, Any]]:
    """alice connected with files:read + files:write, an agent granted ``scopes``; its token."""
    await h.connect("alice", ["files:read", "files:write"])
    made = await agent(h)
    await grant(h, made["id"], scopes or ["files:read"], **grant_kw)
    return await session(h, made["id"]), made


async def seeded_connection(h: Harness, provider: str, agent_id: str) -> None:
    """alice's connection to ``provider`` with a stored token and a raw grant for the agent,
    written straight to the database: for egress tests whose provider cannot be connected."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from tokenbroker.db.schema import connections, grants
    from tokenbroker.secret import Secret
    from tokenbroker.vault.envelope import SealContext

    assert h.svc is not None
    now = datetime.now(UTC)
    connection_id, grant_id = f"conn_{provider}", f"grt_{provider}"
    async with h.svc.engine.begin() as conn:
        await conn.execute(
            insert(connections).values(
                id=connection_id,
                tenant_id="default",
                user_id="alice",
                provider=provider,
                status="active",
                scopes=["x"],
                connect_vars={},
                has_refresh_token=False,
                version=1,
                created_at=now,
                updated_at=now,
                access_token_expires_at=None,
            )
        )
        await conn.execute(
            insert(grants).values(
                id=grant_id,
                tenant_id="default",
                user_id="alice",
                agent_id=agent_id,
                connection_id=connection_id,
                provider=provider,
                scopes=["x"],
                operations=["*"],
                created_at=now,
            )
        )
        ctx = SealContext("default", "alice", "connection", connection_id, "access_token")
        await h.svc.sealed.put(conn, ctx, Secret(f"{provider}-token"))
        await h.svc.bus.publish(conn, "grant", grant_id)


async def raw_get(h: Harness, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send an exact request target (HTTP clients would normalise it) to the broker; a
    ``Host`` among ``headers`` replaces the broker's own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", h.broker_port)
    sent = {"Host": "127.0.0.1", "Connection": "close", **headers}
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in sent.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data
