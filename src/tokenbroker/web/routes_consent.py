"""Consent to an agent's request, and confirming a connect link or device session.

``GET /consent?agent_id=&provider=&scopes=&operations=&expires_in=[&user_id=]`` shows what an
agent asks for; approving creates the grant (connecting the provider first when needed, then
coming back here). ``/confirm`` is the tenant's user verifier when sign-in is configured: the
signed-in user it was minted for attaches the provider account; anyone else stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from tokenbroker.connect import complete, sessions
from tokenbroker.connections.store import find
from tokenbroker.errors import BadRequest, TokenBrokerError
from tokenbroker.lifecycle import device
from tokenbroker.policy import agents, grants
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.records import Event
from tokenbroker.web import words
from tokenbroker.web.base import Form, Pages, form, origin, page, see_other, session_of
from tokenbroker.web.routes_account import start_connect

routes = web.RouteTableDef()
FIELDS = ("agent_id", "provider", "scopes", "operations", "expires_in", "user_id")


def _split(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in value.replace(",", " ").split() if v))


@dataclass(frozen=True)
class Ask:
    """An agent's access request, checked against this tenant and the user's connection."""

    agent: agents.Agent
    spec: ProviderSpec
    scopes: tuple[str, ...]
    operations: tuple[str, ...] | None
    expires_in: int | None
    needs_connect: bool
    query: str
    fields: dict[str, str]


async def _request(pages: Pages, request: web.Request, values: Form) -> Ask:
    me = session_of(request)
    agent = await agents.get(pages.svc, me.tenant_id, values.get("agent_id"))
    spec = await pages.svc.providers.get(values.get("provider"))
    scopes = _split(values.get("scopes"))
    ops_text = values.get("operations")
    operations = _split(ops_text) if ops_text else None
    if not scopes and not operations:
        raise BadRequest("the request names no scopes and no operations")
    expires = values.get("expires_in")
    if expires and not expires.isdigit():
        raise BadRequest("expires_in must be a number of seconds")
    async with pages.svc.engine.connect() as conn:
        connection = await find(conn, me.tenant_id, me.user_id, spec.name)
    missing = sorted(set(scopes) - set(connection.scopes)) if connection else list(scopes)
    fields = {k: values.get(k) for k in FIELDS if values.get(k)}
    return Ask(
        agent=agent,
        spec=spec,
        scopes=scopes,
        operations=operations,
        expires_in=int(expires) if expires else None,
        needs_connect=connection is None or bool(missing) or connection.status == "needs_reauth",
        query=urlencode(fields),
        fields=fields,
    )


async def _other_user(pages: Pages, request: web.Request, values: Form) -> web.Response | None:
    me = session_of(request)
    wanted = values.get("user_id")
    if not wanted or wanted == me.user_id:
        return None
    await pages.svc.recorder.record(
        Event(
            type="consent.refused",
            tenant_id=me.tenant_id,
            actor="user",
            user_id=me.user_id,
            provider=values.get("provider") or None,
            outcome="denied",
            detail={"agent_id": values.get("agent_id"), "error": "user_mismatch"},
        )
    )
    return pages.message(
        request,
        "This request is for someone else",
        "This access request was made for another user. Nothing was granted.",
        status=403,
    )


@routes.get("/consent")
@page()
async def consent(request: web.Request, pages: Pages) -> web.StreamResponse:
    values = Form(dict(request.query))
    refused = await _other_user(pages, request, values)
    if refused is not None:
        return refused
    ask = await _request(pages, request, values)
    targets = {origin(ask.spec.authorization_endpoint)} if ask.needs_connect else set()
    return pages.render(request, "consent.html", words=words, form_targets=targets, ask=ask)


@routes.post("/consent")
@page()
async def decide(request: web.Request, pages: Pages) -> web.StreamResponse:
    values = form(request)
    refused = await _other_user(pages, request, values)
    if refused is not None:
        return refused
    ask = await _request(pages, request, values)
    me = session_of(request)
    agent, provider = ask.agent, ask.spec.name
    if values.get("decision") != "approve":
        await pages.svc.recorder.record(
            Event(
                type="consent.denied",
                tenant_id=me.tenant_id,
                actor="user",
                user_id=me.user_id,
                provider=provider,
                outcome="denied",
                detail={"agent_id": agent.id, "scopes": values.get("scopes")},
            )
        )
        return pages.message(
            request, "Request denied", f"{agent.name} was not given access.", status=200
        )
    if ask.needs_connect:
        return await start_connect(pages, request, provider, ask.scopes, f"/consent?{ask.query}")
    grant = await grants.create(
        pages.svc,
        tenant_id=me.tenant_id,
        user_id=me.user_id,
        agent_id=agent.id,
        provider=provider,
        scopes=list(ask.scopes),
        operations=None if ask.operations is None else list(ask.operations),
        expires_in=ask.expires_in,
        actor="user",
    )
    return see_other(f"/access/{grant.id}")


@routes.get("/confirm")
@page()
async def confirm_page(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    found = await sessions.get(
        pages.svc, request.query.get("connect_session_id", ""), tenant_id=me.tenant_id
    )
    if found is None or found.status != sessions.PENDING_CONFIRMATION:
        return pages.message(
            request,
            "Nothing to confirm",
            "This connect link is not waiting for a confirmation (it was used, or expired).",
            status=409,
        )
    return pages.render(
        request,
        "confirm.html",
        kind="connect",
        pending=found,
        mine=found.user_id == me.user_id,
        flow_id=request.query.get("flow_id", ""),
        words=words,
    )


@routes.post("/confirm")
@page()
async def confirm(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    values = form(request)
    try:
        done = await complete.confirm(
            pages.svc,
            me.tenant_id,
            values.get("connect_session_id"),
            values.get("flow_id"),
            me.user_id,
            actor="user",
        )
    except complete.UserMismatch:
        return _not_yours(pages, request)
    if done.session.return_to:
        return see_other(done.session.return_to)
    return see_other("/connections")


@routes.get("/confirm/device/{id}")
@page()
async def device_page(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    found = await device.require(pages.svc, request.match_info["id"], tenant_id=me.tenant_id)
    if found.status != device.PENDING_CONFIRMATION:
        return pages.message(
            request, "Nothing to confirm", "This device sign-in is not waiting.", status=409
        )
    return pages.render(
        request,
        "confirm.html",
        kind="device",
        pending=found,
        mine=found.user_id == me.user_id,
        words=words,
    )


@routes.post("/confirm/device/{id}")
@page()
async def device_confirm(request: web.Request, pages: Pages) -> web.StreamResponse:
    me = session_of(request)
    try:
        await device.confirm(
            pages.svc, me.tenant_id, request.match_info["id"], me.user_id, actor="user"
        )
    except TokenBrokerError as exc:
        if exc.code == "user_mismatch":
            return _not_yours(pages, request)
        raise
    return see_other("/connections")


def _not_yours(pages: Pages, request: web.Request) -> web.Response:
    return pages.message(
        request,
        "This link belongs to someone else",
        "It was made for another user, so nothing was stored; the attempt was recorded.",
        status=403,
    )
