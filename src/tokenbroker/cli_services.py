"""Running one command against the broker's services (config from ``--config``)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from tokenbroker.config import config_path, load_settings
from tokenbroker.errors import TokenBrokerError
from tokenbroker.services import Services

T = TypeVar("T")


def run_with_services(ctx: click.Context, action: Callable[[Services], Awaitable[T]]) -> T:
    """Build the services, run ``action``, close them; a TokenBrokerError exits 2 with its
    message (never a traceback)."""
    from tokenbroker.runtime import build_services, close_services

    async def main() -> T:
        svc = await build_services(load_settings(config_path(ctx.find_root().obj, os.environ)))
        try:
            return await action(svc)
        finally:
            await close_services(svc)

    try:
        return asyncio.run(main())
    except TokenBrokerError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
