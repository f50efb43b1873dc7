"""The command line: ``tokenbroker serve|init|migrate|providers|keys|demo``."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path

import click

from tokenbroker.config import Settings, config_path, load_settings
from tokenbroker.errors import TokenBrokerError
from tokenbroker.observability.logging import configure_logging

STARTER_CONFIG = """\
# tokenbroker configuration. Reference: README.md, "Configuration".
# The redirect URI of provider P is {public_url}/oauth/callback/P
public_url = "http://127.0.0.1:8000"
# or postgresql://user@host/db; TOKENBROKER_DATABASE_URL overrides
database_url = "sqlite:///tokenbroker.db"
key_file = "tokenbroker.keys"               # key-encryption keys (or TOKENBROKER_KEYS)

[server]
host = "127.0.0.1"
port = 8000

[admin]
key_file = "tokenbroker.admin-key"          # or key_env = "TOKENBROKER_ADMIN_KEY"

[connect]
# The application page that proves which of its users completed a connect link:
# user_verifier_url = "https://app.example.com/tokenbroker/verify"
allowed_return_origins = []

# [providers.google]
# template = "google"
# client_id = "....apps.googleusercontent.com"
# client_secret_env = "GOOGLE_CLIENT_SECRET"
# scopes = ["openid", "email", "https://www.googleapis.com/auth/gmail.readonly"]
"""


def _settings(config: str | None) -> Settings:
    return load_settings(config_path(config, os.environ))


def _fail(exc: TokenBrokerError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", envvar="TOKENBROKER_CONFIG", help="Path of tokenbroker.toml.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    envvar="TOKENBROKER_LOG_FORMAT",
    help="Log lines: one JSON object a line, or plain text (serve: stdout, others: stderr).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_level: str, log_format: str) -> None:
    """tokenbroker: per-user OAuth credential broker and API gateway for AI agents."""
    # The server's log is its output (stdout); one-shot commands keep stdout for their result.
    configure_logging(
        log_level,
        "text" if log_format == "text" else "json",
        to="stdout" if ctx.invoked_subcommand in ("serve", "demo") else "stderr",
        force=False,
    )
    ctx.obj = config


@cli.command()
@click.option("--host", help="Listen address (default: [server] host).")
@click.option("--port", type=int, help="Listen port (default: [server] port).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.pass_obj
def serve(config: str | None, host: str | None, port: int | None, workers: int) -> None:
    """Run the broker (management API, OAuth callback and pages)."""
    from tokenbroker.runtime import serve as run

    try:
        settings = _settings(config)
        run(settings, host=host or settings.host, port=port or settings.port, workers=workers)
    except TokenBrokerError as exc:
        _fail(exc)


@cli.command()
@click.option(
    "--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False)
)
def init(directory: str) -> None:
    """Write a starter tokenbroker.toml, a key file and an admin key file (mode 0600).

    Refuses to overwrite any of them.
    """
    from tokenbroker.vault.keyring import create_key_file

    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    config, keys, admin = (
        base / "tokenbroker.toml",
        base / "tokenbroker.keys",
        base / "tokenbroker.admin-key",
    )
    existing = [str(p) for p in (config, keys, admin) if p.exists()]
    if existing:
        click.echo(f"error: refusing to overwrite {', '.join(existing)}", err=True)
        sys.exit(2)
    try:
        create_key_file(keys)
    except TokenBrokerError as exc:
        _fail(exc)
    fd = os.open(admin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(STARTER_CONFIG)
    click.echo(f"wrote {config}, {keys} (0600) and {admin} (0600)")
    click.echo(
        "next: add a provider to the config, then `tokenbroker migrate` and `tokenbroker serve`"
    )


@cli.command()
@click.pass_obj
def migrate(config: str | None) -> None:
    """Create or upgrade the database schema (Alembic)."""
    from tokenbroker.db.migrate import upgrade

    try:
        settings = _settings(config)
        upgrade(settings.database_url)
    except TokenBrokerError as exc:
        _fail(exc)
    click.echo("database schema is up to date")


@cli.command()
@click.option("--templates/--no-templates", default=True, help="List the shipped templates too.")
@click.pass_obj
def providers(config: str | None, templates: bool) -> None:
    """List the shipped provider templates and the configured providers."""
    from tokenbroker.providers.catalog import provider_summaries

    if templates:
        click.echo("templates:")
        for summary in provider_summaries():
            click.echo(f"  {summary}")
    path = config_path(config, os.environ)
    if not path.exists():
        click.echo(f"(no config at {path}: no configured providers)")
        return
    try:
        settings = _settings(config)
    except TokenBrokerError as exc:
        _fail(exc)
        return
    results = asyncio.run(_resolve_providers(settings))
    click.echo("configured:")
    for name, outcome in results.items():
        click.echo(f"  {name}: {outcome}")


async def _resolve_providers(settings: Settings) -> dict[str, str]:
    from tokenbroker.providers.registry import ProviderRegistry
    from tokenbroker.transport import Transport

    transport = Transport()
    try:
        registry = ProviderRegistry(settings.providers, transport)
        out: dict[str, str] = {}
        for name, result in (await registry.resolve_all()).items():
            if isinstance(result, TokenBrokerError):
                out[name] = f"ERROR {result.code}: {result.message}"
            else:
                redirect = result.redirect_uri(settings.public_url)
                out[name] = f"ok ({result.display_name}; redirect URI {redirect})"
        return out
    finally:
        await transport.close()


from tokenbroker.cli_agents import agents  # noqa: E402
from tokenbroker.cli_audit import audit, users  # noqa: E402
from tokenbroker.cli_keys import keys  # noqa: E402
from tokenbroker.demo.run import demo  # noqa: E402

cli.add_command(agents)
cli.add_command(audit)
cli.add_command(users)
cli.add_command(keys)
cli.add_command(demo)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
