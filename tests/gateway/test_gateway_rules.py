"""The gateway's rules that the main gateway tests leave out: what a grant may hold and how long
it lives, explicit operations under raw access, the order of the checks, the body limit, the
401 retry's limits and redirects. Each test fails when its rule is removed."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from agents import GATEWAY_CONFIG, agent, grant, proxy, ready, session
from aiohttp import web
from harness import Harness, free_port, running
from sqlalchemy import select, update

from tokenbroker.db.schema import sealed_secrets


@asynccontextmanager
async def elsewhere() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on another port that records every request it gets (a redirect's target)."""
    seen: list[str] = []

    async def any_request(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs} {request.headers.get('Authorization')}")
        return web.Response(text="you should not be here")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_an_upstream_redirect_is_passed_back_never_followed(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h, elsewhere() as (url, seen):
        token, _ = await ready(h)
        assert h.state is not None
        h.state.behaviour.api_redirect_to = f"{url}/steal"
        status, headers, _ = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 302
        assert "TokenBroker-Error" not in headers  # the upstream's own answer
        assert seen == []  # neither the request nor the user's token went there


async def test_a_grant_never_holds_scopes_the_connection_lacks(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        await h.connect("alice", ["files:read"])
        made = await agent(h)
        body = {
            "user_id": "alice",
            "agent_id": made["id"],
            "provider": "acme",
            "scopes": ["files:read", "files:write"],
        }
        status, doc = await h.admin("POST", "/v1/grants", body)
        assert (status, doc["error"]) == (400, "scope_not_granted"), doc
        assert "files:write" in doc["message"]
        status, doc = await h.admin("GET", "/v1/grants?user_id=alice")
        assert (status, doc["grants"]) == (200, [])


async def test_a_grant_ends_with_its_connection_and_a_new_connection_does_not_revive_it(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, made = await ready(h)
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        (connection,) = doc["connections"]
        status, _ = await h.admin("DELETE", f"/v1/connections/{connection['id']}")
        assert status in (200, 204)
        status, doc = await h.admin("GET", "/v1/grants?user_id=alice")
        assert (status, doc["grants"]) == (200, [])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (403, "authorization_required")
        await h.connect("alice", ["files:read"])  # connected again: a new connection id
        before = h.counter("api_calls")
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["reason"]) == (403, "no_grant"), body
        assert h.counter("api_calls") == before
        await grant(h, made["id"], ["files:read"])  # the user grants again: it works again
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200


async def test_an_explicit_operation_must_be_named_even_with_raw_access(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, made = await ready(h, ["files:read"], operations=["*"])
        before = h.counter("api_calls")
        status, _, body = await proxy(h, token, "POST", "/proxy/acme/batch", data=b"{}")
        assert (status, json.loads(body)["reason"]) == (403, "explicit_operation_not_granted")
        assert json.loads(body)["missing"]["operation"] == "batch"
        assert h.counter("api_calls") == before
        await grant(h, made["id"], ["files:read"], operations=["*", "batch"])
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/batch", data=b"{}")
        assert status == 404  # let through: the demo API has no /batch of its own
        assert h.counter("api_calls") == before + 1


async def test_checks_run_session_then_path_then_connection_then_grant(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        made = await agent(h)
        carol = await session(h, made["id"], "carol")  # carol has no connection and no grant
        hostile = "/proxy/acme/files@evil.example"  # the client sends it as it is
        status, headers, body = await proxy(h, "not-a-session", "GET", hostile)
        assert (status, json.loads(body)["error"]) == (401, "invalid_token")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, body = await proxy(h, carol, "GET", hostile)
        assert (status, json.loads(body)["error"]) == (400, "invalid_path")
        status, _, body = await proxy(h, carol, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (403, "authorization_required")
        await h.connect("carol", ["files:read"])
        status, _, body = await proxy(h, carol, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (403, "insufficient_grant")
        assert h.counter("api_calls") == 0


async def test_a_body_over_the_limit_gets_413_and_reaches_nothing(
    tmp_path: Path, database_url: str
) -> None:
    limits = {"gateway": {"max_request_body_bytes": 4096}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **limits) as h:
        token, _ = await ready(h, ["files:read"])
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/echo/x", data=b"a" * 4096)
        assert status == 200
        before = h.counter("api_calls")
        status, headers, body = await proxy(
            h, token, "POST", "/proxy/acme/echo/x", data=b"a" * 4097
        )
        assert (status, json.loads(body)["error"]) == (413, "body_too_large"), body
        assert headers["TokenBroker-Error"] == "body_too_large"
        assert h.counter("api_calls") == before


async def test_an_upstream_401_forces_one_refresh_per_interval(
    tmp_path: Path, database_url: str
) -> None:
    """A 401 forces a refresh and one retry; within the interval a second 401, on the refreshed
    token, passes through without another refresh."""
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        assert h.state is not None
        h.state.behaviour.api_failures = [401]
        assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        assert h.counter("refresh_calls") == 1  # refreshed once, retried with the new token
        h.state.behaviour.api_failures = [401]
        status, headers, _ = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 401
        assert "TokenBroker-Error" not in headers  # the upstream's own answer
        assert h.counter("refresh_calls") == 1


async def test_a_body_too_large_to_have_been_kept_is_never_replayed_after_a_401(
    tmp_path: Path, database_url: str
) -> None:
    replay = {"gateway": {"replay_buffer_bytes": 1024}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **replay) as h:
        token, _ = await ready(h, ["files:read"])
        assert h.state is not None
        h.state.behaviour.api_failures = [401]
        calls = h.counter("api_calls")
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/echo/x", data=b"a" * 2048)
        assert status == 401  # not replayable: passed through, no refresh, no second call
        assert (h.counter("refresh_calls"), h.counter("api_calls")) == (0, calls + 1)
        h.state.behaviour.api_failures = [401]
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/echo/x", data=b"a" * 512)
        assert status == 200  # kept whole: replayed after the refresh
        assert h.counter("refresh_calls") == 1


async def test_a_rotated_agent_secret_replaces_the_old_one_at_once(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        _, made = await ready(h)

        async def ticket_session(secret: str) -> int:
            status, ticket = await h.admin(
                "POST", "/v1/session-tickets", {"user_id": "alice", "agent_id": made["id"]}
            )
            assert status == 201, ticket
            status, _ = await h.admin(
                "POST", "/v1/agent-sessions", {"ticket": ticket["ticket"]}, key=secret
            )
            return status

        assert await ticket_session(made["secret"]) == 201
        status, doc = await h.admin("POST", f"/v1/agents/{made['id']}/rotate-secret")
        assert status == 200, doc
        assert doc["secret"] != made["secret"]
        assert await ticket_session(made["secret"]) == 401
        assert await ticket_session(doc["secret"]) == 201


async def test_agent_sessions_last_15_minutes_by_default_and_never_beyond_the_maximum(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        _, made = await ready(h)
        who = {"user_id": "alice", "agent_id": made["id"]}
        status, doc = await h.admin("POST", "/v1/agent-sessions", who)
        assert status == 201, doc
        left = datetime.fromisoformat(doc["expires_at"]) - datetime.now(UTC)
        assert 890 <= left.total_seconds() <= 900
        status, doc = await h.admin("POST", "/v1/agent-sessions", {**who, "expires_in": 3600})
        assert status == 201, doc
        status, doc = await h.admin("POST", "/v1/agent-sessions", {**who, "expires_in": 3601})
        assert (status, doc["error"]) == (400, "invalid_request"), doc


async def test_an_encoded_slash_inside_a_segment_reaches_the_upstream_verbatim(
    tmp_path: Path, database_url: str
) -> None:
    """GitLab-style ids (``group%2Fproject``) stay one segment: never decoded to a slash."""
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/echo/group%2Fproject/x?a=1")
        assert status == 200, body
        assert json.loads(body)["raw_path"] == "/echo/group%2Fproject/x?a=1"


async def test_an_insufficient_grant_carries_a_consent_link_where_users_sign_in(
    tmp_path: Path, database_url: str
) -> None:
    """With ``[login]`` the refusal names what is missing and links to the consent page for
    exactly that agent, user, provider, operation and scopes."""
    h = Harness(tmp=tmp_path, database_url=database_url)
    try:
        await h.start(login=h.login_config(), **GATEWAY_CONFIG)
        token, made = await ready(h, ["files:read"], operations=["files.list"])
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/echo/x")
        answer = json.loads(body)
        assert (status, answer["error"]) == (403, "insufficient_grant"), answer
        assert headers["TokenBroker-Error"] == "insufficient_grant"
        assert answer["message"]
        assert answer["missing"] == {"operation": "echo", "scopes": []}  # scopes are granted
        link = urlsplit(answer["consent_url"])
        assert f"{link.scheme}://{link.netloc}" == h.public_url
        query = parse_qs(link.query)
        assert query["agent_id"] == [made["id"]]
        assert query["user_id"] == ["alice"]
        assert query["provider"] == ["acme"]
        assert query["operations"] == ["echo"]
        assert query["scopes"] == ["files:read"]
    finally:
        await h.stop()


async def test_an_upstream_429_passes_through_with_its_retry_after_capped(
    tmp_path: Path, database_url: str
) -> None:
    caps = {"gateway": {"retry_after_cap_seconds": 5}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **caps) as h:
        token, _ = await ready(h, ["files:read"])
        assert h.state is not None
        for sent, relayed in (("3600", "5"), ("2", "2")):
            h.state.behaviour.api_retry_after = sent
            h.state.behaviour.api_failures = [429]
            status, headers, _ = await proxy(h, token, "GET", "/proxy/acme/files")
            assert status == 429
            assert "TokenBroker-Error" not in headers  # the upstream's own answer
            assert headers["Retry-After"] == relayed


async def test_a_named_api_base_is_chosen_by_the_path_and_its_operations_are_its_own(
    tmp_path: Path, database_url: str
) -> None:
    """``/proxy/acme:v2/...`` goes to the ``v2`` base (here the API's ``/echo`` prefix); an
    operation declared for that base matches only there."""
    h = Harness(tmp=tmp_path, database_url=database_url)
    v2_echo = {
        "name": "v2.echo",
        "method": "GET",
        "path": "/{rest*}",
        "scopes": ["files:read"],
        "base": "v2",
    }
    provider = {
        "operations": [*GATEWAY_CONFIG["provider"]["operations"], v2_echo],
        "api_bases": {"v2": f"http://127.0.0.1:{h.api_port}/echo"},
    }
    try:
        await h.start(provider=provider)
        token, _ = await ready(h, ["files:read"], operations=["v2.echo"])
        status, _, body = await proxy(h, token, "GET", "/proxy/acme:v2/items/7")
        assert status == 200, body
        assert json.loads(body)["raw_path"] == "/echo/items/7"
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/echo/items/7")
        assert (status, json.loads(body)["reason"]) == (403, "operation_not_granted")
        status, _, body = await proxy(h, token, "GET", "/proxy/acme:v3/items/7")
        assert (status, json.loads(body)["error"]) == (403, "destination_not_allowed")
    finally:
        await h.stop()


async def test_a_silent_upstream_gets_504_and_an_answer_over_the_cap_502(
    tmp_path: Path, database_url: str
) -> None:
    limits = {"gateway": {"read_timeout_seconds": 1, "max_response_body_bytes": 64}}
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **limits) as h:
        token, _ = await ready(h, ["files:read"])
        assert h.state is not None
        h.state.behaviour.api_delay_seconds = 2.0
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (504, "upstream_timeout"), body
        assert headers["TokenBroker-Error"] == "upstream_timeout"
        h.state.behaviour.api_delay_seconds = 0.0
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")  # ~180 bytes
        assert (status, json.loads(body)["error"]) == (502, "upstream_error"), body
        assert headers["TokenBroker-Error"] == "upstream_error"


@contextmanager
def never_accepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: Linux drops further SYNs, so a connect
    there hangs until the client gives up (a connect timeout without leaving loopback)."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        for _ in range(3):  # never accepted: they fill the queue
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        time.sleep(0.2)
        yield port


async def test_an_upstream_that_never_accepts_the_connection_gets_504(
    tmp_path: Path, database_url: str
) -> None:
    h = Harness(tmp=tmp_path, database_url=database_url)
    with never_accepting_port() as port:
        stuck = {"name": "stuck.get", "method": "GET", "path": "/x", "scopes": ["files:read"]}
        provider = {
            "operations": [*GATEWAY_CONFIG["provider"]["operations"], {**stuck, "base": "stuck"}],
            "api_bases": {"stuck": f"http://127.0.0.1:{port}"},
        }
        try:
            await h.start(provider=provider, gateway={"connect_timeout_seconds": 1})
            token, _ = await ready(h, ["files:read"], operations=["stuck.get", "files.list"])
            started = time.monotonic()
            status, headers, body = await proxy(h, token, "GET", "/proxy/acme:stuck/x")
            assert (status, json.loads(body)["error"]) == (504, "upstream_timeout"), body
            assert headers["TokenBroker-Error"] == "upstream_timeout"
            assert 0.9 < time.monotonic() - started < 5  # the configured 1 s, not the OS's
            # the provider's main base is unaffected
            assert (await proxy(h, token, "GET", "/proxy/acme/files"))[0] == 200
        finally:
            await h.stop()


async def test_with_redis_two_replicas_share_a_users_rate_limit(
    tmp_path: Path, database_url: str
) -> None:
    """``redis_url`` set: the bucket is shared, so calls spread over two replicas use one burst.
    (Each run has a user of its own: buckets outlive a test for a few seconds in Redis.)"""
    shared = {
        "redis_url": "redis://127.0.0.1:6379/15",
        "gateway": {"user_burst": 3, "user_rate_per_second": 1},
    }
    async with running(tmp_path, database_url, **GATEWAY_CONFIG, **shared) as h:
        user = f"user-{secrets.token_hex(6)}"
        await h.connect(user, ["files:read"])
        made = await agent(h)
        await grant(h, made["id"], ["files:read"], user_id=user)
        token = await session(h, made["id"], user)
        replica = await h.start_replica()
        for port in (None, None, replica):
            assert (await proxy(h, token, "GET", "/proxy/acme/files", port=port))[0] == 200
        for port in (replica, None):
            status, _, body = await proxy(h, token, "GET", "/proxy/acme/files", port=port)
            assert (status, json.loads(body)["error"]) == (429, "rate_limited"), body


async def test_a_provider_refusing_the_broker_as_client_answers_503_provider_misconfigured(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        assert h.state is not None
        status, doc = await h.admin("GET", "/v1/connections?user_id=alice")
        await h.expire_access_token(doc["connections"][0]["id"])
        h.state.behaviour.token_failures = ["invalid_client"]
        before = h.counter("api_calls")
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (503, "provider_misconfigured"), body
        assert headers["TokenBroker-Error"] == "provider_misconfigured"
        assert h.counter("api_calls") == before


async def test_a_sealed_token_that_fails_to_open_answers_500_credential_corrupt(
    tmp_path: Path, database_url: str
) -> None:
    """A blob altered in the database (a byte flipped) never opens: 500, nothing forwarded,
    and nothing of the blob in the answer."""
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        assert h.svc is not None
        token, _ = await ready(h, ["files:read"])
        async with h.svc.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(sealed_secrets.c.id, sealed_secrets.c.blob).where(
                        sealed_secrets.c.owner_kind == "connection",
                        sealed_secrets.c.field == "access_token",
                    )
                )
            ).one()
            flipped = bytes([row.blob[0], *row.blob[1:-1], row.blob[-1] ^ 1])
            await conn.execute(
                update(sealed_secrets).where(sealed_secrets.c.id == row.id).values(blob=flipped)
            )
        before = h.counter("api_calls")
        status, headers, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert (status, json.loads(body)["error"]) == (500, "credential_corrupt"), body
        assert headers["TokenBroker-Error"] == "credential_corrupt"
        assert h.counter("api_calls") == before
