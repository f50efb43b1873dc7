"""Serving an aiohttp application behind the lean front (:mod:`tokenbroker.gateway.front`).

:class:`FrontSite` replaces aiohttp's ``TCPSite``: connections start on the front, which serves
``/proxy/`` itself and hands every other request's connection to the runner's aiohttp server.
:func:`run_app` replaces ``aiohttp.web.run_app`` for ``tokenbroker serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from aiohttp import web

from tokenbroker.gateway.app import GATEWAY
from tokenbroker.gateway.front import KEEPALIVE_SECONDS, Front, Handler

SHUTDOWN_SECONDS = 10.0  # for answers under way when the server stops


class FrontSite(web.TCPSite):
    """A TCP site whose connections start on the lean front (``/proxy/``) and are handed to
    the runner's aiohttp server for everything else."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        handler: Handler | None,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port)
        self._handler = handler
        self._front: Front | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        front = self._front = Front(self._handler, server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            front,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.create_task(self._sweep(front))

    @staticmethod
    async def _sweep(front: Front) -> None:
        """Close keep-alive connections idle for longer than :data:`KEEPALIVE_SECONDS`."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS / 5)
            cutoff = loop.time() - KEEPALIVE_SECONDS
            for connection in list(front.connections):
                if not connection.busy and connection.last_active < cutoff:
                    connection.close()

    async def stop(self) -> None:
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        front = self._front
        if front is None:
            return
        for connection in list(front.connections):
            connection.close_when_idle()
        if front.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(front.all_closed.wait(), SHUTDOWN_SECONDS)
        for connection in list(front.connections):
            connection.close()


def gateway_handler(app: web.Application) -> Handler | None:
    """The gateway mounted on ``app`` (after its start-up), or None."""
    gateway = app.get(GATEWAY)
    return None if gateway is None else gateway.handle


async def start_site(
    runner: web.AppRunner, host: str, port: int, *, reuse_port: bool | None = None
) -> FrontSite:
    """Listen on ``host``:``port`` for ``runner``'s (set-up) application, behind the front."""
    site = FrontSite(runner, host, port, handler=gateway_handler(runner.app), reuse_port=reuse_port)
    await site.start()
    return site


def run_app(
    app: Awaitable[web.Application], *, host: str, port: int, reuse_port: bool | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (as ``web.run_app``)."""

    async def serve() -> None:
        runner = web.AppRunner(await app, access_log=None, handle_signals=True)
        await runner.setup()
        try:
            await start_site(runner, host, port, reuse_port=reuse_port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
