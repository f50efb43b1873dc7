"""Signing in to the broker's pages: OIDC at the login provider, server-side sessions."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import ClientSession
from harness import Harness
from sqlalchemy import select, update
from webpages import browser, csrf, get, post, sign_in, web_broker

from tokenbroker.db.schema import events, web_sessions


async def _session_rows(h: Harness) -> list[dict[str, object]]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        rows = await conn.execute(select(web_sessions).where(web_sessions.c.user_id.is_not(None)))
        return [dict(r._mapping) for r in rows]


async def test_sign_in_binds_the_session_to_the_user_and_rotates_it(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        status, _, location = await get(http, f"{h.public_url}/connections")
        assert status == 303
        assert location is not None
        assert location.startswith("/login?next=")
        await sign_in(h, http)
        first = {c.key: c.value for c in http.cookie_jar}["tb_session"]
        status, body, _ = await get(http, f"{h.public_url}/connections")
        assert status == 200
        assert "alice@demo.example" in body  # email_verified is true at the demo provider
        await sign_in(h, http, "bob")
        second = {c.key: c.value for c in http.cookie_jar}["tb_session"]
        assert second != first
        rows = await _session_rows(h)
        assert [r["user_id"] for r in rows] == ["bob"]  # the earlier session ended
        assert first not in str(rows)
        assert second not in str(rows)


async def test_session_cookie_is_httponly_and_samesite(tmp_path: Path, database_url: str) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        assert h.state is not None
        h.state.behaviour.auto_approve_user = "alice"
        _, _, to_provider = await get(http, f"{h.public_url}/login")
        assert to_provider is not None
        _, _, to_callback = await get(http, to_provider)
        assert to_callback is not None
        async with http.get(to_callback, allow_redirects=False) as resp:
            cookie = resp.cookies["tb_session"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Lax"
            assert cookie["path"] == "/"
            assert "Content-Security-Policy" in resp.headers


async def test_a_replayed_or_foreign_callback_signs_nobody_in(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http, browser(h) as other:
        assert h.state is not None
        h.state.behaviour.auto_approve_user = "alice"
        _, _, to_provider = await get(http, f"{h.public_url}/login")
        assert to_provider is not None
        _, _, to_callback = await get(http, to_provider)
        assert to_callback is not None
        status, body, _ = await get(other, to_callback)  # another browser: no login cookie
        assert status == 400
        assert "another browser" in body or "not started here" in body
        status, _, _ = await get(http, to_callback)  # the state was consumed
        assert status == 400
        assert await _session_rows(h) == []


async def test_an_expired_session_is_refused_and_changes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http)
        await h.connect("alice")
        assert h.svc is not None
        async with h.svc.engine.begin() as conn:
            await conn.execute(update(web_sessions).values(expires_at=h.svc.clock.now()))
        status, _, location = await get(http, f"{h.public_url}/connections")
        assert status == 303
        assert location is not None
        assert location.startswith("/login")
        conn_id = (await h.admin("GET", "/v1/connections?user_id=alice"))[1]["connections"][0]
        status, body, _ = await post(
            http, f"{h.public_url}/connections/{conn_id['id']}/disconnect", {"csrf": token}
        )
        assert status == 401
        assert "Nothing was changed" in body
        _, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        assert len(doc["connections"]) == 1


async def test_a_session_idle_for_longer_than_the_idle_timeout_ends(
    tmp_path: Path, database_url: str
) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        await sign_in(h, http)
        assert h.svc is not None
        idle = timedelta(seconds=3600)  # [login] session_idle_seconds, by default
        async with h.svc.engine.begin() as conn:
            await conn.execute(update(web_sessions).values(last_seen_at=h.svc.clock.now() - idle))
        status, _, location = await get(http, f"{h.public_url}/connections")
        assert status == 303
        assert location is not None
        assert location.startswith("/login")
        assert await _session_rows(h) == []  # ended, not merely refused


async def test_using_a_session_keeps_it_alive(tmp_path: Path, database_url: str) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        await sign_in(h, http)
        assert h.svc is not None
        before = h.svc.clock.now() - timedelta(seconds=3000)  # idle, but not for an hour
        async with h.svc.engine.begin() as conn:
            await conn.execute(update(web_sessions).values(last_seen_at=before))
        status, _, _ = await get(http, f"{h.public_url}/connections")
        assert status == 200
        (row,) = await _session_rows(h)
        seen = row["last_seen_at"]
        assert isinstance(seen, datetime)
        assert seen > before + timedelta(seconds=2900)  # the idle clock starts again


async def test_sign_out_ends_the_session(tmp_path: Path, database_url: str) -> None:
    async with web_broker(tmp_path, database_url) as h, browser(h) as http:
        token = await sign_in(h, http)
        status, _, _ = await post(http, f"{h.public_url}/logout", {"csrf": token})
        assert status == 200
        assert await _session_rows(h) == []
        status, _, _ = await get(http, f"{h.public_url}/access")
        assert status == 303


async def test_admin_pages_need_the_admin_role(tmp_path: Path, database_url: str) -> None:
    async with web_broker(tmp_path, database_url, admins=["bob"]) as h, browser(h) as http:
        await sign_in(h, http, "alice")
        status, body, _ = await get(http, f"{h.public_url}/admin")
        assert status == 403
        assert "Admin</a>" not in body
        await sign_in(h, http, "bob")
        await csrf(h, http, "/admin")  # 200, with the admin page
        status, body, _ = await get(http, f"{h.public_url}/admin")
        assert "Providers" in body
        assert "acme" in body
        assert "verified" in body  # the tenant's audit chain, checked on the page
        assert h.svc is not None
        async with h.svc.engine.connect() as conn:
            kinds = {r.type for r in await conn.execute(select(events.c.type))}
        assert "web.signed_in" in kinds


async def _sign_in_at(h: Harness, http: ClientSession, tenant: str, user: str) -> None:
    assert h.state is not None
    h.state.behaviour.auto_approve_user = user
    status, _, to_provider = await get(http, f"{h.public_url}/login?tenant={tenant}")
    assert status == 303
    assert to_provider is not None
    status, body, to_callback = await get(http, to_provider)
    assert status == 302, body
    assert to_callback is not None
    status, body, _ = await get(http, to_callback)
    assert status == 303, body


async def test_a_tenant_signs_in_at_its_own_login_and_sees_only_its_own(
    tmp_path: Path, database_url: str
) -> None:
    """``/login?tenant=b`` signs in at tenant b's ``[tenants.b.login]``: the session belongs to
    tenant b, and alice of tenant b does not see alice of the default tenant."""
    h = Harness(tmp=tmp_path, database_url=database_url)
    try:
        tenant_b = {"admin_key_env": "TB_ADMIN_B", "login": h.login_config(admins=["alice"])}
        await h.start(
            login=h.login_config(),
            tenants={"b": tenant_b},
            connect={"user_verifier_url": None},
        )
        await h.connect("alice")  # in the default tenant
        _, listed = await h.admin("GET", "/v1/connections?user_id=alice")
        connection_id = listed["connections"][0]["id"]
        async with browser(h) as http:
            await _sign_in_at(h, http, "b", "alice")
            (row,) = await _session_rows(h)
            assert (row["tenant_id"], row["user_id"], row["is_admin"]) == ("b", "alice", True)
            status, body, _ = await get(http, f"{h.public_url}/connections")
            assert status == 200
            assert connection_id not in body
        async with browser(h) as http:  # the same person in the default tenant sees it
            await _sign_in_at(h, http, "default", "alice")
            status, body, _ = await get(http, f"{h.public_url}/connections")
            assert status == 200
            assert connection_id in body
        async with browser(h) as http:
            status, body, _ = await get(http, f"{h.public_url}/login?tenant=nope")
            assert status == 404
            assert "not configured" in body
    finally:
        await h.stop()
