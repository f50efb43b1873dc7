"""Agents, grants, session tickets and agent sessions (management API)."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api.http import json_response, read_json
from tokenbroker.api.keys import ADMIN_KEYS, SERVICES
from tokenbroker.connect.sessions import check_user_id
from tokenbroker.errors import BadRequest, Unauthorized
from tokenbroker.policy import agents, grants, sessions

routes = web.RouteTableDef()


def _tenant(request: web.Request) -> str:
    return request.app[ADMIN_KEYS].tenant_for(request)


@routes.post("/v1/agents")
async def register_agent(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    agent, secret = await agents.register(
        request.app[SERVICES], tenant_id, agents.check_name(body.get("name"))
    )
    return json_response({**agent.public(), "secret": secret.reveal()}, status=201)


@routes.get("/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    found = await agents.list_agents(request.app[SERVICES], _tenant(request))
    return json_response({"agents": [a.public() for a in found]})


@routes.delete("/v1/agents/{id}")
async def remove_agent(request: web.Request) -> web.Response:
    await agents.remove(request.app[SERVICES], _tenant(request), request.match_info["id"])
    return json_response({"id": request.match_info["id"], "deleted": True})


@routes.post("/v1/agents/{id}/rotate-secret")
async def rotate_agent_secret(request: web.Request) -> web.Response:
    secret = await agents.rotate_secret(
        request.app[SERVICES], _tenant(request), request.match_info["id"]
    )
    return json_response({"id": request.match_info["id"], "secret": secret.reveal()})


@routes.post("/v1/grants")
async def create_grant(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    provider = body.get("provider")
    agent_id = body.get("agent_id")
    if not isinstance(provider, str) or not isinstance(agent_id, str):
        raise BadRequest("provider and agent_id are required")
    grant = await grants.create(
        request.app[SERVICES],
        tenant_id=tenant_id,
        user_id=check_user_id(body.get("user_id")),
        agent_id=agent_id,
        provider=provider,
        scopes=body.get("scopes"),
        operations=body.get("operations"),
        expires_in=body.get("expires_in"),
    )
    return json_response(grant.public(), status=201)


@routes.get("/v1/grants")
async def list_grants(request: web.Request) -> web.Response:
    found = await grants.list_grants(
        request.app[SERVICES], _tenant(request), user_id=request.query.get("user_id")
    )
    return json_response({"grants": [g.public() for g in found]})


@routes.delete("/v1/grants/{id}")
async def revoke_grant(request: web.Request) -> web.Response:
    grant = await grants.revoke(request.app[SERVICES], _tenant(request), request.match_info["id"])
    return json_response({**grant.public(), "revoked": True})


@routes.post("/v1/session-tickets")
async def mint_ticket(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await read_json(request)
    ticket, info = await sessions.mint_ticket(
        request.app[SERVICES],
        tenant_id=tenant_id,
        user_id=check_user_id(body.get("user_id")),
        agent_id=body.get("agent_id"),
    )
    return json_response({**info, "ticket": ticket.reveal()}, status=201)


@routes.post("/v1/agent-sessions")
async def mint_agent_session(request: web.Request) -> web.Response:
    """With the admin key: any user and agent of the tenant. With an agent secret: only the
    user named by a single-use session ticket that the application minted for that agent."""
    svc = request.app[SERVICES]
    bearer = request.headers.get("Authorization", "").partition(" ")[2].strip()
    body = await read_json(request)
    agent_id: object
    if bearer.startswith(agents.PREFIX):
        agent = await agents.authenticate(svc, bearer)
        if "user_id" in body:
            raise Unauthorized("an agent cannot choose a user: present a session ticket")
        user_id = await sessions.redeem_ticket(svc, agent.tenant_id, agent.id, body.get("ticket"))
        tenant_id, agent_id, actor = agent.tenant_id, agent.id, f"agent:{agent.id}"
    else:
        tenant_id = _tenant(request)
        user_id = check_user_id(body.get("user_id"))
        agent_id, actor = body.get("agent_id"), "admin"
    token, info = await sessions.mint(
        svc,
        tenant_id=tenant_id,
        user_id=user_id,
        agent_id=agent_id,
        expires_in=body.get("expires_in"),
        actor=actor,
    )
    return json_response({**info, "token": token.reveal()}, status=201)


@routes.delete("/v1/agent-sessions/{id}")
async def revoke_agent_session(request: web.Request) -> web.Response:
    await sessions.revoke(request.app[SERVICES], _tenant(request), request.match_info["id"])
    return json_response({"id": request.match_info["id"], "revoked": True})
