"""Device sessions in the management API: user proof, tenants, bad input, replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from device_support import (
    confirm,
    count,
    get_session,
    make_due,
    pending_confirmation,
    poll_until,
    start,
)
from harness import OTHER_ADMIN_KEY, Harness, running

from tokenbroker.db.schema import connections, device_sessions, events, sealed_secrets
from tokenbroker.lifecycle import device
from tokenbroker.runtime import build_services, close_services


async def test_confirmation_by_another_user_is_403_and_stores_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        doc = await pending_confirmation(h, "alice")
        status, body = await confirm(h, doc["id"], "mallory")
        assert (status, body["error"]) == (403, "user_mismatch")
        assert await count(h, connections) == 0
        assert await count(h, sealed_secrets) == 0
        assert await count(h, events, type="device.failed") == 1
        found = await get_session(h, doc["id"])
        assert (found["status"], found["error"]) == ("failed", "user_mismatch")
        status, body = await confirm(h, doc["id"], "alice")
        assert status == 409  # spent: the right user cannot complete it afterwards either
        assert await count(h, connections) == 0


async def test_another_tenant_gets_404(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        doc = await pending_confirmation(h)
        status, body = await h.admin("GET", f"/v1/device-sessions/{doc['id']}", key=OTHER_ADMIN_KEY)
        assert (status, body["error"]) == (404, "not_found")
        status, body = await confirm(h, doc["id"], "alice", key=OTHER_ADMIN_KEY)
        assert (status, body["error"]) == (404, "not_found")
        assert await count(h, connections) == 0
        status, body = await confirm(h, doc["id"], "alice")
        assert status == 200, body
        _status, listed = await h.admin("GET", "/v1/connections", key=OTHER_ADMIN_KEY)
        assert listed["connections"] == []


async def test_bad_requests_and_a_provider_without_a_device_endpoint(
    tmp_path: Path, database_url: str
) -> None:
    plain = {
        "authorization_endpoint": "http://127.0.0.1:1/authorize",
        "token_endpoint": "http://127.0.0.1:1/token",
        "client_id": "plain",
        "scopes": ["files:read"],
        "allow_insecure_loopback": True,
    }
    async with running(tmp_path, database_url, providers={"plain": plain}) as h:
        cases = [
            ({"user_id": "alice", "provider": "plain"}, 400, "device_flow_unsupported"),
            ({"user_id": "alice", "provider": "nope"}, 404, "unknown_provider"),
            ({"provider": "acme"}, 400, "invalid_request"),
            ({"user_id": "alice", "provider": "acme", "scopes": "x"}, 400, "invalid_request"),
        ]
        for body, status_code, code in cases:
            status, doc = await h.admin("POST", "/v1/device-sessions", body)
            assert (status, doc["error"]) == (status_code, code), body
            assert doc["message"]
        status, doc = await h.admin("GET", "/v1/device-sessions/ds_nope")
        assert status == 404
        status, doc = await h.admin("POST", "/v1/device-sessions", {}, key="")
        assert (status, doc["error"]) == (401, "unauthorized")
        assert await count(h, device_sessions) == 0
        assert h.counter("device_authorizations") == 0


async def test_two_replicas_poll_a_session_once(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        other = await build_services(h.svc.settings)
        try:
            doc = await start(h)
            for round_ in range(1, 4):
                await make_due(h, doc["id"])
                handled = await asyncio.gather(
                    device.poll_due(h.svc, owner="replica-a"),
                    device.poll_due(other, owner="replica-b"),
                )
                assert sorted(handled) == [0, 1]
                assert h.counter("device_polls") == round_
            assert (await get_session(h, doc["id"]))["status"] == "pending"
        finally:
            await close_services(other)


async def test_without_required_verification_it_connects_at_once(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, connect={"require_verification": False}) as h:
        doc = await _pending_confirmation_or_connected(h)
        assert doc["status"] == "connected"
        assert doc["connection_id"]
        assert await count(h, connections) == 1
        assert await count(h, sealed_secrets, owner_kind="device_session") == 0


async def _pending_confirmation_or_connected(h: Harness) -> dict[str, Any]:
    assert h.state is not None
    doc = await start(h)
    assert h.state.decide_device(doc["user_code"], "alice", approve=True)
    return await poll_until(h, doc["id"], "pending_confirmation", "connected")
