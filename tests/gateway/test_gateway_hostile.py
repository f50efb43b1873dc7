"""Hostile paths, headers and destinations never reach any host but the provider's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agents import (
    GATEWAY_CONFIG,
    agent,
    grant,
    opened_session,
    proxy,
    raw_get,
    ready,
    seeded_connection,
    session,
)
from harness import running

HOSTILE_PATHS = [
    "/proxy/acme/../admin",
    "/proxy/acme/files/../../etc/passwd",
    "/proxy/acme/%2e%2e/files",
    "/proxy/acme/%2E%2E/files",
    "/proxy/acme/.%2e/files",
    "/proxy/acme/%252e%252e/files",
    "/proxy/acme/./files",
    "/proxy/acme//evil.example/files",
    "/proxy/acme/files//x",
    "/proxy/acme/\\evil.example",
    "/proxy/acme/%5cevil.example",
    "/proxy/acme/@evil.example/files",
    "/proxy/acme/http://evil.example/files",
    "/proxy/acme/https:%2f%2fevil.example",
    "/proxy/acme/files%0d%0aHost:%20evil.example",
    "/proxy/acme/files%00",
    "/proxy/acme/files%0a",
    "/proxy/acme/files%zz",
    "/proxy/acme/files%2",
    "/proxy/acme/..;/files",
    "/proxy/acme/files?x=%0d%0a y",
    "/proxy/acme:nope/files",
    "/proxy/acme:../files",
    "/proxy/ACME/files",
    "/proxy/acme@evil.example/files",
    "/proxy/evil.example/files",
    "/proxy/%61cme/files",
]


def _sqlite(tmp_path: Path) -> str:
    """Path, header and destination checks do not touch the database: SQLite covers them."""
    return f"sqlite:///{tmp_path / 'tokenbroker.db'}"


@pytest.mark.parametrize("target", HOSTILE_PATHS)
async def test_hostile_paths_are_refused_before_the_upstream(tmp_path: Path, target: str) -> None:
    async with running(tmp_path, _sqlite(tmp_path), **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"], operations=["*"])
        before = h.counter("api_calls")
        status, data = await raw_get(h, target, {"Authorization": f"Bearer {token}"})
        assert status in (400, 403, 404), data[:300]
        assert h.counter("api_calls") == before, target


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization2", "x"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "host=evil.example"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("As-User", "12345"),
        ("Dropbox-API-Select-User", "dbmid:x"),
        ("Cookie", "a=b"),
        ("Proxy-Authorization", "Basic eA=="),
        ("TE", "trailers"),
        ("Upgrade", "websocket"),
        ("X-Real-IP", "10.0.0.1"),
        ("X-Host", "evil.example"),
    ],
)
async def test_hostile_headers_do_not_pass(tmp_path: Path, header: tuple[str, str]) -> None:
    async with running(tmp_path, _sqlite(tmp_path), **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/echo/x", headers=dict([header]))
        assert status == 200, body
        sent = {name.lower() for name, _ in json.loads(body)["headers"]}
        assert header[0].lower() not in sent


async def test_header_splitting_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}", **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        before = h.counter("api_calls")
        status, _data = await raw_get(
            h, "/proxy/acme/files", {"Authorization": f"Bearer {token}", "X-A": "a\rInjected: 1"}
        )
        assert status == 400
        assert h.counter("api_calls") == before


@pytest.mark.parametrize(
    "base",
    [
        "https://169.254.169.254",
        "https://10.0.0.1",
        "https://192.168.1.1",
        "https://[::ffff:127.0.0.1]:9",
        "https://0x7f000001:9",
        "https://2130706433:9",
        "https://127.0.0.1:9",
        "https://localhost:9",
        "https://[::1]:9",
        "https://100.64.0.1",
    ],
)
async def test_private_and_metadata_destinations_are_refused(tmp_path: Path, base: str) -> None:
    evil = {  # a provider NOT marked allow_insecure_loopback: only public addresses
        "authorization_endpoint": "https://auth.example/authorize",
        "token_endpoint": "https://auth.example/token",
        "client_id": "x",
        "api_base_url": "https://api.example",
        "api_bases": {"internal": base},
    }
    async with running(
        tmp_path, _sqlite(tmp_path), providers={"evil": evil}, **GATEWAY_CONFIG
    ) as h:
        token, made = await ready(h, ["files:read"])
        await seeded_connection(h, "evil", made["id"])
        status, _headers, body = await proxy(h, token, "GET", "/proxy/evil:internal/latest")
        assert status == 403, body
        assert json.loads(body)["error"] == "destination_not_allowed"


async def test_revocation_reaches_another_replica_within_a_second(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        granted = await grant(h, made["id"], ["files:read"])
        token = await session(h, made["id"])
        replica = await h.start_replica()
        assert (await proxy(h, token, "GET", "/proxy/acme/files", port=replica))[0] == 200
        await h.admin("DELETE", f"/v1/grants/{granted['id']}")  # on the first replica
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 403  # at once here
        await asyncio.sleep(1.0)
        assert (await proxy(h, token, "GET", "/proxy/acme/files", port=replica))[0] == 403


async def test_a_revoked_session_stops_on_another_replica_within_a_second(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        await grant(h, made["id"], ["files:read"])
        doc = await opened_session(h, made["id"])
        token = doc["token"]
        replica = await h.start_replica()
        assert (await proxy(h, token, "GET", "/proxy/acme/files", port=replica))[0] == 200
        await h.admin("DELETE", f"/v1/agent-sessions/{doc['id']}")  # on the first replica
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 401  # at once here
        await asyncio.sleep(1.0)
        assert (await proxy(h, token, "GET", "/proxy/acme/files", port=replica))[0] == 401
