"""The DEMO resource server: a tiny files API plus ``/echo`` for gateway tests.

It shares the provider's :class:`DemoState` in-process, so access tokens are checked directly.
Every response carries ``X-Demo: true``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenbroker.demo.appkeys import STATE_KEY
from tokenbroker.demo.oauth import bearer_error, bearer_token
from tokenbroker.demo.state import AccessTokenRecord, DemoState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_FILE_BODY = 64 * 1024

DEMO_FILES: dict[str, list[dict[str, object]]] = {
    "alice": [
        {"id": "a-1", "name": "alice-notes.txt", "size": 120},
        {"id": "a-2", "name": "alice-budget.csv", "size": 2048},
    ],
    "bob": [
        {"id": "b-1", "name": "bob-todo.md", "size": 64},
    ],
}
_TOKEN_KEY: web.RequestKey[AccessTokenRecord] = web.RequestKey(
    "tokenbroker_demo_token", AccessTokenRecord
)


def create_api_app(state: DemoState) -> web.Application:
    """The demo API application, checking tokens against ``state``."""
    app = web.Application(middlewares=[_demo_marker, _authenticate])
    app[STATE_KEY] = state
    app.router.add_get("/me", _me)
    app.router.add_get("/files", _list_files)
    app.router.add_post("/files", _create_file)
    app.router.add_get("/echo", _echo)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    return app


@web.middleware
async def _demo_marker(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Demo"] = "true"
        raise
    response.headers["X-Demo"] = "true"
    return response


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.count("api_calls")
    behaviour = state.behaviour
    if behaviour.api_delay_seconds > 0:
        await asyncio.sleep(behaviour.api_delay_seconds)
    if behaviour.api_failures:
        status = behaviour.api_failures.pop(0)
        if status == 401:
            return bearer_error(401, "invalid_token", "injected fault")
        wait = behaviour.api_retry_after if status in (429, 503) else None
        headers = {"Retry-After": wait} if wait is not None else None
        return web.json_response({"error": "injected_fault"}, status=status, headers=headers)
    if behaviour.api_redirect_to is not None:
        return web.Response(status=302, headers={"Location": behaviour.api_redirect_to})
    token = bearer_token(request)
    record = state.active_access_token(token) if token else None
    if record is None:
        return bearer_error(401, "invalid_token", "access token is missing, invalid or expired")
    state.count(f"api_calls_for:{record.user}")  # whose token reached the API
    request[_TOKEN_KEY] = record
    return await handler(request)


def _require_scope(request: web.Request, scope: str) -> AccessTokenRecord | web.Response:
    record = request[_TOKEN_KEY]
    if scope not in record.scopes:
        return bearer_error(403, "insufficient_scope", scope)
    return record


async def _me(request: web.Request) -> web.Response:
    record = request[_TOKEN_KEY]
    return web.json_response(
        {
            "sub": record.user,
            "email": f"{record.user}@demo.example",
            "client_id": record.client_id,
            "scope": " ".join(record.scopes),
        }
    )


async def _list_files(request: web.Request) -> web.Response:
    record = _require_scope(request, "files:read")
    if isinstance(record, web.Response):
        return record
    state = request.app[STATE_KEY]
    files = [*DEMO_FILES.get(record.user, []), *state.created_files.get(record.user, [])]
    return web.json_response({"owner": record.user, "files": files})


async def _create_file(request: web.Request) -> web.Response:
    record = _require_scope(request, "files:write")
    if isinstance(record, web.Response):
        return record
    if request.content_length is not None and request.content_length > MAX_FILE_BODY:
        return web.json_response({"error": "body_too_large"}, status=413)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "invalid_json"}, status=400)
    name = body.get("name") if isinstance(body, dict) else None
    content = body.get("content", "") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name or not isinstance(content, str):
        return web.json_response({"error": "name and content must be strings"}, status=400)
    created: dict[str, object] = {
        "id": f"f-{secrets.token_hex(4)}",
        "name": name,
        "size": len(content.encode()),
        "owner": record.user,
    }
    request.app[STATE_KEY].created_files.setdefault(record.user, []).append(created)
    return web.json_response(created, status=201)


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": [[k, v] for k, v in request.query.items()],
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
            "sub": request[_TOKEN_KEY].user,
        }
    )
