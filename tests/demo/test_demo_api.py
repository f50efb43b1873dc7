"""The demo API checks tokens against the shared DemoState; the CLI serves provider + API."""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
from demo_support import CLIENT_ID, Demo, free_port

from tokenbroker.demo.provider import serve


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue(demo: Demo, user: str = "alice", *scopes: str) -> str:
    record = demo.state.issue_access_token(client_id=CLIENT_ID, user=user, scopes=scopes)
    return record.token


async def test_missing_invalid_and_expired_tokens_get_401(demo: Demo) -> None:
    token = issue(demo, "alice", "files:read")
    for headers in ({}, bearer("not-a-token"), {"Authorization": f"Basic {token}"}):
        resp = await demo.api.get("/files", headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert resp.headers["X-Demo"] == "true"
    assert (await demo.api.get("/files", headers=bearer(token))).status == 200
    resp = await demo.provider.post("/_demo/expire-access-tokens")
    assert resp.status == 200
    assert (await demo.api.get("/files", headers=bearer(token))).status == 401


async def test_scopes_are_enforced(demo: Demo) -> None:
    token = issue(demo, "bob", "openid")
    resp = await demo.api.get("/files", headers=bearer(token))
    assert resp.status == 403
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    resp = await demo.api.post("/files", json={"name": "x", "content": "y"}, headers=bearer(token))
    assert resp.status == 403
    me = await (await demo.api.get("/me", headers=bearer(token))).json()
    assert me["sub"] == "bob"


async def test_files_read_and_write(demo: Demo) -> None:
    token = issue(demo, "alice", "files:read", "files:write")
    body = await (await demo.api.get("/files", headers=bearer(token))).json()
    assert body["owner"] == "alice"
    assert {f["name"] for f in body["files"]} >= {"alice-notes.txt"}
    resp = await demo.api.post(
        "/files", json={"name": "new.txt", "content": "hello"}, headers=bearer(token)
    )
    assert resp.status == 201
    created = await resp.json()
    assert (created["name"], created["size"], created["owner"]) == ("new.txt", 5, "alice")
    body = await (await demo.api.get("/files", headers=bearer(token))).json()
    assert "new.txt" in {f["name"] for f in body["files"]}
    bob_token = issue(demo, "bob", "files:read")
    bob = await (await demo.api.get("/files", headers=bearer(bob_token))).json()
    assert "new.txt" not in {f["name"] for f in bob["files"]}


async def test_echo_reports_what_arrived(demo: Demo) -> None:
    token = issue(demo, "alice")
    resp = await demo.api.put(
        "/echo/a/b?x=1&x=2",
        data=b"12345",
        headers={**bearer(token), "X-Agent": "agent-7"},
    )
    body = await resp.json()
    assert (body["method"], body["path"], body["body_length"]) == ("PUT", "/echo/a/b", 5)
    assert body["query"] == [["x", "1"], ["x", "2"]]
    headers = {k.lower(): v for k, v in body["headers"]}
    assert headers["x-agent"] == "agent-7"
    assert headers["authorization"] == f"Bearer {token}"
    resp = await demo.api.get("/echo", headers=bearer(token))
    assert (await resp.json())["path"] == "/echo"
    assert demo.state.counters["api_calls"] == 2


async def test_api_fault_knobs(demo: Demo) -> None:
    token = issue(demo, "alice")
    demo.state.behaviour.api_failures = [401, 502]
    assert (await demo.api.get("/me", headers=bearer(token))).status == 401
    assert (await demo.api.get("/me", headers=bearer(token))).status == 502
    assert (await demo.api.get("/me", headers=bearer(token))).status == 200
    demo.state.behaviour.api_redirect_to = "http://169.254.169.254/latest/meta-data"
    resp = await demo.api.get("/me", headers=bearer(token), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "http://169.254.169.254/latest/meta-data"


async def test_serve_runs_provider_and_api_on_loopback() -> None:
    port, api_port = free_port(), free_port()
    args = argparse.Namespace(
        host="127.0.0.1",
        port=port,
        issuer=None,
        client_id="broker",
        client_secret="demo-secret",
        redirect_uri=None,
        user=["carol"],
        device_interval=1,
        access_token_ttl=60,
        api_port=api_port,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(args, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    resp = await session.get(f"http://127.0.0.1:{port}/_demo/stats")
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
                    continue
                async with resp:
                    assert resp.status == 200
                    break
            url = f"http://127.0.0.1:{port}/.well-known/openid-configuration"
            async with session.get(url) as resp:
                assert (await resp.json())["issuer"] == f"http://127.0.0.1:{port}"
            async with session.get(f"http://127.0.0.1:{api_port}/me") as resp:
                assert resp.status == 401
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert "not a real identity provider" in await resp.text()
    finally:
        stop.set()
        await task


async def test_module_entry_point_shows_help() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenbroker.demo.provider",
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"--api-port" in out
