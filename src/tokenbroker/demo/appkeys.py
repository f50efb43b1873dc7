"""Typed application keys shared by the demo provider's and demo API's handlers."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tokenbroker.demo.settings import DemoProviderSettings
from tokenbroker.demo.state import DemoState

STATE_KEY: web.AppKey[DemoState] = web.AppKey("tokenbroker_demo_state", DemoState)
SETTINGS_KEY: web.AppKey[DemoProviderSettings] = web.AppKey(
    "tokenbroker_demo_settings", DemoProviderSettings
)

SHUTDOWN_KEY: web.AppKey[asyncio.Event] = web.AppKey("tokenbroker_demo_shutdown", asyncio.Event)


def provider_state(app: web.Application) -> DemoState:
    """The :class:`DemoState` of a demo provider or demo API application."""
    return app[STATE_KEY]
