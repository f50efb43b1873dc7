"""The application factory."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api import (
    routes_admin,
    routes_audit,
    routes_browser,
    routes_device,
    routes_policy,
)
from tokenbroker.api.admin_auth import AdminKeys
from tokenbroker.api.http import guard_routes, guarded, unknown_endpoint
from tokenbroker.api.keys import ADMIN_KEYS, PAGES, REFRESHER, SERVICES
from tokenbroker.api.pages import Pages
from tokenbroker.gateway.app import mount_gateway
from tokenbroker.lifecycle.health import ProviderHealth
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.observability.routes import mount_observability
from tokenbroker.services import Services
from tokenbroker.web import mount_web


def create_app(services: Services, refresher: Refresher | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICES] = services
    app[ADMIN_KEYS] = AdminKeys(services.settings.tenants)
    app[PAGES] = Pages()
    refresher = refresher or Refresher(services, ProviderHealth(services.engine, services.clock))
    app[REFRESHER] = refresher
    mount_gateway(app, services, refresher)
    for routes in (routes_admin, routes_browser, routes_device, routes_policy, routes_audit):
        app.add_routes(guard_routes(routes.routes))
    mount_observability(app, services)
    mount_web(app, services)
    app.router.add_route("*", "/v1/{tail:.*}", guarded(unknown_endpoint))
    return app
