"""Connections, agent access, consent and confirmation pages over plain HTTP (no browser)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from agents import agent, grant
from harness import Harness
from sqlalchemy import select, update
from webpages import browser, follow, get, post, sign_in, web_broker

from tokenbroker.db.schema import device_sessions, events
from tokenbroker.lifecycle import device


async def _event_types(h: Harness) -> list[str]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        return [r.type for r in await conn.execute(select(events.c.type).order_by(events.c.id))]


async def _grants(h: Harness) -> list[dict[str, object]]:
    status, doc = await h.admin("GET", "/v1/grants?user_id=alice")
    assert status == 200
    return list(doc["grants"])


async def test_pages_carry_a_strict_csp_and_security_headers(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        await sign_in(h, http)
        async with http.get(f"{h.public_url}/connections") as resp:
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src" not in csp  # nothing may run: default-src 'none' covers scripts
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Cache-Control"] == "no-store"
            assert "<script" not in await resp.text()


async def test_forged_stale_or_missing_csrf_token_is_refused_and_changes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        stale = await sign_in(h, http)
        token = await sign_in(h, http)  # a new session: the old token is stale
        assert token != stale
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        granted = await grant(h, made["id"], ["files:read"])
        url = f"{h.public_url}/access/{granted['id']}/revoke"
        for data in ({"csrf": stale}, {"csrf": "forged" + token[6:]}, {}):
            status, body, _ = await post(http, url, data)
            assert status == 403, body
            assert "nothing was changed" in body
        assert [g["revoked_at"] for g in await _grants(h)] == [None]
        assert (await _event_types(h)).count("web.csrf_refused") == 3
        status, _, location = await post(http, url, {"csrf": token})
        assert status == 303
        assert location == f"/access/{granted['id']}"
        assert (await _grants(h)) == []


async def test_a_revoked_grants_page_says_so_and_offers_no_revoke(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http)
        await h.connect("alice", ["files:read"])
        made = await agent(h, "calendar-bot")
        granted = await grant(h, made["id"], ["files:read"], operations=["files.list"])
        status, body, _ = await get(http, f"{h.public_url}/access")
        assert "calendar-bot" in body
        assert "Read your files" in body
        assert "GET /files" in body
        await post(http, f"{h.public_url}/access/{granted['id']}/revoke", {"csrf": token})
        status, body, _ = await get(http, f"{h.public_url}/access/{granted['id']}")
        assert status == 200
        assert "Revoked" in body
        assert "/revoke" not in body
        status, body, _ = await get(http, f"{h.public_url}/access")
        assert "calendar-bot" not in body
        async with browser(h) as bob:  # another user cannot see alice's grant
            await sign_in(h, bob, "bob")
            status, _, _ = await get(bob, f"{h.public_url}/access/{granted['id']}")
            assert status == 404


async def test_consent_request_for_another_user_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http, "bob")
        await h.connect("bob", ["files:read"])
        made = await agent(h)
        query = f"agent_id={made['id']}&provider=acme&scopes=files:read&user_id=alice"
        status, body, _ = await get(http, f"{h.public_url}/consent?{query}")
        assert status == 403
        assert "another user" in body
        fields = {"csrf": token, "decision": "approve", "agent_id": made["id"]}
        fields.update(provider="acme", scopes="files:read", user_id="alice")
        status, _, _ = await post(http, f"{h.public_url}/consent", fields)
        assert status == 403
        _, doc = await h.admin("GET", "/v1/grants")
        assert doc["grants"] == []
        assert "consent.refused" in await _event_types(h)


async def test_consent_connects_first_then_creates_the_grant(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http)
        made = await agent(h)
        query = f"agent_id={made['id']}&provider=acme&scopes=files:read&expires_in=3600"
        status, body, _ = await get(http, f"{h.public_url}/consent?{query}")
        assert status == 200
        assert "Read your files" in body
        assert "for 1 hour" in body
        fields = {"csrf": token, "decision": "approve", "agent_id": made["id"]}
        fields.update(provider="acme", scopes="files:read", expires_in="3600")
        status, _, location = await post(http, f"{h.public_url}/consent", fields)
        assert status == 303
        assert location is not None
        assert location.startswith("/connect/")
        status, body, url = await follow(h, http, location)
        assert status == 200, body
        assert urlsplit(url).path == "/confirm"
        assert "alice@demo.example" in body  # the provider account being attached
        query_in = parse_qs(urlsplit(url).query)
        confirm = {"csrf": token, "connect_session_id": query_in["connect_session_id"][0]}
        confirm["flow_id"] = query_in["flow_id"][0]
        status, _, location = await post(http, f"{h.public_url}/confirm", confirm)
        assert status == 303
        assert location is not None
        assert "/consent?" in location
        status, body, _ = await get(http, location)
        assert "Approve" in body
        status, _, location = await post(http, f"{h.public_url}/consent", fields)
        assert status == 303
        assert location is not None
        assert location.startswith("/access/")
        [made_grant] = await _grants(h)
        assert made_grant["scopes"] == ["files:read"]
        assert made_grant["expires_at"] is not None


async def test_a_connect_link_completed_by_someone_else_stores_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http, "bob")
        link = await h.start_connect("alice")  # minted for alice, opened by bob
        status, body, url = await follow(h, http, link["authorization_url"])
        assert status == 200, body
        assert urlsplit(url).path == "/confirm"
        assert "another user" in body
        query = parse_qs(urlsplit(url).query)
        fields = {"csrf": token, "connect_session_id": query["connect_session_id"][0]}
        fields["flow_id"] = query["flow_id"][0]
        status, body, _ = await post(http, f"{h.public_url}/confirm", fields)
        assert status == 403
        assert "nothing was stored" in body
        for user in ("alice", "bob"):
            _, doc = await h.admin("GET", f"/v1/connections?user_id={user}")
            assert doc["connections"] == []
        _, doc = await h.admin("GET", f"/v1/connect-sessions/{link['id']}")
        assert doc["error"] == "user_mismatch"


async def test_connections_page_connects_and_disconnects(tmp_path: Path, database_url: str) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http)
        status, _, location = await post(
            http, f"{h.public_url}/connections/connect", {"csrf": token, "provider": "acme"}
        )
        assert status == 303
        assert location is not None
        status, body, url = await follow(h, http, location)
        query = parse_qs(urlsplit(url).query)
        fields = {"csrf": token, "connect_session_id": query["connect_session_id"][0]}
        fields["flow_id"] = query["flow_id"][0]
        status, _, location = await post(http, f"{h.public_url}/confirm", fields)
        assert status == 303
        assert location is not None
        assert location.endswith("/connections")
        status, body, _ = await get(http, f"{h.public_url}/connections")
        assert "alice@demo.example" in body
        assert "Active" in body
        assert "Keep access while you are away" in body
        _, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        conn_id = doc["connections"][0]["id"]
        status, _, _ = await post(
            http, f"{h.public_url}/connections/{conn_id}/disconnect", {"csrf": token}
        )
        assert status == 303
        _, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        assert doc["connections"] == []


async def test_activity_lists_the_users_own_events_filtered_and_paginated(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        await sign_in(h, http)
        await h.connect("alice", ["files:read"])
        await h.connect("bob", ["files:read"])
        made = await agent(h, "calendar-bot")
        other = await agent(h, "mail-bot")
        await grant(h, made["id"], ["files:read"])
        await grant(h, other["id"], ["files:read"])
        status, body, _ = await get(http, f"{h.public_url}/activity")
        assert status == 200
        assert "grant.created" in body
        assert "connect.completed" in body
        status, body, _ = await get(http, f"{h.public_url}/activity?agent={made['id']}")
        assert body.count("grant.created") == 1
        status, body, _ = await get(http, f"{h.public_url}/activity?provider=nope")
        assert "Nothing recorded yet" in body
        for _ in range(30):
            await grant(h, made["id"], ["files:read"])
        status, body, _ = await get(http, f"{h.public_url}/activity")
        assert "Older</a>" in body
        older = body.split('href="', body.count('href="'))[-1].split('"')[0]
        status, page2, _ = await get(http, h.public_url + older.replace("&amp;", "&"))
        assert status == 200
        assert "grant.created" in page2


async def _device_waiting_for(h: Harness, user_id: str) -> str:
    """A device sign-in for ``user_id`` the provider approved: it waits for its user."""
    assert h.state is not None
    assert h.svc is not None
    status, doc = await h.admin(
        "POST", "/v1/device-sessions", {"user_id": user_id, "provider": "acme"}
    )
    assert status == 201, doc
    assert h.state.decide_device(doc["user_code"], user_id, approve=True)
    for _ in range(100):
        await device.poll_due(h.svc, owner="web-test")
        _, now = await h.admin("GET", f"/v1/device-sessions/{doc['id']}")
        if now["status"] == "pending_confirmation":
            return str(doc["id"])
        await asyncio.sleep(0.1)
        async with h.svc.engine.begin() as conn:  # make it due again without waiting
            await conn.execute(
                update(device_sessions)
                .where(device_sessions.c.id == doc["id"])
                .values(next_poll_at=datetime(2000, 1, 1, tzinfo=UTC))
            )
    raise AssertionError("the device session never became ready")


async def test_a_device_session_is_confirmed_on_the_page_by_its_own_user_only(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        session_id = await _device_waiting_for(h, "alice")
        token = await sign_in(h, http, "bob")
        status, body, _ = await get(http, f"{h.public_url}/confirm/device/{session_id}")
        assert status == 200
        status, body, _ = await post(
            http, f"{h.public_url}/confirm/device/{session_id}", {"csrf": token}
        )
        assert status == 403
        _, doc = await h.admin("GET", "/v1/connections?user_id=bob")
        assert doc["connections"] == []

    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        session_id = await _device_waiting_for(h, "alice")
        token = await sign_in(h, http, "alice")
        status, body, _ = await get(http, f"{h.public_url}/confirm/device/{session_id}")
        assert status == 200
        assert "alice@demo.example" in body  # the provider account being attached is shown
        status, _, _location = await post(
            http, f"{h.public_url}/confirm/device/{session_id}", {"csrf": token}
        )
        assert status == 303
        _, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        assert len(doc["connections"]) == 1
