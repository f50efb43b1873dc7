"""Shared test support (``tests/support``) on the import path of every test folder, and the
``database_url`` fixture: a storage test runs on SQLite and on PostgreSQL (a fresh database per
test; skipped without a server, a failure in CI)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))

from harness import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tokenbroker.db'}"
        return
    async with postgres_database() as url:
        yield url
