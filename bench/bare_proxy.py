"""The Python ceiling: an aiohttp server forwarding to one upstream through one aiohttp client
session, swapping only the Authorization header. Started by ``bench/gateway.py``.

``python bench/bare_proxy.py --port 9000 --upstream http://127.0.0.1:9001 --token T``
maps ``/proxy/demo/<path>`` to ``<upstream>/<path>`` (the gateway's URL shape).

``--client gateway`` forwards through the gateway's own HTTP/1.1 client
(``tokenbroker.gateway.upstream``) instead: the same 40 lines with the client the gateway
uses, to show how much of the gateway's cost is the client and how much is everything else.
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


def make_gateway_client_app(upstream: str, token: str) -> web.Application:
    from tokenbroker.gateway.destination import GuardedResolver, policy
    from tokenbroker.gateway.upstream import UpstreamPool

    host = upstream.split("//", 1)[1].split(":", 1)[0]
    pool = web.AppKey("pool", UpstreamPool)

    async def client(app: web.Application) -> AsyncIterator[None]:
        resolver = GuardedResolver(policy(frozenset({host})))
        app[pool] = UpstreamPool(resolver, connect_timeout=10, read_timeout=60)
        yield
        await app[pool].close()

    async def forward(request: web.Request) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED]
        headers.append(("Authorization", f"Bearer {token}"))
        body = await request.read()
        target = request.raw_path.removeprefix(PREFIX)
        answer = await request.app[pool].request(
            request.method, upstream, target, headers, body or None
        )
        payload = await answer.read()
        answer.release()
        kept = [(k, v) for k, v in answer.headers if k.lower() not in DROPPED]
        return web.Response(status=answer.status, body=payload, headers=kept)

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


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
    parser.add_argument("--client", choices=("aiohttp", "gateway"), default="aiohttp")
    args = parser.parse_args()
    make = make_app if args.client == "aiohttp" else make_gateway_client_app
    app = make(args.upstream.rstrip("/"), args.token)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
