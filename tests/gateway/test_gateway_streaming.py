"""Large answers stream through the gateway (not held whole) and keep their bytes and status."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from agents import GATEWAY_CONFIG, proxy, ready, seeded_connection
from aiohttp import web
from harness import Harness, free_port, running

BIG = bytes(range(256)) * 4096  # 1 MiB


@asynccontextmanager
async def bulk_broker(tmp_path: Path, app: web.Application) -> AsyncIterator[tuple[Harness, str]]:
    """``app`` as the API of a provider ``bulk`` with alice connected and granted; the broker and
    an agent session token for alice."""
    upstream = web.AppRunner(app)
    await upstream.setup()
    port = free_port()
    await web.TCPSite(upstream, "127.0.0.1", port).start()
    bulk = {
        "authorization_endpoint": "http://127.0.0.1:1/authorize",
        "token_endpoint": "http://127.0.0.1:1/token",
        "client_id": "x",
        "api_base_url": f"http://127.0.0.1:{port}",
        "allow_insecure_loopback": True,
    }
    try:
        url = f"sqlite:///{tmp_path / 't.db'}"
        async with running(tmp_path, url, providers={"bulk": bulk}, **GATEWAY_CONFIG) as h:
            token, made = await ready(h)
            await seeded_connection(h, "bulk", made["id"])
            yield h, token
    finally:
        await upstream.cleanup()


async def _big(request: web.Request) -> web.StreamResponse:
    if request.query.get("chunked"):
        response = web.StreamResponse(status=206)
        await response.prepare(request)
        for start in range(0, len(BIG), 65536):
            await response.write(BIG[start : start + 65536])
        await response.write_eof()
        return response
    return web.Response(body=BIG, status=200, content_type="application/octet-stream")


async def test_large_answers_stream_through_intact(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_get("/big", _big)
    async with bulk_broker(tmp_path, app) as (h, token):
        for path, status_code in (("/proxy/bulk/big", 200), ("/proxy/bulk/big?chunked=1", 206)):
            status, headers, body = await proxy(h, token, "GET", path)
            assert status == status_code
            assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
            assert headers["X-Request-ID"]


async def test_both_bodies_stream_while_the_other_side_is_still_sending(tmp_path: Path) -> None:
    """The answer's first chunk reaches the agent while the upstream still holds the rest, and
    the request's first 128 KiB reach the upstream while the agent still holds the rest: the
    gateway holds neither body whole (each side waits for the other, so a gateway that buffers
    cannot pass)."""
    first_chunk_seen = asyncio.Event()
    upload_started = asyncio.Event()

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        await response.write(b"first;")
        await asyncio.wait_for(first_chunk_seen.wait(), 10)
        await response.write(b"rest")
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        received = len(await request.content.readexactly(128 * 1024))
        upload_started.set()
        received += len(await request.content.read())
        return web.json_response({"received": received})

    app = web.Application()
    app.router.add_get("/drip", drip)
    app.router.add_post("/upload", upload)

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * (128 * 1024)
        await asyncio.wait_for(upload_started.wait(), 10)
        yield b"b" * 1024

    async with bulk_broker(tmp_path, app) as (h, token):
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{h.broker_port}/proxy/bulk"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/drip", headers=auth) as resp:
                assert resp.status == 200
                first = await asyncio.wait_for(resp.content.readexactly(6), 5)
                assert first == b"first;"
                first_chunk_seen.set()
                assert await resp.content.read() == b"rest"
            async with http.post(f"{base}/upload", headers=auth, data=body()) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["received"] == 129 * 1024
