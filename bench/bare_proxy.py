"""The Python ceiling: an aiohttp server forwarding to one upstream through one aiohttp client
session, swapping only the Authorization header. Started by ``bench/gateway.py``.

``python bench/bare_proxy.py --port 9000 --upstream http://127.0.0.1:9001 --token T``
maps ``/proxy/demo/<path>`` to ``<upstream>/<path>`` (the gateway's URL shape).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

PREFIX = "/proxy/demo"
DROPPED = frozenset(
    {"authorization", "connection", "keep-alive", "host", "content-length", "transfer-encoding"}
)
CLIENT = web.AppKey("client", aiohttp.ClientSession)


def make_app(upstream: str, token: str) -> web.Application:
    async def client(app: web.Application) -> AsyncIterator[None]:
        app[CLIENT] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[CLIENT].close()

    async def forward(request: web.Request) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED]
        headers.append(("Authorization", f"Bearer {token}"))
        url = upstream + request.raw_path.removeprefix(PREFIX)
        body = await request.read()
        async with request.app[CLIENT].request(
            request.method, url, headers=headers, data=body or None
        ) as answer:
            payload = await answer.read()
            kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in DROPPED]
            return web.Response(status=answer.status, body=payload, headers=kept)

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9001")
    parser.add_argument("--token", required=True, help="the user's token to inject")
    args = parser.parse_args()
    app = make_app(args.upstream.rstrip("/"), args.token)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
