"""Sign-in, its callback and sign-out."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.db.schema import DEFAULT_TENANT
from tokenbroker.errors import TokenBrokerError
from tokenbroker.records import Event
from tokenbroker.web import store
from tokenbroker.web.base import STATE, Pages, page, safe_next, see_other, session_of
from tokenbroker.web.login import CALLBACK_PATH

routes = web.RouteTableDef()


@routes.get("/login")
@page(signed_in=False)
async def login(request: web.Request, pages: Pages) -> web.StreamResponse:
    tenant_id = request.query.get("tenant") or DEFAULT_TENANT
    if pages.logins.settings(tenant_id) is None:
        return pages.message(
            request,
            "Sign-in is not available",
            "Sign-in to the broker is not configured for this organisation.",
            status=404,
        )
    location, secret = await pages.logins.begin(tenant_id, safe_next(request.query.get("next")))
    response = see_other(location)
    response.set_cookie(
        pages.login_cookie,
        secret,
        max_age=store.LOGIN_TTL_SECONDS,
        path=CALLBACK_PATH,
        httponly=True,
        samesite="Lax",  # the provider's redirect back is a cross-site top-level navigation
        secure=pages.secure,
    )
    return response


@routes.get(CALLBACK_PATH)
@page(signed_in=False)
async def login_callback(request: web.Request, pages: Pages) -> web.StreamResponse:
    cookie = request.cookies.get(pages.login_cookie)
    try:
        who = await pages.logins.finish(request.query, cookie)
    except TokenBrokerError as exc:
        response = pages.render(
            request,
            "message.html",
            status=exc.status if 400 <= exc.status < 600 else 400,
            heading="You could not be signed in",
            message=exc.message,
            code=exc.code,
            retry="/login",
        )
        response.del_cookie(pages.login_cookie, path=CALLBACK_PATH)
        return response
    login = pages.logins.settings(who.tenant_id)
    assert login is not None
    secret = await store.sign_in(
        pages.svc,
        tenant_id=who.tenant_id,
        user_id=who.user_id,
        email=who.email,
        is_admin=who.is_admin,
        ttl_seconds=login.session_ttl_seconds,
        previous_secret=request.cookies.get(pages.session_cookie),
    )
    await pages.svc.recorder.record(
        Event(
            type="web.signed_in",
            tenant_id=who.tenant_id,
            actor="browser",
            user_id=who.user_id,
            outcome="ok",
            detail={"admin": who.is_admin},
        )
    )
    response = see_other(who.next_path or "/connections")
    response.del_cookie(pages.login_cookie, path=CALLBACK_PATH)
    response.set_cookie(
        pages.session_cookie,
        secret,
        max_age=login.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="Lax",  # pages reached from a provider redirect (confirmation) need it
        secure=pages.secure,
    )
    return response


@routes.post("/logout")
@page()
async def logout(request: web.Request, pages: Pages) -> web.StreamResponse:
    secret = request.cookies.get(pages.session_cookie)
    session = session_of(request)
    if secret:
        await store.sign_out(pages.svc, secret)
    await pages.svc.recorder.record(
        Event(
            type="web.signed_out",
            tenant_id=session.tenant_id,
            actor="browser",
            user_id=session.user_id,
            outcome="ok",
        )
    )
    request[STATE].session = None
    response = pages.message(request, "Signed out", "You are signed out.", status=200)
    response.del_cookie(pages.session_cookie, path="/")
    return response
