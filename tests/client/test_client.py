"""tokenbroker.client: typed errors for the broker's answers, the upstream's passed through."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from agents import GATEWAY_CONFIG, agent, ready, session
from harness import running

from tokenbroker.client import (
    AsyncBroker,
    AuthorizationRequired,
    Broker,
    BrokerError,
    BrokerUnavailable,
    InsufficientGrant,
    InvalidToken,
    ProviderUnavailable,
    RateLimited,
    error_from_response,
    parse_retry_after,
    proxy_url,
)

URL = "http://broker.test"
TOKEN = "tbs.s3cr3t-agent-session-token"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent_tool.py"

Handler = Callable[[httpx.Request], httpx.Response]


def broker_answer(code: str, status: int, **extra: Any) -> httpx.Response:
    headers = {"TokenBroker-Error": code, "X-Request-ID": "req-1"}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    body = {"error": code, "message": f"{code} happened", **extra}
    return httpx.Response(status, json=body, headers=headers)


def answering(response: httpx.Response, seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return response

    return handler


def sync_broker(handler: Handler) -> Broker:
    return Broker(URL, TOKEN, transport=httpx.MockTransport(handler))


CODES: list[tuple[str, int, type[BrokerError]]] = [
    ("invalid_token", 401, InvalidToken),
    ("authorization_required", 403, AuthorizationRequired),
    ("insufficient_grant", 403, InsufficientGrant),
    ("destination_not_allowed", 403, BrokerError),
    ("invalid_path", 400, BrokerError),
    ("invalid_header", 400, BrokerError),
    ("body_too_large", 413, BrokerError),
    ("rate_limited", 429, RateLimited),
    ("upstream_error", 502, BrokerUnavailable),
    ("provider_unavailable", 503, ProviderUnavailable),
    ("provider_misconfigured", 503, BrokerUnavailable),
    ("store_unavailable", 503, BrokerUnavailable),
    ("credential_corrupt", 500, BrokerUnavailable),
    ("upstream_timeout", 504, BrokerUnavailable),
    ("something_new", 418, BrokerError),
]


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
def test_every_broker_code_maps_to_its_error(
    code: str, status: int, cls: type[BrokerError]
) -> None:
    broker = sync_broker(answering(broker_answer(code, status)))
    with broker, pytest.raises(BrokerError) as caught:
        broker.request("GET", "acme", "/files")
    exc = caught.value
    assert type(exc) is cls
    assert (exc.code, exc.status, exc.message) == (code, status, f"{code} happened")
    assert exc.request_id == "req-1"


def test_authorization_required_carries_the_link_and_reason() -> None:
    answer = broker_answer(
        "authorization_required",
        403,
        authorization_url=f"{URL}/connect/cs_1",
        reason="no_connection",
    )
    with sync_broker(answering(answer)) as broker, pytest.raises(AuthorizationRequired) as caught:
        broker.request("GET", "acme", "/files")
    assert caught.value.authorization_url == f"{URL}/connect/cs_1"
    assert caught.value.reason == "no_connection"


def test_insufficient_grant_carries_what_is_missing() -> None:
    answer = broker_answer(
        "insufficient_grant",
        403,
        reason="scope_not_granted",
        missing={"operation": "files.create", "scopes": ["files:write"]},
    )
    with sync_broker(answering(answer)) as broker, pytest.raises(InsufficientGrant) as caught:
        broker.request("POST", "acme", "/files", json={})
    assert caught.value.reason == "scope_not_granted"
    assert caught.value.missing_operation == "files.create"
    assert caught.value.missing_scopes == ("files:write",)


@pytest.mark.parametrize("status", [404, 500, 401, 403, 429])
def test_the_upstreams_own_errors_are_returned_not_raised(status: int) -> None:
    upstream = httpx.Response(status, json={"error": "not_found"}, headers={"X-Demo": "true"})
    with sync_broker(answering(upstream)) as broker:
        response = broker.request("GET", "acme", "/nothing")
    assert response.status_code == status
    assert response.json() == {"error": "not_found"}
    assert error_from_response(response) is None


def test_retry_after_is_parsed() -> None:
    answer = broker_answer("rate_limited", 429, retry_after=7)
    with sync_broker(answering(answer)) as broker, pytest.raises(RateLimited) as caught:
        broker.request("GET", "acme", "/files")
    assert caught.value.retry_after == 7
    answer = broker_answer("provider_unavailable", 503, retry_after=30)
    with sync_broker(answering(answer)) as broker, pytest.raises(ProviderUnavailable) as down:
        broker.request("GET", "acme", "/files")
    assert down.value.retry_after == 30
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=120), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 120
    assert parse_retry_after(format_datetime(now, usegmt=True), now=now.timestamp() + 5) == 0


def test_a_non_json_broker_answer_still_maps() -> None:
    answer = httpx.Response(503, text="oops", headers={"TokenBroker-Error": "store_unavailable"})
    exc = error_from_response(answer)
    assert isinstance(exc, BrokerUnavailable)
    assert exc.code == "store_unavailable"
    assert exc.request_id is None


def test_the_request_is_built_safely() -> None:
    seen: list[httpx.Request] = []
    with sync_broker(answering(httpx.Response(200, json={}), seen)) as broker:
        broker.request(
            "get",
            "google",
            "/gmail/v1/users/me/messages",
            params={"maxResults": 5},
            headers={"Accept": "application/json"},
        )
        broker.request("POST", "acme", "/files", base="upload", content=b"x")
    first, second = seen
    assert first.method == "GET"
    assert str(first.url) == f"{URL}/proxy/google/gmail/v1/users/me/messages?maxResults=5"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["Accept"] == "application/json"
    assert str(second.url) == f"{URL}/proxy/acme:upload/files"
    assert second.content == b"x"
    for request in seen:
        assert TOKEN not in str(request.url)
        others = [value for name, value in request.headers.items() if name != "authorization"]
        assert all(TOKEN not in value for value in others)


@pytest.mark.parametrize(
    ("provider", "path", "base"),
    [
        ("../admin", "/files", None),
        ("..", "/files", None),
        ("acme/../v1", "/files", None),
        ("Acme", "/files", None),
        ("-acme", "/files", None),
        ("", "/files", None),
        ("acme", "files", None),
        ("acme", "", None),
        ("acme", "/../../v1/agents", None),
        ("acme", "/a/%2e%2E/b", None),
        ("acme", "/a/./b", None),
        ("acme", "//evil.example/x", None),
        ("acme", "/a b", None),
        ("acme", "/a\r\nX-Injected: 1", None),
        ("acme", "/a#frag", None),
        ("acme", "/a\\b", None),
        ("acme", "/files", "../x"),
        ("acme", "/files", "a/b"),
    ],
)
def test_unsafe_urls_are_refused_before_sending(provider: str, path: str, base: str | None) -> None:
    seen: list[httpx.Request] = []
    broker = sync_broker(answering(httpx.Response(200), seen))
    with broker, pytest.raises(ValueError, match=r"(provider|path|base) must"):
        broker.request("GET", provider, path, base=base)
    assert seen == []


def test_proxy_url_keeps_queries_and_trailing_slashes() -> None:
    assert proxy_url(URL, "acme", "/") == f"{URL}/proxy/acme/"
    assert proxy_url(URL, "acme", "/items/?a=1") == f"{URL}/proxy/acme/items/?a=1"
    assert proxy_url(URL, "gitlab", "/projects/a%2Fb") == f"{URL}/proxy/gitlab/projects/a%2Fb"


def test_the_token_stays_in_the_authorization_header_only() -> None:
    with sync_broker(answering(httpx.Response(200))) as broker:
        assert TOKEN not in repr(broker)
        assert TOKEN not in str(broker)
        assert URL in repr(broker)
        with pytest.raises(ValueError, match="Authorization"):
            broker.request("GET", "acme", "/files", headers={"authorization": "Bearer other"})
    with pytest.raises(ValueError, match="token"):
        Broker(URL, "bad token\r\n")
    with pytest.raises(ValueError, match="broker URL"):
        Broker("ftp://broker.test", TOKEN)
    with pytest.raises(ValueError, match="broker URL"):
        Broker("http://user:pw@broker.test", TOKEN)


def test_redirects_are_not_followed() -> None:
    seen: list[httpx.Request] = []
    redirect = httpx.Response(302, headers={"Location": "https://evil.example/steal"})
    with sync_broker(answering(redirect, seen)) as broker:
        response = broker.request("GET", "acme", "/files")
    assert response.status_code == 302
    assert len(seen) == 1


# --- async -----------------------------------------------------------------------------------
def async_broker(handler: Handler) -> AsyncBroker:
    return AsyncBroker(URL, TOKEN, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
async def test_async_maps_every_code(code: str, status: int, cls: type[BrokerError]) -> None:
    async with async_broker(answering(broker_answer(code, status))) as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.request("GET", "acme", "/files")
    assert type(caught.value) is cls
    assert caught.value.code == code


async def test_async_passes_the_upstream_through_and_builds_the_url() -> None:
    seen: list[httpx.Request] = []
    async with async_broker(answering(httpx.Response(404, json={"x": 1}), seen)) as broker:
        assert TOKEN not in repr(broker)
        response = await broker.request("GET", "acme", "/missing", base="v2", params={"q": "a"})
        assert response.status_code == 404
        with pytest.raises(ValueError, match="path must"):
            await broker.request("GET", "acme", "/../v1/agents")
        with pytest.raises(ValueError, match="provider must"):
            await broker.request("GET", "../acme", "/files")
    assert [str(r.url) for r in seen] == [f"{URL}/proxy/acme:v2/missing?q=a"]
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_async_insufficient_grant_and_retry_after() -> None:
    answer = broker_answer(
        "insufficient_grant", 403, reason="scope", missing={"operation": None, "scopes": ["a"]}
    )
    broker = async_broker(answering(answer))
    with pytest.raises(InsufficientGrant) as caught:
        await broker.request("POST", "acme", "/files")
    await broker.close()
    assert (caught.value.missing_operation, caught.value.missing_scopes) == (None, ("a",))
    async with async_broker(answering(broker_answer("rate_limited", 429, retry_after=3))) as b:
        with pytest.raises(RateLimited) as limited:
            await b.request("GET", "acme", "/files")
    assert limited.value.retry_after == 3


# --- the example ------------------------------------------------------------------------------
def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_tool_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_tool_turns_errors_into_sentences() -> None:
    example = load_example()
    link = f"{URL}/connect/cs_1"
    answer = broker_answer("authorization_required", 403, authorization_url=link, reason="x")
    with sync_broker(answering(answer)) as broker:
        assert example.list_files(broker) == f"Please connect your Demo account: {link}"
    answer = broker_answer(
        "insufficient_grant", 403, reason="r", missing={"operation": None, "scopes": ["files:read"]}
    )
    with sync_broker(answering(answer)) as broker:
        assert "files:read" in example.list_files(broker)
    files = {"owner": "alice", "files": [{"name": "notes.txt"}]}
    seen: list[httpx.Request] = []
    with sync_broker(answering(httpx.Response(200, json=files), seen)) as broker:
        assert "notes.txt" in example.list_files(broker)
    assert str(seen[0].url) == f"{URL}/proxy/demo/files"


# --- against a real broker --------------------------------------------------------------------
async def test_the_example_runs_as_a_script_against_a_real_broker(
    tmp_path: Path, database_url: str
) -> None:
    """``python examples/agent_tool.py``: the user's files for a granted agent, the connect
    link as a sentence for a user who has not connected."""

    async def run(broker: str, token: str) -> str:
        argv = ["--broker", broker, "--token", token, "--provider", "acme"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), *argv, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        return out.decode()

    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        carol = await session(h, (await agent(h, "other-agent"))["id"], "carol")
        assert json.loads(await run(h.public_url, token))["owner"]
        asked = await run(h.public_url, carol)
        assert asked.startswith(f"Please connect your Demo account: {h.public_url}/connect/")


async def test_sync_client_against_a_real_broker(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        carol = await session(h, (await agent(h, "other-agent"))["id"], "carol")

        def calls() -> tuple[httpx.Response, BrokerError, BrokerError]:
            with Broker(h.public_url, token) as broker:
                listed = broker.request("GET", "acme", "/files")
                listed.read()
                try:
                    broker.request("POST", "acme", "/files", json={"name": "x"})
                except InsufficientGrant as exc:
                    beyond: BrokerError = exc
                else:
                    raise AssertionError("POST /files beyond the grant was not refused")
            with Broker(h.public_url, carol) as broker:
                try:
                    broker.request("GET", "acme", "/files")
                except AuthorizationRequired as exc:
                    return listed, beyond, exc
            raise AssertionError("carol has no connection yet was not refused")

        listed, beyond, needs = await asyncio.to_thread(calls)
        assert listed.status_code == 200
        assert listed.json()["files"]
        assert isinstance(beyond, InsufficientGrant)
        assert list(beyond.missing_scopes) == ["files:write"]
        assert isinstance(needs, AuthorizationRequired)
        assert needs.authorization_url is not None
        assert needs.authorization_url.startswith(h.public_url)


async def test_async_client_against_a_real_broker(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        carol = await session(h, (await agent(h, "other-agent"))["id"], "carol")
        async with AsyncBroker(h.public_url, token) as broker:
            listed = await broker.request("GET", "acme", "/files")
            assert listed.status_code == 200
            assert json.loads(listed.content)["files"]
            with pytest.raises(InsufficientGrant) as beyond:
                await broker.request("POST", "acme", "/files", json={"name": "x"})
            assert list(beyond.value.missing_scopes) == ["files:write"]
        async with AsyncBroker(h.public_url, "tbs.forged") as forged:
            with pytest.raises(InvalidToken):
                await forged.request("GET", "acme", "/files")
        async with AsyncBroker(h.public_url, carol) as broker:
            with pytest.raises(AuthorizationRequired) as needs:
                await broker.request("GET", "acme", "/files")
        assert needs.value.authorization_url is not None
        assert needs.value.authorization_url.startswith(f"{h.public_url}/connect/")
