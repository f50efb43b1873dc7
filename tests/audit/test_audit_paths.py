"""What path a proxied request is recorded with: query values and, per provider, the path
segments that identify a person are recorded as "…"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agents import DEMO_OPERATIONS, proxy, ready
from harness import running
from sqlalchemy import select

from tokenbroker.db.schema import events
from tokenbroker.errors import ConfigError
from tokenbroker.gateway.app import GATEWAY
from tokenbroker.gateway.audit_path import AuditPaths
from tokenbroker.providers.parse import audit_redact_paths

PATTERNS = ["/gmail/v1/users/{user}/{rest*}", "/gmail/v1/users/{user}"]


@pytest.mark.parametrize(
    ("path", "query", "recorded"),
    [
        ("/gmail/v1/users/alice@example.com/messages/1", "", "/gmail/v1/users/…/messages/1"),
        ("/gmail/v1/users/alice%40example.com", "", "/gmail/v1/users/…"),
        ("/gmail/v1/users/alice@example.com/", "", "/gmail/v1/users/…/"),
        ("/gmail/v1/users/me", "q=from:bob&maxResults=5", "/gmail/v1/users/…?q=…&maxResults=…"),
        ("/drive/v3/files", "", "/drive/v3/files"),  # no pattern: as sent
        ("/drive/v3/files", "q=name", "/drive/v3/files?q=…"),
    ],
)  # fmt: skip
def test_recorded_paths(path: str, query: str, recorded: str) -> None:
    assert AuditPaths(PATTERNS).recorded(path, query) == recorded


def test_several_segments_of_one_pattern_are_redacted() -> None:
    paths = AuditPaths(["/orgs/{org}/members/{member}"])
    assert paths.recorded("/orgs/acme/members/bob", "") == "/orgs/…/members/…"


@pytest.mark.parametrize("pattern", ["gmail/{user}", "/users/me", "/a b/{x}", "/x\n/{y}"])
def test_a_pattern_must_be_a_path_with_a_variable(pattern: str) -> None:
    with pytest.raises(ConfigError, match="audit_redact_paths"):
        audit_redact_paths((pattern,), provider="acme")


async def test_a_person_in_the_path_never_reaches_the_trail(tmp_path: Path) -> None:
    provider = {"operations": DEMO_OPERATIONS, "audit_redact_paths": ["/echo/{who}/{rest*}"]}
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}", provider=provider) as h:
        token, _ = await ready(h)
        status, _, _ = await proxy(h, token, "GET", "/proxy/acme/echo/bob@example.com/inbox?s=x")
        assert status == 200
        assert h.broker_app is not None
        assert h.svc is not None
        await h.broker_app[GATEWAY].recorder.flush()  # type: ignore[attr-defined]
        async with h.svc.engine.connect() as conn:
            rows = (await conn.execute(select(events))).all()
        recorded = [dict(r._mapping) for r in rows if r.type.startswith("proxy.")]
        assert {r["detail"]["path"] for r in recorded} == {"/echo/…/inbox?s=…"}
        assert "bob@example.com" not in json.dumps([dict(r._mapping) for r in rows], default=str)
