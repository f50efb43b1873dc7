"""``tokenbroker audit verify|export|prune|checkpoint`` and ``tokenbroker users erase``.

``verify`` exits 1 when any tenant's chain has a fault (naming the first bad seq and its kind),
2 on an error; ``export`` streams to standard output.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from tokenbroker.audit import checkpoints, export, retention, verify
from tokenbroker.audit.erasure import erase_user
from tokenbroker.audit.query import Filters, parse_time
from tokenbroker.audit.trail import trail_of
from tokenbroker.cli_services import run_with_services
from tokenbroker.db.schema import DEFAULT_TENANT
from tokenbroker.errors import TokenBrokerError
from tokenbroker.services import Services


@click.group()
def audit() -> None:
    """Verify, export and prune the audit trail."""


@audit.command("verify")
@click.option("--tenant", help="Only this tenant (default: every tenant).")
@click.pass_context
def verify_(ctx: click.Context, tenant: str | None) -> None:
    """Check every tenant's hash chain and signed heads; exit 1 on the first fault."""

    async def action(svc: Services) -> list[verify.TenantReport]:
        signer = trail_of(svc).signer
        names = [tenant] if tenant else await verify.tenants(svc.engine)
        return [await verify.verify_tenant(svc.engine, signer, t) for t in names]

    reports = run_with_services(ctx, action)
    for report in reports:
        span = f"seq {report.first_seq}..{report.last_seq}, signed through {report.signed_seq}"
        if report.fault is None:
            click.echo(f"{report.tenant_id}: ok ({report.records} records, {span})")
        else:
            fault = report.fault
            click.echo(
                f"{report.tenant_id}: FAILED at seq {fault.seq}: {fault.kind}: {fault.message}"
            )
        for warning in report.warnings:
            click.echo(f"{report.tenant_id}: warning: {warning}")
    if any(not r.ok for r in reports):
        sys.exit(1)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(export.FORMATS), default="jsonl")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.option("--since", help="ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
@click.option("--until", help="ISO 8601 time (exclusive)")
@click.option("--user", "user_id")
@click.option("--agent", "agent_id")
@click.option("--provider")
@click.pass_context
def export_(
    ctx: click.Context,
    fmt: str,
    tenant: str,
    since: str | None,
    until: str | None,
    user_id: str | None,
    agent_id: str | None,
    provider: str | None,
) -> None:
    """Stream the tenant's records (signs the chain head first)."""

    async def action(svc: Services) -> None:
        filters = Filters(
            user_id, agent_id, provider, parse_time(since, "since"), parse_time(until, "until")
        )
        async for line in export.export_lines(svc, tenant, fmt, filters):
            sys.stdout.write(line)
        sys.stdout.flush()

    run_with_services(ctx, action)


@audit.command("prune")
@click.option("--older-than", "days", type=int, help="Days (default: [audit] retention_days).")
@click.pass_context
def prune(ctx: click.Context, days: int | None) -> None:
    """Delete records older than DAYS from the start of each chain (a signed anchor stays)."""

    async def action(svc: Services) -> list[retention.Pruned]:
        keep = days if days is not None else svc.settings.audit.retention_days
        if keep is None or keep < 0:
            raise TokenBrokerError("give --older-than DAYS or set [audit] retention_days")
        return await retention.prune(svc, svc.clock.now() - timedelta(days=keep))

    for pruned in run_with_services(ctx, action):
        click.echo(
            f"{pruned.tenant_id}: {pruned.records} records pruned (anchor {pruned.through_seq})"
        )


@audit.command("checkpoint")
@click.pass_context
def checkpoint(ctx: click.Context) -> None:
    """Sign every tenant's chain head now."""
    run_with_services(ctx, lambda svc: checkpoints.sign_all(svc))
    click.echo("signed")


@click.group()
def users() -> None:
    """Erase a user."""


@users.command("erase")
@click.argument("user_id")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@click.pass_context
def erase(ctx: click.Context, user_id: str, tenant: str) -> None:
    """Revoke USER_ID's connections, delete their grants and sessions, destroy their pseudonym."""
    erased = run_with_services(ctx, lambda svc: erase_user(svc, tenant, user_id, actor="cli"))
    click.echo(
        f"erased: {len(erased.connections)} connection(s), {erased.grants} grant(s), "
        f"{erased.sessions} agent session(s), {erased.webhook_deliveries} webhook delivery(ies)"
    )
    for connection_id, outcome in sorted(erased.connections.items()):
        click.echo(f"connection {connection_id}: {outcome}")
