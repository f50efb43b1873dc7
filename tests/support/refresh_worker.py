"""A broker process for multi-process refresh tests: `python refresh_worker.py MODE CONFIG ID N GO`.

It builds the real services from the config file, prints READY, waits for the GO file, then:
- ``use``: N concurrent uses of the connection's access token; prints the distinct tokens;
- ``loop``: forces refreshes back to back until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tokenbroker.config import load_settings
from tokenbroker.errors import TokenBrokerError
from tokenbroker.lifecycle.health import ProviderHealth
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.runtime import build_services, close_services


async def main(mode: str, config: str, connection_id: str, count: int, go: str) -> None:
    svc = await build_services(load_settings(Path(config)))
    refresher = Refresher(svc, ProviderHealth(svc.engine, svc.clock))
    print("READY", flush=True)
    while not Path(go).exists():
        await asyncio.sleep(0.005)
    try:
        if mode == "use":
            results = await asyncio.gather(
                *(refresher.access_token("default", connection_id) for _ in range(count)),
                return_exceptions=True,
            )
            tokens = sorted({r.value.reveal() for r in results if not isinstance(r, Exception)})
            errors = [type(r).__name__ for r in results if isinstance(r, Exception)]
            print(json.dumps({"tokens": tokens, "errors": errors}), flush=True)
        else:
            while True:
                try:
                    await refresher.refresh_now("default", connection_id)
                except TokenBrokerError as exc:
                    print(f"ERROR {exc.code}", flush=True)
                    await asyncio.sleep(0.05)
    finally:
        await close_services(svc)


if __name__ == "__main__":
    mode, config, connection_id, count, go = sys.argv[1:6]
    asyncio.run(main(mode, config, connection_id, int(count), go))
