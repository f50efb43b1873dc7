"""Fixtures for the demo provider tests: a loopback provider + API sharing one DemoState."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from demo_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    AiohttpClient,
    Demo,
    FakeClock,
    free_port,
)
from joserfc.jwk import RSAKey

from tokenbroker.demo.api import create_api_app
from tokenbroker.demo.provider import create_provider_app
from tokenbroker.demo.settings import DemoClient, DemoProviderSettings
from tokenbroker.demo.state import DemoState, generate_signing_key


@pytest.fixture(scope="session")
def signing_key() -> RSAKey:
    return generate_signing_key("test-kid")


@pytest.fixture
async def demo(aiohttp_client: AiohttpClient, signing_key: RSAKey) -> Demo:
    port = free_port()
    clock = FakeClock()
    settings = DemoProviderSettings(
        issuer=f"http://127.0.0.1:{port}",
        clients=(
            DemoClient(CLIENT_ID, CLIENT_SECRET, (REDIRECT_URI,)),
            DemoClient("other", "other-secret", (REDIRECT_URI,)),
            DemoClient("pub:lic", None, (REDIRECT_URI,)),
        ),
        device_interval=1,
    )
    state = DemoState(settings, clock=clock, signing_key=signing_key)
    server = TestServer(create_provider_app(settings, state), host="127.0.0.1", port=port)
    provider = await aiohttp_client(server)
    api = await aiohttp_client(create_api_app(state))
    return Demo(state, settings, clock, provider, api)
