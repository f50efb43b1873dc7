"""Activity (the user's own events) and the admin overview."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from tokenbroker.audit import verify
from tokenbroker.audit.trail import trail_of
from tokenbroker.errors import TokenBrokerError
from tokenbroker.policy import agents, grants
from tokenbroker.web import store, words
from tokenbroker.web.base import Pages, page, session_of
from tokenbroker.web.events import user_events

routes = web.RouteTableDef()


@routes.get("/activity")
@page()
async def activity(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    agent_id = request.query.get("agent") or None
    provider = request.query.get("provider") or None
    before_text = request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() else None
    found = await user_events(
        pages.svc, me.tenant_id, me.user_id, agent_id=agent_id, provider=provider, before=before
    )
    names = {a.id: a.name for a in await agents.list_agents(pages.svc, me.tenant_id)}
    filters = {k: v for k, v in (("agent", agent_id), ("provider", provider)) if v}
    older = None
    if found.next_before is not None:
        older = "/activity?" + urlencode({**filters, "before": found.next_before})
    return pages.render(
        request,
        "activity.html",
        items=found.items,
        agents=names,
        providers=pages.svc.providers.names(),
        agent_id=agent_id,
        provider=provider,
        older=older,
        newer="/activity?" + urlencode(filters) if before is not None else None,
        words=words,
    )


@routes.get("/admin")
@page(admin=True)
async def admin(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    providers: list[tuple[str, str, str]] = []
    for name, spec in (await pages.svc.providers.resolve_all()).items():
        if isinstance(spec, TokenBrokerError):
            providers.append((name, "unavailable", spec.message))
        else:
            providers.append((name, "ok", spec.redirect_uri(pages.svc.settings.public_url)))
    trail = trail_of(pages.svc)
    audit_report = await verify.verify_tenant(pages.svc.engine, trail.signer, me.tenant_id)
    every = await grants.list_grants(pages.svc, me.tenant_id, user_id=None)
    per_agent: dict[str, int] = {}
    for grant in every:
        per_agent[grant.agent_id] = per_agent.get(grant.agent_id, 0) + 1
    return pages.render(
        request,
        "admin.html",
        providers=providers,
        agents=await agents.list_agents(pages.svc, me.tenant_id),
        grants_per_agent=per_agent,
        users=await store.known_users(pages.svc, me.tenant_id),
        audit=audit_report,
        words=words,
    )
