"""What a person's browser sees: the connect link, the OAuth callback and result pages."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api.http import redirect
from tokenbroker.api.keys import PAGES, SERVICES
from tokenbroker.connect import authorize, callback
from tokenbroker.errors import InvalidState, TokenBrokerError

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    return request.app[PAGES].render("home.html")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/connect/{id}")
async def open_connect_link(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    try:
        step = await authorize.begin(svc, request.match_info["id"])
    except TokenBrokerError as exc:
        return _error_page(request, exc, "This connect link cannot be used")
    response = redirect(step.location)
    response.set_cookie(
        authorize.FLOW_COOKIE,
        step.cookie_value,
        max_age=step.max_age,
        path=step.cookie_path,
        httponly=True,
        samesite="Lax",  # the provider's redirect back is a top-level cross-site navigation
        secure=svc.settings.public_url.startswith("https://"),
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@routes.get("/oauth/callback/{provider}")
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    provider = request.match_info["provider"]
    cookie = request.cookies.get(authorize.FLOW_COOKIE)
    try:
        if any(len(request.query.getall(key)) > 1 for key in request.query):
            raise InvalidState("a callback parameter is repeated (RFC 6749 §3.1)")
        outcome = await callback.handle(svc, provider, request.query, cookie)
    except TokenBrokerError as exc:
        return _error_page(request, exc, "The account could not be connected")
    if outcome.redirect_to:
        response: web.StreamResponse = redirect(outcome.redirect_to)
    else:
        response = request.app[PAGES].render(
            "connected.html",
            heading="Account connected",
            message=f"Your {outcome.session.provider} account is now connected.",
            return_to=None,
        )
    response.del_cookie(authorize.FLOW_COOKIE, path=f"/oauth/callback/{provider}")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _error_page(request: web.Request, exc: TokenBrokerError, heading: str) -> web.Response:
    status = exc.status if 400 <= exc.status < 600 else 400
    return request.app[PAGES].render(
        "error.html",
        status=status,
        heading=heading,
        message=exc.message,
        code=exc.code,
        return_to=None,
    )
