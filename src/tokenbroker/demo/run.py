"""``tokenbroker demo``: the broker on SQLite with the DEMO provider, API and application.

Everything lives in ``.tokenbroker-demo/`` (config, key file, admin key, database); the command
prints one URL, the demo application's, where a person connects alice's demo account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

import click
from aiohttp import web

from tokenbroker.config import load_settings
from tokenbroker.db.migrate import upgrade
from tokenbroker.demo.api import create_api_app
from tokenbroker.demo.app import DemoAppSettings, create_demo_app
from tokenbroker.demo.provider import create_provider_app
from tokenbroker.demo.settings import DemoClient, DemoProviderSettings
from tokenbroker.demo.state import DemoState
from tokenbroker.gateway.front_site import start_site
from tokenbroker.vault.keyring import create_key_file

HOST = "127.0.0.1"
CLIENT_SECRET = "demo-client-secret"


def demo_config(broker_port: int, provider_port: int, api_port: int, app_port: int) -> str:
    return f"""\
# tokenbroker DEMO configuration (written by `tokenbroker demo`).
public_url = "http://{HOST}:{broker_port}"
database_url = "sqlite:///tokenbroker.db"
key_file = "tokenbroker.keys"

[admin]
key_file = "admin-key"

[connect]
user_verifier_url = "http://{HOST}:{app_port}/verify"
allowed_return_origins = ["http://{HOST}:{app_port}"]

# People sign in to the broker's own pages (connections, agent access, consent, activity)
# at the DEMO provider too; alice is an admin of this demo.
[login]
issuer = "http://{HOST}:{provider_port}"
client_id = "tokenbroker-demo-login"
client_secret_file = "demo-client-secret"
admins = ["alice"]
allow_insecure_loopback = true

[providers.demo]
issuer = "http://{HOST}:{provider_port}"
display_name = "Demo provider"
client_id = "tokenbroker-demo"
client_secret_file = "demo-client-secret"
scopes = ["openid", "email", "offline_access"]
api_base_url = "http://{HOST}:{api_port}"
allow_insecure_loopback = true
"""


def prepare(directory: Path, ports: tuple[int, int, int, int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "tokenbroker.keys").exists():
        create_key_file(directory / "tokenbroker.keys")
    for name, value in (
        ("admin-key", secrets.token_urlsafe(32)),
        ("demo-client-secret", CLIENT_SECRET),
    ):
        path = directory / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
    (directory / "tokenbroker.toml").write_text(demo_config(*ports), encoding="utf-8")


async def run_demo(directory: Path, ports: tuple[int, int, int, int], stop: asyncio.Event) -> None:
    from tokenbroker.runtime import make_app

    broker_port, provider_port, api_port, app_port = ports
    settings = load_settings(directory / "tokenbroker.toml")
    await asyncio.to_thread(upgrade, settings.database_url)
    provider_settings = DemoProviderSettings(
        issuer=f"http://{HOST}:{provider_port}",
        clients=(
            DemoClient(
                client_id="tokenbroker-demo",
                client_secret=CLIENT_SECRET,
                redirect_uris=(f"{settings.public_url}/oauth/callback/demo",),
            ),
            DemoClient(
                client_id="tokenbroker-demo-login",
                client_secret=CLIENT_SECRET,
                redirect_uris=(f"{settings.public_url}/login/callback",),
            ),
        ),
    )
    state = DemoState(provider_settings)
    admin_key = (directory / "admin-key").read_text(encoding="utf-8").strip()
    apps = [
        (create_provider_app(provider_settings, state), provider_port),
        (create_api_app(state), api_port),
        (
            create_demo_app(
                DemoAppSettings(
                    public_url=f"http://{HOST}:{app_port}",
                    broker_url=settings.public_url,
                    admin_key=admin_key,
                )
            ),
            app_port,
        ),
    ]
    runners: list[web.AppRunner] = []
    try:
        for app, port in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, HOST, port).start()
            runners.append(runner)
        broker = web.AppRunner(await make_app(settings), access_log=None)
        await broker.setup()
        await start_site(broker, HOST, broker_port)
        runners.append(broker)
        click.echo(
            "\ntokenbroker DEMO is running (broker on SQLite, DEMO provider, DEMO API).\n"
            f"Open: http://{HOST}:{app_port}/\n"
            "(log in at the demo provider as alice / demo; Ctrl-C stops)\n",
        )
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


@click.command()
@click.option("--dir", "directory", default=".tokenbroker-demo", show_default=True)
@click.option("--port", default=8000, show_default=True, help="Broker port.")
@click.option("--provider-port", default=9400, show_default=True)
@click.option("--api-port", default=9401, show_default=True)
@click.option("--app-port", default=9402, show_default=True)
def demo(directory: str, port: int, provider_port: int, api_port: int, app_port: int) -> None:
    """Run the broker with the bundled DEMO provider, API and application."""
    ports = (port, provider_port, api_port, app_port)
    prepare(Path(directory), ports)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_demo(Path(directory), ports, stop)

    asyncio.run(main())
