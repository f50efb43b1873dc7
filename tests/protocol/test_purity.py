"""The protocol layer stays pure: no network, database or clock imports, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "src" / "tokenbroker" / "protocol"
FORBIDDEN = {
    "aiohttp",
    "httpx",
    "requests",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "time",
    "socket",
    "urllib.request",
    "http.client",
    "tokenbroker.clock",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic"}
MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_protocol_modules_exist() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = sorted(name for name in _imported(tree) if _forbidden(name))
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_reads(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CLOCK_CALLS
    ]
    assert calls == [], f"{path.name} reads the clock via {calls}"


def test_checker_catches_a_forbidden_import() -> None:
    tree = ast.parse("import aiohttp\nfrom urllib.request import urlopen\nfrom time import time\n")
    assert sorted(n for n in _imported(tree) if _forbidden(n)) == [
        "aiohttp",
        "time",
        "time.time",
        "urllib.request",
        "urllib.request.urlopen",
    ]


def test_checker_allows_urllib_parse() -> None:
    tree = ast.parse("from urllib.parse import urlsplit\nimport datetime\n")
    assert not [n for n in _imported(tree) if _forbidden(n)]
