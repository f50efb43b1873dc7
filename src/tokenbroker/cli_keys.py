"""``tokenbroker keys add|promote|rewrap|retire|check``: key-encryption key rotation.

Works with several replicas: ``add`` puts a key every replica can decrypt with (replicas re-read
the key file when it changes), ``promote`` makes new records use it, ``rewrap`` moves existing
data keys to it online in batches, and ``retire`` is refused while any record still needs it.
"""

from __future__ import annotations

import asyncio
import os
import sys

import click

from tokenbroker.config import Settings, config_path, load_settings
from tokenbroker.errors import ConfigError, TokenBrokerError


def _settings(ctx: click.Context) -> Settings:
    config = ctx.find_root().obj
    return load_settings(config_path(config, os.environ))


def _key_file(settings: Settings) -> os.PathLike[str]:
    if settings.key_file is None:
        raise ConfigError("keys come from the environment (TOKENBROKER_KEYS); rotate them there")
    return settings.key_file


def _run(action: str, ctx: click.Context, key_id: str | None = None) -> None:
    from pathlib import Path

    from tokenbroker.vault import keyring

    try:
        settings = _settings(ctx)
        if action == "add":
            new_id = keyring.add_key(Path(_key_file(settings)))
            click.echo(
                f"added {new_id} (decrypt-only): deploy the key file to every replica, then "
                f"`tokenbroker keys promote {new_id}`"
            )
        elif action == "promote":
            assert key_id is not None
            keyring.promote_key(Path(_key_file(settings)), key_id)
            click.echo(f"{key_id} is now active; run `tokenbroker keys rewrap` to move old records")
        elif action == "retire":
            assert key_id is not None
            counts = asyncio.run(_counts(settings))
            keyring.retire_key(Path(_key_file(settings)), key_id, in_use=counts.get(key_id, 0))
            click.echo(f"{key_id} retired")
        elif action == "rewrap":
            moved = asyncio.run(_rewrap(settings))
            click.echo(f"re-wrapped {moved} record(s) onto the active key")
        elif action == "check":
            ok = asyncio.run(_check(settings))
            if not ok:
                sys.exit(1)
    except TokenBrokerError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


async def _counts(settings: Settings) -> dict[str, int]:
    from tokenbroker.audit.checkpoints import count_checkpoints_by_key
    from tokenbroker.audit.pseudonyms import count_keys_by_kek
    from tokenbroker.db.engine import create_engine
    from tokenbroker.vault.rotation import count_by_key

    engine = create_engine(settings.database_url)
    try:
        counts = await count_by_key(engine)
        for extra in (await count_keys_by_kek(engine), await count_checkpoints_by_key(engine)):
            for key_id, count in extra.items():  # audit pseudonym keys and signed checkpoints
                counts[key_id] = counts.get(key_id, 0) + count
        return counts
    finally:
        await engine.dispose()


async def _rewrap(settings: Settings) -> int:
    from tokenbroker.audit.checkpoints import resign_checkpoints
    from tokenbroker.audit.pseudonyms import rewrap_keys
    from tokenbroker.audit.signing import Signer
    from tokenbroker.db.engine import create_engine
    from tokenbroker.vault.envelope import Envelope
    from tokenbroker.vault.rotation import rewrap_all
    from tokenbroker.vault.settings_keys import keyring_provider

    keys = keyring_provider(settings)
    envelope = Envelope(keys)
    engine = create_engine(settings.database_url)
    try:
        moved = await rewrap_all(engine, envelope) + await rewrap_keys(engine, envelope)
        return moved + await resign_checkpoints(engine, Signer(keys))
    finally:
        await engine.dispose()


async def _check(settings: Settings) -> bool:
    from tokenbroker.db.engine import create_engine
    from tokenbroker.vault.envelope import Envelope
    from tokenbroker.vault.rotation import check_all
    from tokenbroker.vault.settings_keys import keyring_provider

    envelope = Envelope(keyring_provider(settings))
    engine = create_engine(settings.database_url)
    try:
        report = await check_all(engine, envelope)
    finally:
        await engine.dispose()
    click.echo(f"{report.total} sealed record(s); by key: {dict(sorted(report.by_key.items()))}")
    for failure in report.failures:
        click.echo(f"  FAILED {failure}")
    click.echo("ok" if report.ok else f"{len(report.failures)} record(s) failed to open")
    return report.ok


@click.group()
def keys() -> None:
    """Rotate key-encryption keys: add, promote, rewrap, retire, check."""


@keys.command()
@click.pass_context
def add(ctx: click.Context) -> None:
    """Add a new key that every replica can decrypt with, but none encrypts with yet."""
    _run("add", ctx)


@keys.command()
@click.argument("key_id")
@click.pass_context
def promote(ctx: click.Context, key_id: str) -> None:
    """Make KEY_ID the key new records are sealed with."""
    _run("promote", ctx, key_id)


@keys.command()
@click.pass_context
def rewrap(ctx: click.Context) -> None:
    """Re-wrap every record's data key under the active key (online, in batches)."""
    _run("rewrap", ctx)


@keys.command()
@click.argument("key_id")
@click.pass_context
def retire(ctx: click.Context, key_id: str) -> None:
    """Remove KEY_ID's material; refused while any record still needs it."""
    _run("retire", ctx, key_id)


@keys.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Open every sealed record and report failures (never any secret)."""
    _run("check", ctx)
