"""My connections and Agent access: the signed-in user's own accounts and grants."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.connect import revocation, sessions
from tokenbroker.connections import store as connection_store
from tokenbroker.errors import NotFound, TokenBrokerError
from tokenbroker.policy import agents, grants
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.web import words
from tokenbroker.web.base import Pages, form, origin, page, see_other, session_of

routes = web.RouteTableDef()


async def specs(pages: Pages) -> dict[str, ProviderSpec]:
    """Providers that can be used now (an undiscoverable one is simply not offered)."""
    resolved = await pages.svc.providers.resolve_all()
    return {name: spec for name, spec in resolved.items() if isinstance(spec, ProviderSpec)}


def connect_origins(found: dict[str, ProviderSpec]) -> set[str]:
    return {origin(spec.authorization_endpoint) for spec in found.values()}


async def start_connect(
    pages: Pages, request: web.Request, provider: str, scopes: tuple[str, ...], return_to: str
) -> web.Response:
    """A connect link minted for the signed-in user; the browser goes straight to it."""
    me = session_of(request)
    created = await sessions.create(
        pages.svc,
        tenant_id=me.tenant_id,
        user_id=me.user_id,
        provider=provider,
        scopes=scopes,
        return_to=return_to,
        actor="user",
    )
    return see_other(f"/connect/{created.id}")


@routes.get("/connections")
@page()
async def connections(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    async with pages.svc.engine.connect() as conn:
        found = await connection_store.list_for_user(conn, me.tenant_id, me.user_id)
    available = await specs(pages)
    connected = {c.provider for c in found}
    return pages.render(
        request,
        "connections.html",
        connections=found,
        providers=available,
        unconnected=[n for n in sorted(available) if n not in connected],
        words=words,
        form_targets=connect_origins(available),
    )


@routes.post("/connections/connect")
@page()
async def connect(request: web.Request, pages: Pages) -> web.StreamResponse:
    provider = form(request).get("provider")
    return await start_connect(pages, request, provider, (), "/connections")


@routes.post("/connections/{id}/disconnect")
@page()
async def disconnect(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    async with pages.svc.engine.connect() as conn:
        found = await connection_store.get(conn, me.tenant_id, request.match_info["id"])
    if found is None or found.user_id != me.user_id:
        raise NotFound("no such connection of yours")
    await revocation.delete_connection(pages.svc, me.tenant_id, found.id, actor="user")
    return see_other("/connections")


@routes.get("/access")
@page()
async def access(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    mine = await grants.list_grants(pages.svc, me.tenant_id, user_id=me.user_id)
    names = {a.id: a.name for a in await agents.list_agents(pages.svc, me.tenant_id)}
    available = await specs(pages)
    return pages.render(
        request, "access.html", grants=mine, agents=names, providers=available, words=words
    )


async def _my_grant(pages: Pages, request: web.Request) -> grants.Grant:
    me = session_of(request)
    mine = await grants.list_grants(
        pages.svc, me.tenant_id, user_id=me.user_id, include_revoked=True
    )
    for grant in mine:
        if grant.id == request.match_info["id"]:
            return grant
    raise NotFound("no such grant of yours")


@routes.get("/access/{id}")
@page()
async def grant_page(request: web.Request, pages: Pages) -> web.StreamResponse:
    grant = await _my_grant(pages, request)
    me = session_of(request)
    try:
        agent_name = (await agents.get(pages.svc, me.tenant_id, grant.agent_id)).name
    except TokenBrokerError:
        agent_name = f"removed agent {grant.agent_id}"
    available = await specs(pages)
    return pages.render(
        request,
        "grant.html",
        grant=grant,
        agent_name=agent_name,
        spec=available.get(grant.provider),
        now=pages.svc.clock.now(),
        words=words,
    )


@routes.post("/access/{id}/revoke")
@page()
async def revoke(request: web.Request, pages: Pages) -> web.StreamResponse:
    grant = await _my_grant(pages, request)
    if grant.revoked_at is None:
        await grants.revoke(pages.svc, grant.tenant_id, grant.id, actor="user")
    return see_other(f"/access/{grant.id}")
