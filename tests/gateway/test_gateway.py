"""The gateway: an agent acts for one user, only within the grant, never seeing a token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agents import GATEWAY_CONFIG, agent, grant, opened_session, proxy, ready, session
from harness import running


async def test_granted_call_reaches_the_api_with_the_users_token(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 200, body
        assert "TokenBroker-Error" not in headers
        assert headers["X-Request-ID"]
        assert json.loads(body)


async def test_the_agent_token_and_its_credentials_never_reach_the_upstream(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        status, _, body = await proxy(
            h,
            token,
            "GET",
            "/proxy/acme/echo/x?q=1",
            headers={
                "Cookie": "session=agent-cookie",
                "X-Forwarded-Host": "evil.example",
                "Proxy-Authorization": "Basic eA==",
                "Connection": "x-secret-hop",
                "X-Secret-Hop": "1",
                "Accept": "application/json",
                "X-Request-ID": "req-123",
            },
        )
        assert status == 200, body
        echoed = json.loads(body)
        sent = {name.lower(): value for name, value in echoed["headers"]}
        assert token not in body.decode()
        assert sent["authorization"].startswith("Bearer ")
        assert sent["authorization"] != f"Bearer {token}"
        for name in ("cookie", "x-forwarded-host", "proxy-authorization", "x-secret-hop"):
            assert name not in sent
        assert sent["x-request-id"] == "req-123"
        assert sent["accept"] == "application/json"


async def test_the_users_token_never_reaches_the_agent(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        assert h.state is not None
        user_tokens = list(h.state.access_tokens) + list(h.state.refresh_tokens)
        answers = [  # (the demo /echo endpoint echoes what it received, so it is not used here)
            await proxy(h, token, "GET", "/proxy/acme/files"),
            await proxy(h, token, "POST", "/proxy/acme/files", data=b"{}"),
            await proxy(h, token, "GET", "/proxy/acme/undeclared"),
            await proxy(h, "tbs.wrong", "GET", "/proxy/acme/files"),
        ]
        for status, headers, body in answers:
            text = body.decode() + json.dumps(headers)
            for secret in user_tokens:
                assert secret not in text, status


async def test_scope_beyond_the_grant_is_refused_and_nothing_reaches_the_upstream(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        before = h.counter("api_calls")
        status, headers, body = await proxy(h, token, "POST", "/proxy/acme/files", data=b"{}")
        assert status == 403
        doc = json.loads(body)
        assert doc["error"] == "insufficient_grant"
        assert headers["TokenBroker-Error"] == "insufficient_grant"
        assert doc["missing"] == {"operation": None, "scopes": ["files:write"]}
        assert h.counter("api_calls") == before


async def test_operations_list_and_explicit_operations(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"], operations=["files.list"])
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/echo/x")
        assert (status, json.loads(body)["reason"]) == (403, "operation_not_granted")
        status, _, body = await proxy(h, token, "POST", "/proxy/acme/batch", data=b"{}")
        assert (status, json.loads(body)["reason"]) == (403, "explicit_operation_not_granted")


async def test_undeclared_requests_need_raw_access(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, made = await ready(h, ["files:read"])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/undeclared")
        assert (status, json.loads(body)["reason"]) == (403, "undeclared_operation")
        await grant(h, made["id"], ["files:read"], operations=["*"])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/me")
        assert status == 200, body
        status, _, _ = await proxy(h, token, "GET", "/proxy/acme/undeclared")
        assert status == 404  # the upstream's own answer: it was let through as raw access


async def test_no_connection_answers_authorization_required_with_a_link(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        made = await agent(h)
        token = await session(h, made["id"], "carol")
        status, _headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        doc = json.loads(body)
        assert (status, doc["error"]) == (403, "authorization_required")
        assert doc["authorization_url"].startswith(f"{h.public_url}/connect/")
        cs_id = doc["authorization_url"].rsplit("/", 1)[1]
        status, cs = await h.admin("GET", f"/v1/connect-sessions/{cs_id}")
        assert (cs["user_id"], cs["provider"]) == ("carol", "acme")
        assert "files:read" in cs["scopes"]


async def test_invalid_tokens_get_401_and_nothing_else_does(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        for token in (None, "tbs.forged", "admin-key-default-0123456789"):
            status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
            assert status == 401
            assert json.loads(body)["error"] == "invalid_token"
            assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_revoked_grant_or_session_stops_at_once(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        granted = await grant(h, made["id"], ["files:read"])
        token = await session(h, made["id"])
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        await h.admin("DELETE", f"/v1/grants/{granted['id']}")
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["reason"]) == (403, "no_grant")
        await grant(h, made["id"], ["files:read"])
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        doc = await opened_session(h, made["id"])
        await h.admin("DELETE", f"/v1/agent-sessions/{doc['id']}")
        assert (await proxy(h, doc["token"], "GET", "/proxy/acme/files"))[0] == 401


async def test_alice_agent_never_reaches_bobs_connection(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("bob", ["files:read"])
        made = await agent(h)
        bob_grant = await grant(h, made["id"], ["files:read"], user_id="bob")
        alice = await session(h, made["id"], "alice")
        before = h.counter("api_calls")
        for path, headers in (
            ("/proxy/acme/files", {}),
            (
                "/proxy/acme/files",
                {"X-User-ID": "bob", "X-Connection-ID": bob_grant["connection_id"]},
            ),
            (f"/proxy/acme/files?connection_id={bob_grant['connection_id']}&user_id=bob", {}),
        ):
            status, _, body = await proxy(h, alice, "GET", path, headers=headers)
            assert status == 403, body
            assert json.loads(body)["error"] == "authorization_required"
        assert h.counter("api_calls") == before


async def test_upstream_401_refreshes_once_and_retries(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        assert h.state is not None
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        h.state.expire_access_tokens()  # the provider expired them; the broker does not know
        results = await asyncio.gather(
            *(proxy(h, token, "GET", "/proxy/acme/files") for _ in range(20))
        )
        assert [r[0] for r in results] == [200] * 20
        assert h.counter("refresh_calls") == 1


async def test_agent_with_secret_and_ticket_opens_a_session_but_cannot_choose_a_user(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        await grant(h, made["id"], ["files:read"])
        secret = made["secret"]
        status, doc = await h.admin(
            "POST", "/v1/agent-sessions", {"user_id": "alice", "agent_id": made["id"]}, key=secret
        )
        assert status == 401  # a secret alone can never choose a user
        status, ticket = await h.admin(
            "POST", "/v1/session-tickets", {"user_id": "alice", "agent_id": made["id"]}
        )
        assert status == 201
        status, doc = await h.admin(
            "POST", "/v1/agent-sessions", {"ticket": ticket["ticket"]}, key=secret
        )
        assert status == 201, doc
        assert doc["user_id"] == "alice"
        assert (await proxy(h, doc["token"], "GET", "/proxy/acme/files"))[0] == 200
        status, _again = await h.admin(
            "POST", "/v1/agent-sessions", {"ticket": ticket["ticket"]}, key=secret
        )
        assert status == 401  # single use


async def test_tenant_a_never_reaches_tenant_b(tmp_path: Path, database_url: str) -> None:
    from harness import OTHER_ADMIN_KEY

    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        _token, made = await ready(h)  # alice's connection and grant live in the default tenant
        status, other_agent = await h.admin(
            "POST", "/v1/agents", {"name": "b-agent"}, key=OTHER_ADMIN_KEY
        )
        assert status == 201
        status, doc = await h.admin(
            "POST",
            "/v1/agent-sessions",
            {"user_id": "alice", "agent_id": other_agent["id"]},
            key=OTHER_ADMIN_KEY,
        )
        b_token = doc["token"]
        status, _, body = await proxy(h, b_token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (403, "authorization_required")
        status, doc = await h.admin(  # tenant B cannot grant tenant A's agent or connection
            "POST",
            "/v1/grants",
            {
                "user_id": "alice",
                "agent_id": made["id"],
                "provider": "acme",
                "scopes": ["files:read"],
            },
            key=OTHER_ADMIN_KEY,
        )
        assert status == 404
        status, doc = await h.admin("GET", "/v1/agents", key=OTHER_ADMIN_KEY)
        assert [a["id"] for a in doc["agents"]] == [other_agent["id"]]
        status, doc = await h.admin("GET", "/v1/grants", key=OTHER_ADMIN_KEY)
        assert doc["grants"] == []


async def test_a_connection_that_needs_reauth_answers_authorization_required(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        assert h.state is not None
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        await h.expire_access_token(doc["connections"][0]["id"])
        h.state.behaviour.token_failures = ["invalid_grant"]
        status, _headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        answer = json.loads(body)
        assert (status, answer["error"], answer["reason"]) == (
            403,
            "authorization_required",
            "needs_reauth",
        )
        assert answer["authorization_url"].startswith(h.public_url)
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 403  # asks again
        # The user follows the agent's link; the agent's very next call goes through (every
        # replica's cached "needs_reauth" is dropped when the connection is stored again).
        await h.complete(answer["authorization_url"])
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200


async def test_provider_down_during_refresh_answers_503_with_retry_after(
    tmp_path: Path, database_url: str
) -> None:
    fast = {"refresh": {"attempt_timeout_seconds": 1, "lease_seconds": 4, "wait_seconds": 2}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **fast) as h:
        token, _ = await ready(h)
        assert h.state is not None
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        await h.expire_access_token(doc["connections"][0]["id"])
        h.state.behaviour.token_failures = [503, 503, 503]
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (503, "provider_unavailable")
        assert int(headers["Retry-After"]) >= 1


async def test_a_hanging_token_endpoint_answers_503_within_the_requests_wait(
    tmp_path: Path, database_url: str
) -> None:
    """The token endpoint accepts the refresh and never answers: the agent gets 503
    ``provider_unavailable`` with ``Retry-After: 1`` after ``request_wait_ms``, not after the
    attempt's deadline, and nothing reaches the API."""
    bounded = {
        "refresh": {"attempt_timeout_seconds": 5, "lease_seconds": 10, "request_wait_ms": 400}
    }
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **bounded) as h:
        token, _ = await ready(h)
        assert h.state is not None
        _status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        await h.expire_access_token(doc["connections"][0]["id"])
        h.state.behaviour.timeout_seconds = 30
        h.state.behaviour.token_failures = ["timeout"]
        before = h.counter("api_calls")
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert loop.time() - started < 2.0
        assert (status, json.loads(body)["error"]) == (503, "provider_unavailable")
        assert headers["Retry-After"] == "1"
        assert h.counter("api_calls") == before


async def test_a_users_calls_beyond_the_rate_limit_get_429_and_reach_nothing(
    tmp_path: Path, database_url: str
) -> None:
    """The bucket per user and provider: a burst of 3, then 429 ``rate_limited`` with
    Retry-After, before the upstream; another user of the same agent keeps their own bucket."""
    limits = {"gateway": {"user_burst": 3, "user_rate_per_second": 1}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **limits) as h:
        token, made = await ready(h)
        await h.connect("bob", ["files:read"])
        await grant(h, made["id"], ["files:read"], user_id="bob")
        bob = await session(h, made["id"], "bob")
        for _ in range(3):
            assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        before = h.counter("api_calls")
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (429, "rate_limited"), body
        assert headers["TokenBroker-Error"] == "rate_limited"
        assert int(headers["Retry-After"]) >= 1
        assert h.counter("api_calls") == before  # refused before the upstream
        assert (await proxy(h, bob, "GET", "/proxy/acme/files"))[0] == 200


async def test_an_agents_calls_beyond_its_rate_limit_get_429_whichever_user_it_acts_for(
    tmp_path: Path, database_url: str
) -> None:
    """The bucket per agent spans its users: two calls for alice and one for bob use the
    agent's burst of 3; the next, for either, is refused before the upstream."""
    limits = {"gateway": {"agent_burst": 3, "agent_rate_per_second": 1}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **limits) as h:
        alice, made = await ready(h)
        await h.connect("bob", ["files:read"])
        await grant(h, made["id"], ["files:read"], user_id="bob")
        bob = await session(h, made["id"], "bob")
        for token in (alice, alice, bob):
            assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        before = h.counter("api_calls")
        for token in (bob, alice):
            status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
            assert (status, json.loads(body)["error"]) == (429, "rate_limited"), body
            assert int(headers["Retry-After"]) >= 1
        assert h.counter("api_calls") == before
        other = await agent(h, "other-agent")
        await grant(h, other["id"], ["files:read"])
        fresh = await session(h, other["id"])
        assert (await proxy(h, fresh, "GET", "/proxy/acme/files"))[0] == 200
