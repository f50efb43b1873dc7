"""Device sessions (RFC 8628) in the management API, called with the tenant's admin key.

``POST /v1/device-sessions`` starts one (§3.1-3.2), ``GET`` tells its state and, once the
provider answered, the provider account the application shows its user before confirming
(§5.4), and ``POST .../confirm`` stores the connection for the proven user.
"""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api.http import json_response, read_json
from tokenbroker.api.keys import ADMIN_KEYS, SERVICES
from tokenbroker.connect.sessions import check_scopes, check_user_id
from tokenbroker.errors import BadRequest
from tokenbroker.lifecycle import device

routes = web.RouteTableDef()


def _tenant(request: web.Request) -> str:
    return request.app[ADMIN_KEYS].tenant_for(request)


@routes.post("/v1/device-sessions")
async def create_device_session(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    provider = body.get("provider")
    if not isinstance(provider, str) or not provider:
        raise BadRequest("provider is required")
    created = await device.start(
        request.app[SERVICES],
        tenant_id=tenant_id,
        user_id=check_user_id(body.get("user_id")),
        provider=provider,
        scopes=check_scopes(body.get("scopes")),
    )
    return json_response(created.public(), status=201)


@routes.get("/v1/device-sessions/{id}")
async def get_device_session(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    svc = request.app[SERVICES]
    found = await device.require(svc, request.match_info["id"], tenant_id=tenant_id)
    return json_response(found.public())


@routes.post("/v1/device-sessions/{id}/confirm")
async def confirm_device_session(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    user_id = check_user_id(body.get("user_id"))
    svc = request.app[SERVICES]
    session_id = request.match_info["id"]
    connection = await device.confirm(svc, tenant_id, session_id, user_id)
    done = await device.require(svc, session_id, tenant_id=tenant_id)
    return json_response({"connection": connection.public(), "device_session": done.public()})
