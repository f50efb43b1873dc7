"""Every change of a grant is on the trail, under the agent it concerns: created, revoked by
the user or application, and ended because its connection was deleted."""

from __future__ import annotations

from pathlib import Path

from agents import GATEWAY_CONFIG, agent, grant
from harness import running
from trail_support import flush


async def test_grant_changes_are_recorded_under_their_agent(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        connection = await h.connect("alice", ["files:read"])
        made = await agent(h)
        first = await grant(h, made["id"], ["files:read"])
        status, _ = await h.admin("DELETE", f"/v1/grants/{first['id']}")
        assert status == 200
        second = await grant(h, made["id"], ["files:read"])
        status, _ = await h.admin("DELETE", f"/v1/connections/{connection['id']}")
        assert status == 200
        await flush(h)
        status, doc = await h.admin("GET", f"/v1/audit?agent_id={made['id']}&limit=100")
        assert status == 200, doc
        changes = [
            (r["type"], r["detail"]["grant_id"], r["detail"].get("reason"))
            for r in doc["records"]
            if r["type"].startswith("grant.")
        ]
        assert changes == [
            ("grant.created", first["id"], None),
            ("grant.revoked", first["id"], None),
            ("grant.created", second["id"], None),
            ("grant.revoked", second["id"], "connection_deleted"),
        ]
