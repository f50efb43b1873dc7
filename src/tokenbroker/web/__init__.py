"""The broker's own web pages: sign-in, connections, agent access, consent, activity, admin.

:func:`mount_web` adds them to the application; each route wraps itself (:func:`base.page`),
so the gateway's path has no extra middleware.
"""

from __future__ import annotations

from aiohttp import web

from tokenbroker.services import Services
from tokenbroker.web import routes_account, routes_activity, routes_auth, routes_consent
from tokenbroker.web.base import PAGES, Pages, css

__all__ = ["mount_web"]


def mount_web(app: web.Application, services: Services) -> None:
    app[PAGES] = Pages(services)
    for module in (routes_auth, routes_account, routes_consent, routes_activity):
        app.add_routes(module.routes)
    app.router.add_get("/static/web.css", css)
