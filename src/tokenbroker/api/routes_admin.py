"""The management API an application backend calls with its admin key."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenbroker.api.http import json_response, read_json
from tokenbroker.api.keys import ADMIN_KEYS, REFRESHER, SERVICES
from tokenbroker.connect import complete, revocation, sessions
from tokenbroker.connections import store
from tokenbroker.errors import BadRequest, NotFound

routes = web.RouteTableDef()


def _tenant(request: web.Request) -> str:
    return request.app[ADMIN_KEYS].tenant_for(request)


@routes.post("/v1/connect-sessions")
async def create_connect_session(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    provider = body.get("provider")
    if not isinstance(provider, str) or not provider:
        raise BadRequest("provider is required")
    return_to = body.get("return_to")
    if return_to is not None and not isinstance(return_to, str):
        raise BadRequest("return_to must be a string")
    svc = request.app[SERVICES]
    created = await sessions.create(
        svc,
        tenant_id=tenant_id,
        user_id=sessions.check_user_id(body.get("user_id")),
        provider=provider,
        scopes=sessions.check_scopes(body.get("scopes")),
        return_to=return_to,
    )
    return json_response(created.public(svc.settings.public_url), status=201)


@routes.get("/v1/connect-sessions/{id}")
async def get_connect_session(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    found = await sessions.require(svc, request.match_info["id"], tenant_id=_tenant(request))
    return json_response(found.public(svc.settings.public_url))


@routes.post("/v1/connect-sessions/{id}/confirm")
async def confirm_connect_session(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    flow_id = body.get("flow_id")
    if not isinstance(flow_id, str) or not flow_id:
        raise BadRequest("flow_id is required")
    user_id = sessions.check_user_id(body.get("user_id"))
    svc = request.app[SERVICES]
    done = await complete.confirm(svc, tenant_id, request.match_info["id"], flow_id, user_id)
    return json_response(
        {"connection": done.connection.public(), "return_to": done.session.return_to}
    )


@routes.get("/v1/connections")
async def list_connections(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    user_id = request.query.get("user_id")
    svc = request.app[SERVICES]
    async with svc.engine.connect() as conn:
        found = await store.list_for_user(conn, tenant_id, user_id)
    return json_response({"connections": [c.public() for c in found]})


@routes.get("/v1/connections/{id}")
async def get_connection(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    svc = request.app[SERVICES]
    async with svc.engine.connect() as conn:
        found = await store.get(conn, tenant_id, request.match_info["id"])
    if found is None:
        raise NotFound(f"no connection {request.match_info['id']!r}")
    return json_response(found.public())


@routes.post("/v1/connections/{id}/refresh")
async def refresh_connection(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    refreshed = await request.app[REFRESHER].refresh_now(tenant_id, request.match_info["id"])
    return json_response(refreshed.public())


@routes.delete("/v1/connections/{id}")
async def delete_connection(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    svc = request.app[SERVICES]
    outcome = await revocation.delete_connection(svc, tenant_id, request.match_info["id"])
    return json_response({"id": request.match_info["id"], "deleted": True, "revocation": outcome})


@routes.get("/v1/providers")
async def list_providers(request: web.Request) -> web.Response:
    _tenant(request)
    svc = request.app[SERVICES]
    out: list[dict[str, Any]] = []
    for name, spec in (await svc.providers.resolve_all()).items():
        if isinstance(spec, Exception):
            out.append({"name": name, "status": "unavailable", "message": str(spec)})
        else:
            out.append(
                {
                    "name": name,
                    "display_name": spec.display_name,
                    "status": "ok",
                    "template": spec.template,
                    "scopes": list(spec.scopes),
                    "redirect_uri": spec.redirect_uri(svc.settings.public_url),
                }
            )
    return json_response({"providers": out})
