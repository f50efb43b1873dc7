"""Mounting the gateway on the broker's application (one process, one event loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from tokenbroker.api.http import guarded, json_response
from tokenbroker.api.keys import ADMIN_KEYS
from tokenbroker.audit.trail import close_gateway_recorder, open_gateway_recorder
from tokenbroker.config import Settings
from tokenbroker.gateway.destination import GuardedResolver, policy
from tokenbroker.gateway.exchange import AiohttpExchange
from tokenbroker.gateway.lookups import Lookups
from tokenbroker.gateway.proxy import Gateway
from tokenbroker.gateway.ratelimit import limiter_from_url
from tokenbroker.gateway.upstream import UpstreamPool
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.records import NullRecorder
from tokenbroker.services import Services

GATEWAY = web.AppKey("gateway", Gateway)


def loopback_hosts(settings: Settings) -> frozenset[str]:
    """API hosts of providers marked ``allow_insecure_loopback`` (tests and the demo only)."""
    hosts: set[str] = set()
    for provider in settings.providers.values():
        section = provider.section
        if not section.get("allow_insecure_loopback"):
            continue
        urls = [section.get("api_base_url"), *dict(section.get("api_bases") or {}).values()]
        hosts.update(h for u in urls if isinstance(u, str) and (h := urlsplit(u).hostname))
    return frozenset(hosts)


def mount_gateway(app: web.Application, svc: Services, refresher: Refresher) -> None:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        cfg = svc.settings.gateway
        loopback = loopback_hosts(svc.settings)
        allow = policy(loopback)
        upstream = UpstreamPool(
            GuardedResolver(allow),
            connect_timeout=cfg.connect_timeout_seconds,
            read_timeout=cfg.read_timeout_seconds,
        )
        audit = svc.settings.audit
        recorder = await open_gateway_recorder(svc)
        limiter = limiter_from_url(svc.settings.redis_url)
        app[GATEWAY] = Gateway(
            svc,
            Lookups(svc, refresher),
            limiter,
            upstream,
            recorder if audit.enabled else NullRecorder(),
            audit_healthy=recorder if audit.on_failure == "deny" else None,
            loopback_names=loopback,
        )
        yield
        await upstream.close()
        await close_gateway_recorder(svc, recorder)
        await limiter.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        exchange = AiohttpExchange(request)
        await request.app[GATEWAY].handle(exchange)
        assert exchange.response is not None
        return exchange.response

    async def stages(request: web.Request) -> web.Response:
        """Microseconds per request in each gateway stage (admin key; DELETE resets)."""
        request.app[ADMIN_KEYS].tenant_for(request)
        timing = request.app[GATEWAY].stages
        if request.method == "DELETE":
            timing.reset()
        return json_response({"requests": timing.requests, "us": timing.microseconds_per_request()})

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/proxy/{tail:.*}", handle)
    app.router.add_get("/_gateway/stages", guarded(stages))
    app.router.add_delete("/_gateway/stages", guarded(stages))
