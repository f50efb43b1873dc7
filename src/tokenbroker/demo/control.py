"""DEMO-ONLY control endpoints under ``/_demo/`` for multi-process tests and the demo itself.

They let another process read counters, change behaviour knobs, expire tokens, approve a device
code and reset the provider. They have no authentication: never expose the demo provider.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenbroker.demo.appkeys import STATE_KEY


async def stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[STATE_KEY].counters))


async def get_behaviour(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].behaviour.as_dict())


async def merge_behaviour(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    changes = await _json_object(request)
    try:
        state.behaviour.merge(changes)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    return web.json_response(state.behaviour.as_dict())


async def expire_access_tokens(request: web.Request) -> web.Response:
    expired = request.app[STATE_KEY].expire_access_tokens()
    return web.json_response({"expired": expired})


async def approve_device(request: web.Request) -> web.Response:
    """``{"user_code": "...", "user": "alice", "approve": true}`` decides a device request."""
    body = await _json_object(request)
    user_code, user = body.get("user_code"), body.get("user", "alice")
    approve = body.get("approve", True)
    if not isinstance(user_code, str) or not isinstance(user, str) or not isinstance(approve, bool):
        raise web.HTTPBadRequest(text="user_code and user must be strings, approve a boolean")
    if not request.app[STATE_KEY].decide_device(user_code, user, approve=approve):
        raise web.HTTPNotFound(text="no pending device authorization with that user_code")
    return web.json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"ok": True})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_demo/stats", stats)
    app.router.add_get("/_demo/behaviour", get_behaviour)
    app.router.add_post("/_demo/behaviour", merge_behaviour)
    app.router.add_post("/_demo/expire-access-tokens", expire_access_tokens)
    app.router.add_post("/_demo/approve-device", approve_device)
    app.router.add_post("/_demo/reset", reset)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text="body must be JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
