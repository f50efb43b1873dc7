"""The management API: confirmation, tenants, errors, incremental consent and disconnect."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from harness import OTHER_ADMIN_KEY, Harness, running
from sqlalchemy import func, select

from tokenbroker.connect import revocation
from tokenbroker.db.schema import connections, events, revocations, sealed_secrets


async def _count(h: Harness, table, **where: str) -> int:  # type: ignore[no-untyped-def]
    assert h.svc is not None
    query = select(func.count()).select_from(table)
    for key, value in where.items():
        query = query.where(table.c[key] == value)
    async with h.svc.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _pending(h: Harness, user_id: str = "alice") -> tuple[str, str]:
    """Run the browser part; returns (connect_session_id, flow_id) from the verifier redirect."""
    session = await h.start_connect(user_id)
    resp = await h.callback(await h.authorize(session["authorization_url"]))
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith(h.verifier_url)
    query = parse_qs(urlsplit(location).query)
    return query["connect_session_id"][0], query["flow_id"][0]


async def test_nothing_is_stored_until_the_application_confirms_the_user(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session_id, _flow_id = await _pending(h)
        assert await _count(h, connections) == 0
        _status, doc = await h.admin("GET", f"/v1/connect-sessions/{session_id}")
        assert doc["status"] == "pending_confirmation"
        assert doc["account"]["id"] == "alice"


async def test_confirmation_for_another_user_stores_nothing_and_is_recorded(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session_id, flow_id = await _pending(h, "alice")
        status, doc = await h.admin(
            "POST",
            f"/v1/connect-sessions/{session_id}/confirm",
            {"flow_id": flow_id, "user_id": "mallory"},
        )
        assert status == 403
        assert doc["error"] == "user_mismatch"
        assert await _count(h, connections) == 0
        assert await _count(h, sealed_secrets) == 0
        assert await _count(h, events, type="connect.failed") == 1
        # The flow is spent: the right user cannot complete it afterwards either.
        status, doc = await h.admin(
            "POST",
            f"/v1/connect-sessions/{session_id}/confirm",
            {"flow_id": flow_id, "user_id": "alice"},
        )
        assert status == 409


async def test_wrong_flow_id_is_refused_and_the_right_one_still_works(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session_id, flow_id = await _pending(h)
        path = f"/v1/connect-sessions/{session_id}/confirm"
        status, doc = await h.admin("POST", path, {"flow_id": "guess", "user_id": "alice"})
        assert (status, doc["error"]) == (400, "invalid_flow")
        status, doc = await h.admin("POST", path, {"flow_id": flow_id, "user_id": "alice"})
        assert status == 200
        status, doc = await h.admin("POST", path, {"flow_id": flow_id, "user_id": "alice"})
        assert status == 409  # single use


async def test_tenants_are_isolated(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session_id, flow_id = await _pending(h)
        path = f"/v1/connect-sessions/{session_id}/confirm"
        body = {"flow_id": flow_id, "user_id": "alice"}
        status, doc = await h.admin("POST", path, body, key=OTHER_ADMIN_KEY)
        assert status == 404
        status, doc = await h.admin("POST", path, body)
        connection_id = doc["connection"]["id"]
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice", key=OTHER_ADMIN_KEY)
        assert doc["connections"] == []
        status, doc = await h.admin("GET", "/v1/connections", key=OTHER_ADMIN_KEY)
        assert doc["connections"] == []
        for method in ("GET", "DELETE"):
            status, doc = await h.admin(
                method, f"/v1/connections/{connection_id}", key=OTHER_ADMIN_KEY
            )
            assert status == 404
        status, doc = await h.admin(
            "GET", f"/v1/connect-sessions/{session_id}", key=OTHER_ADMIN_KEY
        )
        assert status == 404
        assert await _count(h, connections) == 1


@pytest.mark.parametrize("key", ["", "wrong-key-wrong-key-wrong"])
async def test_missing_or_wrong_admin_key_is_401(
    tmp_path: Path, database_url: str, key: str
) -> None:
    async with running(tmp_path, database_url) as h:
        for method, path in (
            ("GET", "/v1/connections"),
            ("POST", "/v1/connect-sessions"),
            ("GET", "/v1/providers"),
        ):
            status, doc = await h.admin(method, path, {}, key=key)
            assert status == 401
            assert doc["error"] == "unauthorized"


async def test_bad_input_gets_a_clear_json_error(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer admin-key-default-0123456789"}
        async with http.post(
            h.public_url + "/v1/connect-sessions",
            data=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_json"
            assert resp.headers["TokenBroker-Error"] == "invalid_json"
        cases = [
            ({"user_id": "alice", "provider": "nope"}, 404, "unknown_provider"),
            ({"provider": "acme"}, 400, "invalid_request"),
            ({"user_id": "alice", "provider": "acme", "scopes": "x"}, 400, "invalid_request"),
        ]
        for body, status_code, code in cases:
            status, doc = await h.admin("POST", "/v1/connect-sessions", body)
            assert (status, doc["error"]) == (status_code, code), body
            assert doc["message"]
        assert await _count(h, events, type="connect.session_created") == 0


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "/\\evil.example",
        "https:evil.example",
        "https://evil.example/x",
        "javascript:alert(1)",
        "/\t/evil.example",
        "https://app.example.com@evil.example/",
    ],
)
async def test_open_redirects_are_refused(
    tmp_path: Path, database_url: str, return_to: str
) -> None:
    async with running(tmp_path, database_url) as h:
        status, doc = await h.admin(
            "POST",
            "/v1/connect-sessions",
            {"user_id": "alice", "provider": "acme", "return_to": return_to},
        )
        assert (status, doc["error"]) == (400, "invalid_return_to")


async def test_allowed_return_to_is_accepted(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        for value in ("https://app.example.com/done", "/relative/path"):
            status, doc = await h.admin(
                "POST",
                "/v1/connect-sessions",
                {"user_id": "alice", "provider": "acme", "return_to": value},
            )
            assert status == 201, doc


async def test_incremental_consent_asks_for_the_union_and_updates_the_connection(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        first = await h.connect("alice", ["files:read"])
        session = await h.start_connect("alice", ["files:write"])
        resp = await h.get(session["authorization_url"])
        scope = parse_qs(urlsplit(resp.headers["Location"]).query)["scope"][0].split()
        assert {"files:read", "files:write", "openid", "offline_access"} <= set(scope)
        await h.http.get(resp.headers["Location"], allow_redirects=False)  # type: ignore[union-attr]
        second = await h.connect("alice", ["files:write"])
        assert second["id"] == first["id"]
        assert {"files:read", "files:write"} <= set(second["scopes"])
        assert await _count(h, connections) == 1


async def test_another_account_on_reconnect_fails_with_account_mismatch(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        first = await h.connect("alice")
        assert h.state is not None
        h.state.behaviour.different_sub = "mallory"
        session = await h.start_connect("alice", ["files:write"])
        resp = await h.callback(await h.authorize(session["authorization_url"]))
        assert resp.status == 409
        assert "account_mismatch" in await resp.text()
        _status, doc = await h.admin("GET", f"/v1/connections/{first['id']}")
        assert doc["account"]["id"] == "alice"
        assert doc["scopes"] == first["scopes"]


async def test_without_verification_the_callback_completes_at_once(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, connect={"require_verification": False}) as h:
        session = await h.start_connect()
        resp = await h.callback(await h.authorize(session["authorization_url"]))
        assert resp.status == 200
        assert "connected" in await resp.text()
        _status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        assert len(doc["connections"]) == 1


async def test_a_used_connect_link_cannot_be_opened_again(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session_id, _flow_id = await _pending(h)
        resp = await h.get(f"{h.public_url}/connect/{session_id}")
        assert resp.status == 400
        assert "already been used" in await resp.text()


async def test_delete_revokes_at_the_provider_and_erases_tokens(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await h.connect()
        assert h.state is not None
        status, doc = await h.admin("DELETE", f"/v1/connections/{connection['id']}")
        assert (status, doc["revocation"]) == (200, "revoked")
        assert h.state.counters["revocations"] >= 1
        assert await _count(h, connections) == 0
        assert await _count(h, sealed_secrets) == 0
        assert await _count(h, events, type="connection.revoked") == 1
        status, doc = await h.admin("GET", f"/v1/connections/{connection['id']}")
        assert status == 404


async def test_delete_while_the_provider_is_down_queues_the_revocation(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await h.connect()
        assert h.state is not None
        assert h.svc is not None
        h.state.behaviour.revoke_failures = [503]
        status, doc = await h.admin("DELETE", f"/v1/connections/{connection['id']}")
        assert (status, doc["revocation"]) == (200, "revocation_pending")
        assert await _count(h, connections) == 0  # disabled at once
        assert await _count(h, sealed_secrets, owner_kind="revocation") >= 1
        [job] = await revocation.due_jobs(h.svc, h.svc.clock.now().replace(year=2100))
        assert await revocation.attempt(h.svc, job) == "revoked"
        assert await _count(h, sealed_secrets) == 0
        assert await _count(h, revocations, status="done") == 1
