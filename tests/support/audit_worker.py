"""A broker process serving the gateway, for crash tests: `python audit_worker.py CONFIG PORT`.

It builds the real services and application from the config file, serves on PORT and prints
READY; the test then kills it with SIGKILL mid-load.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from tokenbroker.api.app import create_app
from tokenbroker.config import load_settings
from tokenbroker.lifecycle.health import ProviderHealth
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.runtime import build_services


async def main(config: str, port: int) -> None:
    svc = await build_services(load_settings(Path(config)))
    app = create_app(svc, Refresher(svc, ProviderHealth(svc.engine, svc.clock)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
