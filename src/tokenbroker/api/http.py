"""JSON in, JSON out, and the one error shape: ``{"error": CODE, "message": TEXT}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from tokenbroker.errors import BadRequest, TokenBrokerError

log = logging.getLogger("tokenbroker.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_JSON = 64 * 1024


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def redirect(location: str) -> web.Response:
    """A 302 that can still carry cookies and headers (returned, not raised)."""
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    response = json_response({"error": code, "message": message, **extra}, status=status)
    response.headers["TokenBroker-Error"] = code
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest(
            "the body must be JSON (Content-Type: application/json)", code="invalid_json"
        )
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise BadRequest("the JSON body is too large", code="invalid_json")
    raw = await request.content.read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise BadRequest("the JSON body is too large", code="invalid_json")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return doc


def guarded(handler: Handler) -> Handler:
    """Errors as JSON and the security headers, for one management or browser route.

    A wrapper per route rather than an application middleware: middlewares would run for every
    gateway request too, and on that path each layer costs measurable throughput.
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = await _json_errors(request, handler)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    return wrapped


def guard_routes(routes: Iterable[web.AbstractRouteDef]) -> list[web.RouteDef]:
    out = []
    for route in routes:
        assert isinstance(route, web.RouteDef)
        out.append(web.RouteDef(route.method, route.path, guarded(route.handler), route.kwargs))
    return out


async def unknown_endpoint(request: web.Request) -> web.StreamResponse:
    return error_response(404, "not_found", "no such endpoint (or method) in the API")


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API routes (``/v1/``) answer errors as JSON; browser routes render their own pages."""
    try:
        return await handler(request)
    except TokenBrokerError as exc:
        if exc.status >= 500:
            log.warning(
                "%s %s failed: %s (%s)", request.method, request.path, exc.code, exc.message
            )
        response = error_response(exc.status, exc.code, exc.message)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int):
            response.headers["Retry-After"] = str(retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/v1/"):
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            return error_response(exc.status, code, exc.reason)
        raise
