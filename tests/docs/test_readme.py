"""The README's configuration example is a configuration the broker accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tokenbroker.config import parse_settings

README = Path(__file__).parents[2] / "README.md"


def test_the_configuration_reference_parses(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    raw = tomllib.loads(block.group(1))
    env = {
        "TOKENBROKER_ADMIN_KEY": "x" * 32,
        "ACME_ADMIN_KEY": "y" * 32,
        "ACME_CLIENT_SECRET": "s",
        "TOKENBROKER_WEBHOOK_SECRET": "w",
        "LOGIN_CLIENT_SECRET": "l",
    }
    settings = parse_settings(raw, env, base_dir=tmp_path)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert "acme" in settings.tenants
    assert settings.refresh.lease_seconds == 30
    assert settings.tenants["default"].webhook is not None
