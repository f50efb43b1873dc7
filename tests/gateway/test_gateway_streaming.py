"""Large answers stream through the gateway (not held whole) and keep their bytes and status."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from agents import GATEWAY_CONFIG, proxy, ready, seeded_connection
from aiohttp import web
from harness import running

BIG = bytes(range(256)) * 4096  # 1 MiB


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    upstream = web.AppRunner(web.Application())
    upstream.app.router.add_get("/big", _big)
    await upstream.setup()
    port = _port()
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
            for path, status_code in (("/proxy/bulk/big", 200), ("/proxy/bulk/big?chunked=1", 206)):
                status, headers, body = await proxy(h, token, "GET", path)
                assert status == status_code
                assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
                assert headers["X-Request-ID"]
    finally:
        await upstream.cleanup()
