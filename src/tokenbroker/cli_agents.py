"""``tokenbroker agents add|list|remove|rotate``: register agents from the command line."""

from __future__ import annotations

import click

from tokenbroker.cli_services import run_with_services
from tokenbroker.db.schema import DEFAULT_TENANT
from tokenbroker.policy import agents as agent_store


@click.group()
def agents() -> None:
    """Register, list, rotate and remove agents."""


@agents.command("add")
@click.argument("name")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def add(ctx: click.Context, name: str, tenant: str) -> None:
    """Register agent NAME; prints its id and secret (shown once, stored only as a hash)."""
    agent, secret = run_with_services(
        ctx,
        lambda svc: agent_store.register(svc, tenant, agent_store.check_name(name), actor="cli"),
    )
    click.echo(f"id:     {agent.id}\nsecret: {secret.reveal()}\n(the secret is not shown again)")


@agents.command("list")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def list_(ctx: click.Context, tenant: str) -> None:
    """List the tenant's agents."""
    for agent in run_with_services(ctx, lambda svc: agent_store.list_agents(svc, tenant)):
        click.echo(f"{agent.id}  {agent.name}  created {agent.created_at:%Y-%m-%d %H:%M}")


@agents.command()
@click.argument("agent_id")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def remove(ctx: click.Context, agent_id: str, tenant: str) -> None:
    """Remove an agent; its grants and sessions end with it."""
    run_with_services(ctx, lambda svc: agent_store.remove(svc, tenant, agent_id, actor="cli"))
    click.echo(f"removed {agent_id}")


@agents.command()
@click.argument("agent_id")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def rotate(ctx: click.Context, agent_id: str, tenant: str) -> None:
    """Give an agent a new secret; the old one stops working at once."""
    secret = run_with_services(
        ctx, lambda svc: agent_store.rotate_secret(svc, tenant, agent_id, actor="cli")
    )
    click.echo(f"secret: {secret.reveal()}\n(the secret is not shown again)")
