"""Mounting the gateway on the broker's application (one process, one event loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tokenbroker.audit.writer import BatchingRecorder
from tokenbroker.gateway.forward import upstream_session
from tokenbroker.gateway.lookups import Lookups
from tokenbroker.gateway.proxy import Gateway
from tokenbroker.gateway.ratelimit import limiter_from_url
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.services import Services

GATEWAY = web.AppKey("gateway", Gateway)


def mount_gateway(app: web.Application, svc: Services, refresher: Refresher) -> None:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        cfg = svc.settings.gateway
        connector = aiohttp.TCPConnector(limit=1000, limit_per_host=256, ttl_dns_cache=60)
        upstream = upstream_session(
            connector, connect=cfg.connect_timeout_seconds, read=cfg.read_timeout_seconds
        )
        recorder = BatchingRecorder(svc.engine)
        limiter = limiter_from_url(svc.settings.redis_url)
        app[GATEWAY] = Gateway(
            svc,
            Lookups(svc, refresher),
            limiter,
            upstream,
            recorder,
            audit_healthy=recorder,
        )
        yield
        await upstream.close()
        await recorder.close()
        await limiter.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].handle(request)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/proxy/{tail:.*}", handle)
