"""``tokenbroker agents add|list|remove|rotate``: register agents from the command line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from tokenbroker.config import config_path, load_settings
from tokenbroker.db.schema import DEFAULT_TENANT
from tokenbroker.errors import TokenBrokerError
from tokenbroker.policy import agents as agent_store
from tokenbroker.services import Services

T = TypeVar("T")


def _run(ctx: click.Context, action: Callable[[Services], Awaitable[T]]) -> T:
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


@click.group()
def agents() -> None:
    """Register, list, rotate and remove agents."""


@agents.command("add")
@click.argument("name")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def add(ctx: click.Context, name: str, tenant: str) -> None:
    """Register agent NAME; prints its id and secret (shown once, stored only as a hash)."""
    agent, secret = _run(
        ctx,
        lambda svc: agent_store.register(svc, tenant, agent_store.check_name(name), actor="cli"),
    )
    click.echo(f"id:     {agent.id}\nsecret: {secret.reveal()}\n(the secret is not shown again)")


@agents.command("list")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def list_(ctx: click.Context, tenant: str) -> None:
    """List the tenant's agents."""
    for agent in _run(ctx, lambda svc: agent_store.list_agents(svc, tenant)):
        click.echo(f"{agent.id}  {agent.name}  created {agent.created_at:%Y-%m-%d %H:%M}")


@agents.command()
@click.argument("agent_id")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def remove(ctx: click.Context, agent_id: str, tenant: str) -> None:
    """Remove an agent; its grants and sessions end with it."""
    _run(ctx, lambda svc: agent_store.remove(svc, tenant, agent_id, actor="cli"))
    click.echo(f"removed {agent_id}")


@agents.command()
@click.argument("agent_id")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def rotate(ctx: click.Context, agent_id: str, tenant: str) -> None:
    """Give an agent a new secret; the old one stops working at once."""
    secret = _run(ctx, lambda svc: agent_store.rotate_secret(svc, tenant, agent_id, actor="cli"))
    click.echo(f"secret: {secret.reveal()}\n(the secret is not shown again)")
