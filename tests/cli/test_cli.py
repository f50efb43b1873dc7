"""The command line: init, migrate, keys rotation and start-up refusals."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenbroker.cli import cli
from tokenbroker.config import load_settings
from tokenbroker.errors import KeyError_
from tokenbroker.records import Event
from tokenbroker.runtime import build_services, close_services

ENV = {"TOKENBROKER_ADMIN_KEY": "an-admin-key-of-enough-length"}


def _init(tmp_path: Path) -> Path:
    result = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path / "tokenbroker.toml"


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_init_writes_config_and_private_key_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    _init(tmp_path)
    for name in ("tokenbroker.keys", "tokenbroker.admin-key"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600, name
    before = (tmp_path / "tokenbroker.keys").read_bytes()
    again = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path)])
    assert again.exit_code != 0
    assert "refusing to overwrite" in again.output
    assert (tmp_path / "tokenbroker.keys").read_bytes() == before


def test_help_of_every_command_is_useful() -> None:
    for args in (
        [],
        ["serve"],
        ["init"],
        ["migrate"],
        ["providers"],
        ["keys"],
        ["keys", "rewrap"],
        ["demo"],
    ):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0
        assert "Usage" in result.output


def test_migrate_then_start_then_key_rotation_end_to_end(tmp_path: Path) -> None:
    config = _init(tmp_path)
    assert _run(config, "migrate") == (0, "database schema is up to date\n")
    settings = load_settings(config, ENV)

    async def start_and_seal() -> None:
        from tokenbroker.secret import Secret
        from tokenbroker.vault.envelope import SealContext

        svc = await build_services(settings)
        try:
            async with svc.engine.begin() as conn:
                ctx = SealContext("default", "alice", "connection", "conn_1", "access_token")
                await svc.sealed.put(conn, ctx, Secret("canary-access-token"))
            # An audit record naming alice: her pseudonym key is sealed under the same KEK.
            await svc.recorder.record(Event(type="test.user", tenant_id="default", user_id="alice"))
            # A signed checkpoint of the chain head: signed with a key derived from the KEK.
            from tokenbroker.audit.checkpoints import sign_head

            await sign_head(svc, "default", "periodic")
        finally:
            await close_services(svc)

    async def alice_ref_still_matches() -> bool:
        from sqlalchemy import select

        from tokenbroker.audit.trail import trail_of
        from tokenbroker.db.schema import events

        svc = await build_services(settings)
        try:
            async with svc.engine.connect() as conn:
                ref = await trail_of(svc).pseudonyms.ref(conn, "default", "alice")
                stored = (
                    await conn.execute(
                        select(events.c.user_ref).where(events.c.type == "test.user")
                    )
                ).scalar_one()
            return ref is not None and ref == stored
        finally:
            await close_services(svc)

    asyncio.run(start_and_seal())
    old_id = json.loads((tmp_path / "tokenbroker.keys").read_text())["active"]
    code, out = _run(config, "keys", "add")
    assert code == 0, out
    new_id = out.split()[1]
    code, out = _run(config, "keys", "promote", new_id)
    assert code == 0, out
    code, out = _run(config, "keys", "retire", old_id)
    assert code != 0
    assert "rewrap" in out
    code, out = _run(config, "keys", "rewrap")
    assert code == 0, out
    assert "re-wrapped 3" in out  # the token, alice's pseudonym key and the checkpoint
    code, out = _run(config, "keys", "retire", old_id)
    assert code == 0, out
    assert asyncio.run(alice_ref_still_matches())  # pseudonyms survive the rotation
    code, out = _run(config, "audit", "verify")
    assert code == 0, out
    assert "warning" not in out  # the checkpoint still vouches for the chain, re-signed
    code, out = _run(config, "keys", "check")
    assert code == 0, out
    assert "ok" in out


def test_broker_refuses_to_start_with_a_different_key_file(tmp_path: Path) -> None:
    config = _init(tmp_path)
    assert _run(config, "migrate")[0] == 0
    settings = load_settings(config, ENV)

    async def start() -> None:
        svc = await build_services(settings)
        await close_services(svc)

    asyncio.run(start())
    keys = tmp_path / "tokenbroker.keys"
    keys.unlink()
    from tokenbroker.vault.keyring import create_key_file

    create_key_file(keys)
    with pytest.raises(KeyError_, match="does not match"):
        asyncio.run(start())


def test_broker_refuses_to_start_without_a_key_file(tmp_path: Path) -> None:
    config = _init(tmp_path)
    (tmp_path / "tokenbroker.keys").unlink()
    settings = load_settings(config, ENV)
    with pytest.raises(KeyError_, match="not found"):
        asyncio.run(build_services(settings))


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    config = _init(tmp_path)
    settings = load_settings(config, ENV)
    from tokenbroker.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenbroker migrate"):
        asyncio.run(build_services(settings))


def test_providers_lists_templates(tmp_path: Path) -> None:
    config = _init(tmp_path)
    code, out = _run(config, "providers")
    assert code == 0, out
    for name in ("google", "microsoft", "github", "salesforce", "okta"):
        assert name in out


def test_agents_add_list_rotate_remove(tmp_path: Path) -> None:
    config = _init(tmp_path)
    assert _run(config, "migrate")[0] == 0
    code, out = _run(config, "agents", "add", "mail-agent")
    assert code == 0, out
    agent_id = out.split()[1]
    secret = out.split()[3]
    assert secret.startswith(f"tba.{agent_id}.")
    code, out = _run(config, "agents", "list")
    assert agent_id in out
    assert secret not in out
    code, out = _run(config, "agents", "rotate", agent_id)
    assert code == 0
    assert secret not in out
    code, out = _run(config, "agents", "remove", agent_id)
    assert code == 0
    assert agent_id not in _run(config, "agents", "list")[1]
    code, out = _run(config, "agents", "remove", agent_id)
    assert code == 2


def test_serve_with_two_workers_shares_one_port(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    config = _init(tmp_path)
    assert _run(config, "migrate")[0] == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenbroker.cli",
            "--config",
            str(config),
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answered = 0
        deadline = time.monotonic() + 30
        while answered < 20 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    answered += r.status == 200
            except OSError:
                time.sleep(0.1)
        assert answered == 20
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(children) >= 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
