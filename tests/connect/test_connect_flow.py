"""The connect flow end to end over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from harness import running
from sqlalchemy import text

from tokenbroker.db.engine import create_engine


async def test_full_flow_connects_alice_and_lists_her_connection(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await h.connect("alice", ["files:read"])
        assert connection["provider"] == "acme"
        assert connection["account"]["id"] == "alice"
        assert connection["status"] == "active"
        assert "files:read" in connection["scopes"]
        assert connection["has_refresh_token"] is True

        status, listed = await h.admin("GET", "/v1/connections?user_id=alice")
        assert status == 200
        assert [c["id"] for c in listed["connections"]] == [connection["id"]]
        assert "token" not in str(listed).replace("token_expires_at", "").replace(
            "has_refresh_token", ""
        )
        status, one = await h.admin("GET", f"/v1/connections/{connection['id']}")
        assert status == 200
        assert one["id"] == connection["id"]


async def test_authorization_request_uses_pkce_s256_state_nonce_and_exact_redirect(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        resp = await h.get(session["authorization_url"])
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) == 43
        assert len(query["state"][0]) >= 43
        assert query["nonce"]
        assert query["redirect_uri"] == [f"{h.public_url}/oauth/callback/acme"]
        assert query["prompt"] == ["consent"]  # generic OIDC + offline_access (OIDC Core §11)
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Path=/oauth/callback/acme" in cookie


async def test_database_dump_after_full_flow_holds_no_token(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        await h.connect()
        assert h.state is not None
        canaries = set(h.state.access_tokens) | set(h.state.refresh_tokens)
        assert canaries
        engine = create_engine(database_url)
        try:
            dump = await _dump(engine)
        finally:
            await engine.dispose()
        for canary in canaries:
            assert canary not in dump
            assert canary[:12] not in dump


async def _dump(engine) -> str:  # type: ignore[no-untyped-def]
    parts: list[str] = []
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        for name in names:
            rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
            for row in rows:
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value).decode("latin-1"))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)
