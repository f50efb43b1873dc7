"""What every web page shares: the signed-in session, CSRF, security headers and rendering.

Each route is wrapped by :func:`page` rather than an application middleware, so the gateway
path pays nothing for the pages. A page answers with a strict Content-Security-Policy (no
script at all, styles only from this origin), ``nosniff``, ``X-Frame-Options: DENY``,
``no-referrer`` and ``no-store``. Every POST carries the session's synchronizer token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from tokenbroker.errors import TokenBrokerError
from tokenbroker.records import Event
from tokenbroker.services import Services
from tokenbroker.web import store
from tokenbroker.web.login import LoginProviders

log = logging.getLogger("tokenbroker.web")


class Pages:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.logins = LoginProviders(svc)
        self.secure = svc.settings.public_url.startswith("https://")
        self.session_cookie = "__Host-tb_session" if self.secure else "tb_session"
        self.login_cookie = "__Secure-tb_login" if self.secure else "tb_login"
        self.css = (files("tokenbroker.web") / "static" / "web.css").read_bytes()
        self._env = Environment(
            loader=PackageLoader("tokenbroker.web", "templates"),
            autoescape=select_autoescape(["html"]),
        )

    def render(
        self,
        request: web.Request,
        template: str,
        *,
        status: int = 200,
        form_targets: Iterable[str] = (),
        **context: Any,
    ) -> web.Response:
        state: PageState | None = request.get(STATE)
        session = state.session if state is not None else None
        body = self._env.get_template(template).render(
            session=session, path=request.path, **context
        )
        response = web.Response(text=body, status=status, content_type="text/html")
        response.headers["Content-Security-Policy"] = csp(form_targets)
        return response

    def message(
        self, request: web.Request, heading: str, message: str, *, status: int
    ) -> web.Response:
        return self.render(request, "message.html", status=status, heading=heading, message=message)

    def idle_seconds(self, tenant_id: str) -> int:
        """How long a web session of ``tenant_id`` may go unused (0: no idle timeout)."""
        login = self.logins.settings(tenant_id)
        return login.session_idle_seconds if login is not None else 0


PAGES = web.AppKey("web_pages", Pages)


@dataclass
class PageState:
    """What :func:`page` found for this request: the signed-in session and the POSTed form."""

    session: store.WebSession | None = None
    form: Form | None = None


STATE = web.RequestKey("web_page_state", PageState)
Handler = Callable[[web.Request, Pages], Awaitable[web.StreamResponse]]
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csp(form_targets: Iterable[str] = ()) -> str:
    """``form-action`` also lists provider origins a connect form's redirects lead to."""
    extra = "".join(f" {origin}" for origin in sorted(set(form_targets)))
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action 'self'{extra}; frame-ancestors 'none'; base-uri 'none'"
    )


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Form:
    fields: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


def page(*, signed_in: bool = True, admin: bool = False) -> Callable[[Handler], RouteHandler]:
    """Wrap a page: session, CSRF on POST, error pages and the security headers."""

    def decorate(handler: Handler) -> RouteHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            pages = request.app[PAGES]
            try:
                response = await _guarded(request, pages, handler, signed_in, admin)
            except TokenBrokerError as exc:
                status = exc.status if 400 <= exc.status < 600 else 400
                if status >= 500:
                    log.warning("%s %s failed: %s", request.method, request.path, exc.code)
                response = pages.render(
                    request,
                    "message.html",
                    status=status,
                    heading="Something went wrong",
                    message=exc.message,
                    code=exc.code,
                )
            headers = response.headers
            headers.setdefault("Content-Security-Policy", csp())
            headers.setdefault("X-Content-Type-Options", "nosniff")
            headers.setdefault("X-Frame-Options", "DENY")
            headers.setdefault("Referrer-Policy", "no-referrer")
            headers.setdefault("Cache-Control", "no-store")
            return response

        return wrapped

    return decorate


async def _guarded(
    request: web.Request, pages: Pages, handler: Handler, signed_in: bool, admin: bool
) -> web.StreamResponse:
    cookie = request.cookies.get(pages.session_cookie)
    session = await store.load(pages.svc, cookie, idle_seconds=pages.idle_seconds)
    request[STATE] = state = PageState(session)
    if request.method == "POST":
        form = Form({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        state.form = form
        if session is None:
            return pages.message(
                request,
                "Your session has ended",
                "You are not signed in (or your session expired). Nothing was changed: "
                "sign in and try again.",
                status=401,
            )
        if not hmac.compare_digest(form.get("csrf").encode(), session.csrf.encode()):
            await pages.svc.recorder.record(
                Event(
                    type="web.csrf_refused",
                    tenant_id=session.tenant_id,
                    actor="browser",
                    user_id=session.user_id,
                    outcome="denied",
                    detail={"path": request.path},
                )
            )
            return pages.message(
                request,
                "This form cannot be used",
                "The form was stale or did not come from this site, so nothing was changed. "
                "Go back, reload the page and try again.",
                status=403,
            )
    elif signed_in and session is None:
        return see_other(login_url(request))
    if admin and (session is None or not session.is_admin):
        return pages.message(
            request, "Administrators only", "This page is for administrators.", status=403
        )
    return await handler(request, pages)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def form(request: web.Request) -> Form:
    found: Form | None = request[STATE].form
    return found if found is not None else Form({})


def session_of(request: web.Request) -> store.WebSession:
    session: store.WebSession | None = request[STATE].session
    assert session is not None
    return session


def login_url(request: web.Request) -> str:
    tenant = request.query.get("tenant")
    target = f"/login?next={quote(request.path_qs, safe='')}"
    return target + (f"&tenant={quote(tenant, safe='')}" if tenant else "")


def safe_next(value: str | None) -> str | None:
    """Only a same-origin path (no scheme, no host, no backslash) may be returned to."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) < 33 or ord(c) > 126 for c in value) or len(value) > 2000:
        return None
    return value


async def css(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[PAGES].css,
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
