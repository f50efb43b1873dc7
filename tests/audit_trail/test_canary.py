"""Canary: no token the provider issued, no secret of the broker's own (agent secret, agent
session token, admin key), nor any 8 characters of one, reaches the database in the clear, the
logs or the exported audit trail."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from agents import GATEWAY_CONFIG, proxy, ready
from harness import ADMIN_KEY, running
from sqlalchemy import select
from trail_support import flush

from tokenbroker.audit.export import export_lines
from tokenbroker.audit.query import Filters
from tokenbroker.db.schema import metadata


def _pieces(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


async def test_no_token_reaches_the_database_logs_or_export(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="tokenbroker")
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        assert h.svc is not None
        assert h.state is not None
        token, made = await ready(h)
        for _ in range(3):
            assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        connection_id = doc["connections"][0]["id"]
        assert h.refresher is not None
        await h.refresher.refresh_now("default", connection_id)
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        assert h.counter("refresh_calls") >= 1
        status, doc = await h.admin("DELETE", f"/v1/connections/{connection_id}")
        assert status == 200, doc
        await flush(h)

        issued = [*h.state.access_tokens, *h.state.refresh_tokens, *h.state.codes]
        assert len(issued) >= 3
        # The broker's own secrets too: the agent's secret (its random part: the rest is the
        # agent's public id, ``tba.<id>.<random>``), its session token, the admin key.
        issued += [made["secret"].rsplit(".", 1)[1], token, ADMIN_KEY]
        pieces = set().union(*(_pieces(t) for t in issued))

        dump: list[str] = []
        async with h.svc.engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in (await conn.execute(select(table))).all():
                    for value in row:
                        dump.append(value.hex() if isinstance(value, bytes) else str(value))
        exported = [line async for line in export_lines(h.svc, "default", "jsonl", Filters())]
        places = {
            "database": "\n".join(dump),
            "logs": caplog.text,
            "export": "".join(exported),
        }
        assert "proxy.finished" in places["export"]
        for where, haystack in places.items():
            hits = sorted(p for p in pieces if p in haystack)
            assert hits == [], f"{where}: {hits[:3]}"
