"""``/metrics`` (Prometheus text format) and ``/readyz`` (database reachable, keys loaded).

``/healthz`` stays in :mod:`tokenbroker.api.routes_browser`: a liveness check that touches
nothing. ``/readyz`` answers 200 ``{"status": "ready"}`` only when the database answers
``SELECT 1`` within a second and the key ring has usable active key material, else 503
``{"error": "not_ready", "message": ...}``, so a load balancer stops sending traffic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import web
from sqlalchemy import text

from tokenbroker.api.http import error_response, guarded, json_response
from tokenbroker.api.keys import SERVICES
from tokenbroker.gateway.app import GATEWAY
from tokenbroker.observability.metrics import CONTENT_TYPE, METRICS, AuditGauges
from tokenbroker.records import Recorder
from tokenbroker.services import Services

log = logging.getLogger("tokenbroker.observability")
READY_TIMEOUT_SECONDS: Final = 1.0


def mount_observability(app: web.Application, svc: Services) -> None:
    """Register the routes; ``/metrics`` is mounted bare (no per-route wrapper)."""
    METRICS.known_providers(svc.providers.names())
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", guarded(readyz))


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app.get(GATEWAY)
    audit = audit_gauges(gateway.recorder) if gateway is not None else None
    return web.Response(
        body=METRICS.render(audit).encode(),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


async def readyz(request: web.Request) -> web.Response:
    problem = await not_ready(request.app[SERVICES])
    if problem is not None:
        return error_response(503, "not_ready", problem)
    return json_response({"status": "ready"})


async def not_ready(svc: Services) -> str | None:
    """Why the broker cannot serve, or ``None``."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with svc.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return "the database did not answer within 1 s"
    except Exception as exc:  # any driver or pool error means "not ready"
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return "the database is unreachable"
    try:
        ring = svc.sealed._envelope.keyring()
        usable = ring.can_open(ring.active_id)
    except Exception:
        usable = False
    if not usable:
        return "no active encryption key is loaded"
    return None


def audit_gauges(recorder: Recorder) -> AuditGauges:
    """Queue depth and losses of the gateway's recorder; zeros for one that does not queue.

    Duck-typed, so the audit writer can change without this module: every writer has a
    public ``queue_depth`` and ``lost``.
    """
    depth = getattr(recorder, "queue_depth", 0)
    if not isinstance(depth, int):
        depth = 0
    lost = getattr(recorder, "lost", 0)
    return AuditGauges(queue_depth=depth, lost=lost if isinstance(lost, int) else 0)
