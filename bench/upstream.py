"""A tiny upstream API for ``bench/gateway.py --upstream aiohttp``: every request gets the same
~200-byte JSON answer; nothing (not even the token) is checked.

``python bench/upstream.py --port 9001``
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

FILES = [
    {"id": "a-1", "name": "alice-notes.txt", "size": 120, "modified": "2025-01-01T00:00:00Z"},
    {"id": "a-2", "name": "alice-budget.csv", "size": 2048, "modified": "2025-01-02T00:00:00Z"},
]
BODY = json.dumps({"files": FILES}, separators=(",", ":")).encode()


async def answer(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
