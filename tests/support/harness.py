"""A real broker on loopback, next to the DEMO provider playing a strict or hostile server."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from tokenbroker.api.app import create_app
from tokenbroker.config import Settings, parse_settings
from tokenbroker.db.migrate import upgrade
from tokenbroker.db.schema import connections
from tokenbroker.demo.api import create_api_app
from tokenbroker.demo.provider import create_provider_app
from tokenbroker.demo.settings import DemoClient, DemoProviderSettings
from tokenbroker.demo.state import DemoState
from tokenbroker.gateway.front_site import start_site
from tokenbroker.lifecycle.health import ProviderHealth
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.runtime import build_services, close_services
from tokenbroker.services import Services
from tokenbroker.vault.keyring import create_key_file

ADMIN_KEY = "admin-key-default-0123456789"
OTHER_ADMIN_KEY = "admin-key-tenant-b-0123456789"
CLIENT_SECRET = "client-secret-for-tests"
WEBHOOK_SECRET = "webhook-signing-secret-for-tests"
LOGIN_SECRET = "login-client-secret-for-tests"
ENV = {
    "TB_LOGIN_SECRET": LOGIN_SECRET,
    "TB_ADMIN": ADMIN_KEY,
    "TB_ADMIN_B": OTHER_ADMIN_KEY,
    "ACME_CLIENT_SECRET": CLIENT_SECRET,
    "TB_WEBHOOK": WEBHOOK_SECRET,
}
PG_URLS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")


def free_port() -> int:
    """A loopback port free now, for a server started later (its URL goes into settings
    first). Chosen below the kernel's ephemeral range: a port from that range can be taken by
    any outgoing connection before the server binds it (seen in CI as EADDRINUSE). Handed out
    in sequence from a random start, so that one test process never gives the same port to
    two servers it has not started yet (a harness picks three before binding any: independent
    random picks collided about once a CI run)."""
    global _next_port
    low = _ephemeral_low()
    span = max(1, low - PORTS_FROM)
    if _next_port is None:
        _next_port = secrets.randbelow(span)
    for _ in range(200):
        port = PORTS_FROM + _next_port % span
        _next_port += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # everything below the range taken: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORTS_FROM = 20_000
_next_port: int | None = None


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the local server for one test, or a skip (a failure in CI)."""
    name = f"tb_test_{uuid.uuid4().hex[:12]}"
    for url in PG_URLS:
        admin = create_async_engine(
            url.replace("postgresql://", "postgresql+asyncpg://"), isolation_level="AUTOCOMMIT"
        )
        try:
            async with admin.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        except (OSError, SQLAlchemyError):
            await admin.dispose()
            continue
        try:
            yield url.rsplit("/", 1)[0] + "/" + name
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()
        return
    if os.environ.get("TOKENBROKER_REQUIRE_SERVICES") == "1":
        pytest.fail("PostgreSQL on 127.0.0.1:5432 is required (TOKENBROKER_REQUIRE_SERVICES=1)")
    pytest.skip("no PostgreSQL server on 127.0.0.1:5432")


@dataclass
class Harness:
    tmp: Path
    database_url: str
    provider_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    broker_port: int = field(default_factory=free_port)
    verifier_port: int = field(default_factory=free_port)
    state: DemoState | None = None
    svc: Services | None = None
    refresher: Refresher | None = None
    broker_app: web.Application | None = None
    raw_config: dict[str, Any] = field(default_factory=dict)
    _replicas: list[Services] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_port}"

    def login_config(self, **extra: Any) -> dict[str, Any]:
        """A ``[login]`` table signing in to the broker's pages at the demo provider."""
        return {
            "issuer": self.issuer,
            "client_id": "broker-login",
            "client_secret_env": "TB_LOGIN_SECRET",
            "allow_insecure_loopback": True,
            **extra,
        }

    @property
    def verifier_url(self) -> str:
        return f"http://127.0.0.1:{self.verifier_port}/verify"

    def config(self, **overrides: Any) -> dict[str, Any]:
        connect = {
            "user_verifier_url": self.verifier_url,
            "allowed_return_origins": ["https://app.example.com"],
        }
        connect.update(overrides.pop("connect", {}))
        provider = {
            "issuer": self.issuer,
            "client_id": "broker",
            "client_secret_env": "ACME_CLIENT_SECRET",
            "scopes": ["openid", "email", "offline_access"],
            "api_base_url": f"http://127.0.0.1:{self.api_port}",
            "allow_insecure_loopback": True,
        }
        provider.update(overrides.pop("provider", {}))
        raw: dict[str, Any] = {
            "public_url": self.public_url,
            "database_url": self.database_url,
            "key_file": "tokenbroker.keys",
            "admin": {"key_env": "TB_ADMIN"},
            "tenants": {"b": {"admin_key_env": "TB_ADMIN_B"}},
            "connect": connect,
            "providers": {"acme": provider, **overrides.pop("providers", {})},
        }
        raw.update(overrides)
        # In-process brokers have no configuration file for a writer process to read; the
        # tests that run one start a broker process (tests/support/audit_worker.py).
        raw["audit"] = {"writer": "inline", **raw.get("audit", {})}
        return raw

    def settings(self, raw: Mapping[str, Any]) -> Settings:
        self.raw_config = dict(raw)
        return parse_settings(raw, ENV, base_dir=self.tmp)

    def write_config(self) -> Path:
        """The running configuration as a TOML file, for broker processes of a test."""
        path = self.tmp / "tokenbroker.toml"
        path.write_text(to_toml(self.raw_config), encoding="utf-8")
        return path

    async def start(self, **overrides: Any) -> Services:
        provider_settings = DemoProviderSettings(
            issuer=self.issuer,
            clients=(
                DemoClient("broker", CLIENT_SECRET, (f"{self.public_url}/oauth/callback/acme",)),
                # The broker's own sign-in (``[login]``, the web pages).
                DemoClient("broker-login", LOGIN_SECRET, (f"{self.public_url}/login/callback",)),
            ),
            device_interval=1,
        )
        self.state = DemoState(provider_settings)
        self.state.behaviour.auto_approve_user = "alice"
        await self._run(create_provider_app(provider_settings, self.state), self.provider_port)
        await self._run(create_api_app(self.state), self.api_port)
        settings = self.settings(self.config(**overrides))
        if not (self.tmp / "tokenbroker.keys").exists():
            create_key_file(self.tmp / "tokenbroker.keys")
        await asyncio.to_thread(upgrade, settings.database_url)
        self.svc = await build_services(settings)
        self.refresher = Refresher(self.svc, ProviderHealth(self.svc.engine, self.svc.clock))
        self.broker_app = create_app(self.svc, self.refresher)
        await self._run(self.broker_app, self.broker_port)
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self.svc

    async def start_replica(self) -> int:
        """A second broker on the same database (its own caches and invalidation poller)."""
        assert self.svc is not None
        svc = await build_services(self.svc.settings)
        refresher = Refresher(svc, ProviderHealth(svc.engine, svc.clock))
        port = free_port()
        await self._run(create_app(svc, refresher), port)
        self._replicas.append(svc)
        self._tasks.append(asyncio.create_task(svc.bus.run(interval=0.1)))
        return port

    async def _run(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await start_site(runner, "127.0.0.1", port)  # the lean front, as `serve` runs it
        self.runners.append(runner)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.http is not None:
            await self.http.close()
        for runner in reversed(self.runners):
            await runner.cleanup()
        for svc in [self.svc, *self._replicas]:
            if svc is not None:
                await close_services(svc)

    # --- calls -----------------------------------------------------------------------------
    async def admin(
        self, method: str, path: str, body: Any = None, *, key: str = ADMIN_KEY
    ) -> tuple[int, Any]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with (
            aiohttp.ClientSession() as plain,
            plain.request(method, self.public_url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    async def get(self, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        assert self.http is not None
        resp = await self.http.get(url, allow_redirects=False, **kwargs)
        await resp.read()
        return resp

    async def start_connect(
        self, user_id: str = "alice", scopes: list[str] | None = None
    ) -> dict[str, Any]:
        status, doc = await self.admin(
            "POST",
            "/v1/connect-sessions",
            {"user_id": user_id, "provider": "acme", "scopes": scopes or ["files:read"]},
        )
        assert status == 201, doc
        return dict(doc)

    async def authorize(self, link: str) -> str:
        """Open the connect link and let the provider approve; returns the callback URL."""
        to_provider = await self.get(link)
        assert to_provider.status == 302, await to_provider.text()
        to_callback = await self.get(to_provider.headers["Location"])
        assert to_callback.status == 302, await to_callback.text()
        return to_callback.headers["Location"]

    async def callback(self, url: str) -> aiohttp.ClientResponse:
        return await self.get(url)

    async def connect(self, user_id: str = "alice", scopes: list[str] | None = None) -> Any:
        """The whole happy path, confirmation included; returns the connection JSON."""
        session = await self.start_connect(user_id, scopes)
        return await self.complete(session["authorization_url"], user_id)

    async def complete(self, link: str, user_id: str = "alice") -> Any:
        """Follow a connect link as ``user_id``: approve at the provider, confirm the account;
        returns the connection JSON."""
        done = await self.callback(await self.authorize(link))
        assert done.status == 302, await done.text()
        query = parse_qs(urlsplit(done.headers["Location"]).query)
        status, doc = await self.admin(
            "POST",
            f"/v1/connect-sessions/{query['connect_session_id'][0]}/confirm",
            {"flow_id": query["flow_id"][0], "user_id": user_id},
        )
        assert status == 200, doc
        return doc["connection"]

    async def expire_access_token(self, connection_id: str) -> None:
        """Make the stored access token due for refresh (the provider's copy stays valid)."""
        assert self.svc is not None
        past = datetime.now(UTC) - timedelta(seconds=5)
        async with self.svc.engine.begin() as conn:
            await conn.execute(
                update(connections)
                .where(connections.c.id == connection_id)
                .values(access_token_expires_at=past)
            )

    async def connection_row(self, connection_id: str) -> dict[str, Any]:
        assert self.svc is not None
        async with self.svc.engine.connect() as conn:
            row = (
                await conn.execute(select(connections).where(connections.c.id == connection_id))
            ).one()
        return dict(row._mapping)

    def counter(self, name: str) -> int:
        assert self.state is not None
        return int(self.state.counters.get(name, 0))

    @property
    def token_calls(self) -> int:
        assert self.state is not None
        return int(self.state.counters.get("token_calls", 0))


@asynccontextmanager
async def running(tmp: Path, database_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    harness = Harness(tmp=tmp, database_url=database_url)
    try:
        await harness.start(**overrides)
        yield harness
    finally:
        await harness.stop()


def to_toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for test configs: scalars, lists of scalars and nested tables."""
    lines: list[str] = []
    nested: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            nested.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(lines) + "\n"
    for name, sub_table in nested:
        out += f"\n[{name}]\n" + to_toml(sub_table, prefix=f"{name}.")
    return out


def cli_config(h: Harness, **tables: Mapping[str, Any]) -> Path:
    """The harness's configuration as a file (declared operations left out), with the keys
    of ``tables`` (e.g. ``audit={"writer": "process"}``) set in their tables."""
    raw = dict(h.raw_config)
    for name, values in tables.items():
        raw[name] = {**raw.get(name, {}), **values}
    raw["providers"] = {
        name: {k: v for k, v in section.items() if k != "operations"}
        for name, section in raw["providers"].items()
    }
    config = h.tmp / "cli.toml"
    config.write_text(to_toml(raw), encoding="utf-8")
    return config
