"""ProviderRegistry discovery, JwksCache refetch rules and Transport limits, against loopback
aiohttp servers that count the requests they receive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tokenbroker.config import ProviderSection
from tokenbroker.errors import DiscoveryError, ProviderUnavailable, UnknownProvider
from tokenbroker.protocol.request import PreparedRequest
from tokenbroker.providers.jwks import JwksCache
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.providers.registry import ProviderRegistry
from tokenbroker.secret import Secret
from tokenbroker.transport import MAX_BODY, Transport

OIDC = "/.well-known/openid-configuration"
OAUTH = "/.well-known/oauth-authorization-server"
CANARY = "canary-BODY-SECRET-d41d8cd98f"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """A loopback HTTP server with per-path handlers and a request counter."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.routes: dict[str, Handler] = {}
        self.server: TestServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not found")
        return await handler(request)

    def json(self, path: str, doc: Any, status: int = 200) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response(doc, status=status)

        self.routes[path] = handler

    def raw(self, path: str, body: bytes, status: int = 200, ctype: str = "text/html") -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=status, body=body, content_type=ctype)

        self.routes[path] = handler

    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    s = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s._dispatch)
    s.server = TestServer(app, host="127.0.0.1")
    await s.server.start_server()
    try:
        yield s
    finally:
        await s.server.close()


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    t = Transport(timeout_seconds=5)
    try:
        yield t
    finally:
        await t.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def metadata(issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "code_challenge_methods_supported": ["S256"],
        **extra,
    }


def discovered(name: str, issuer: str, secret: Secret | None = None) -> ProviderSection:
    return ProviderSection(
        name,
        {"client_id": f"{name}-client", "issuer": issuer, "allow_insecure_loopback": True},
        secret,
    )


def registry(transport: Transport, *sections: ProviderSection, **kw: Any) -> ProviderRegistry:
    return ProviderRegistry({s.name: s for s in sections}, transport, **kw)


# --- ProviderRegistry ---------------------------------------------------------------------


async def test_discovery_fetched_once_and_cached(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base))
    reg = registry(transport, discovered("acme", stub.base, Secret("s")))
    spec = await reg.get("acme")
    assert isinstance(spec, ProviderSpec)
    assert spec.authorization_endpoint == f"{stub.base}/authorize"
    assert spec.token_endpoint == f"{stub.base}/token"
    assert spec.jwks_uri == f"{stub.base}/jwks"
    assert spec.client_id == "acme-client"
    assert stub.hits[OIDC] == 1
    again = await reg.get("acme")
    assert again is spec
    assert stub.total() == 1


async def test_concurrent_gets_discover_once(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base))
    reg = registry(transport, discovered("acme", stub.base))
    specs = await asyncio.gather(*(reg.get("acme") for _ in range(5)))
    assert all(s is specs[0] for s in specs)
    assert stub.total() == 1


async def test_discovery_refetched_after_ttl(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base))
    reg = registry(transport, discovered("acme", stub.base), metadata_ttl=0.0)
    await reg.get("acme")
    await reg.get("acme")
    assert stub.hits[OIDC] == 2


async def test_last_good_metadata_kept_when_refresh_fails(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base))
    reg = registry(transport, discovered("acme", stub.base), metadata_ttl=0.0)
    first = await reg.get("acme")
    stub.raw(OIDC, b"boom", status=500)
    assert await reg.get("acme") is first
    assert stub.hits[OIDC] == 2


async def test_falls_back_to_rfc8414_document(stub: Stub, transport: Transport) -> None:
    stub.json(OAUTH, metadata(stub.base))
    spec = await registry(transport, discovered("acme", stub.base)).get("acme")
    assert spec.token_endpoint == f"{stub.base}/token"
    assert stub.hits[OIDC] == 1
    assert stub.hits[OAUTH] == 1


async def test_both_documents_missing(stub: Stub, transport: Transport) -> None:
    with pytest.raises(DiscoveryError, match=r"'acme'.*404"):
        await registry(transport, discovered("acme", stub.base)).get("acme")


async def test_issuer_with_trailing_slash_in_document_is_refused(
    stub: Stub, transport: Transport
) -> None:
    stub.json(OIDC, metadata(stub.base) | {"issuer": stub.base + "/"})
    with pytest.raises(DiscoveryError) as info:
        await registry(transport, discovered("acme", stub.base)).get("acme")
    assert "'acme'" in info.value.message
    assert "issuer" in info.value.message


async def test_configured_trailing_slash_differs_from_document(
    stub: Stub, transport: Transport
) -> None:
    stub.json(OIDC, metadata(stub.base))
    with pytest.raises(DiscoveryError, match="'acme'"):
        await registry(transport, discovered("acme", stub.base + "/")).get("acme")


async def test_other_issuer_in_document_is_refused(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base) | {"issuer": "https://evil.example.com"})
    with pytest.raises(DiscoveryError, match=r"'acme'.*issuer"):
        await registry(transport, discovered("acme", stub.base)).get("acme")


async def test_failed_discovery_is_not_cached(stub: Stub, transport: Transport) -> None:
    stub.json(OIDC, metadata(stub.base) | {"issuer": "https://evil.example.com"})
    reg = registry(transport, discovered("acme", stub.base))
    with pytest.raises(DiscoveryError):
        await reg.get("acme")
    stub.json(OIDC, metadata(stub.base))
    spec = await reg.get("acme")
    assert spec.issuer == stub.base
    assert stub.hits[OIDC] == 2


async def test_unreachable_issuer_names_the_provider(transport: Transport) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DiscoveryError) as info:
        await registry(transport, discovered("down-idp", issuer)).get("down-idp")
    assert "'down-idp'" in info.value.message


async def test_server_error_is_discovery_error(stub: Stub, transport: Transport) -> None:
    stub.raw(OIDC, b"oops", status=500)
    with pytest.raises(DiscoveryError) as info:
        await registry(transport, discovered("acme", stub.base)).get("acme")
    assert "'acme'" in info.value.message
    assert "500" in info.value.message


async def test_non_json_is_discovery_error(stub: Stub, transport: Transport) -> None:
    stub.raw(OIDC, b"<html>login</html>")
    with pytest.raises(DiscoveryError, match=r"'acme'.*not JSON"):
        await registry(transport, discovered("acme", stub.base)).get("acme")


async def test_json_that_is_not_an_object_is_discovery_error(
    stub: Stub, transport: Transport
) -> None:
    stub.json(OIDC, ["not", "an", "object"])
    with pytest.raises(DiscoveryError, match="'acme'"):
        await registry(transport, discovered("acme", stub.base)).get("acme")


async def test_insecure_issuer_without_opt_in_is_discovery_error(
    stub: Stub, transport: Transport
) -> None:
    section = ProviderSection("acme", {"client_id": "c", "issuer": stub.base}, None)
    with pytest.raises(DiscoveryError, match="'acme'"):
        await registry(transport, section).get("acme")
    assert stub.total() == 0


async def test_template_provider_resolves_without_network() -> None:
    class NoNetwork(Transport):
        async def _call(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no network expected")

    section = ProviderSection(
        "github", {"template": "github", "client_id": "x"}, Secret("gh-secret")
    )
    reg = registry(NoNetwork(), section)
    spec = await reg.get("github")
    assert spec.template == "github"
    assert spec.client_id == "x"
    assert spec.authorization_endpoint.startswith("https://")
    assert spec.client_secret == Secret("gh-secret")


async def test_explicit_endpoints_skip_discovery(stub: Stub, transport: Transport) -> None:
    section = ProviderSection(
        "manual",
        {
            "client_id": "c",
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": "https://idp.example.com/token",
        },
        None,
    )
    spec = await registry(transport, section).get("manual")
    assert spec.token_endpoint == "https://idp.example.com/token"


async def test_unknown_provider(transport: Transport) -> None:
    reg = registry(transport)
    assert not reg.has("nope")
    with pytest.raises(UnknownProvider):
        await reg.get("nope")


async def test_resolve_all_returns_errors_instead_of_raising(
    stub: Stub, transport: Transport
) -> None:
    stub.json(OIDC, metadata(stub.base))
    down = f"http://127.0.0.1:{free_port()}"
    reg = registry(
        transport,
        discovered("good", stub.base),
        discovered("broken", down),
        ProviderSection("github", {"template": "github", "client_id": "x"}, None),
    )
    assert reg.names() == ["broken", "github", "good"]
    results = await reg.resolve_all()
    assert set(results) == {"good", "broken", "github"}
    assert isinstance(results["good"], ProviderSpec)
    assert isinstance(results["github"], ProviderSpec)
    broken = results["broken"]
    assert isinstance(broken, DiscoveryError)
    assert "'broken'" in broken.message


# --- JwksCache ----------------------------------------------------------------------------


def jwks_doc(*kids: str) -> dict[str, Any]:
    return {"keys": [{"kty": "oct", "kid": kid, "k": "AAAA"} for kid in kids]}


async def test_jwks_fetched_once(stub: Stub, transport: Transport) -> None:
    stub.json("/jwks", jwks_doc("k1"))
    cache = JwksCache(transport)
    uri = f"{stub.base}/jwks"
    first = await cache.get(uri, provider="acme", kid="k1")
    assert [k["kid"] for k in first["keys"]] == ["k1"]
    await cache.get(uri, provider="acme", kid="k1")
    await cache.get(uri, provider="acme", kid=None)
    assert stub.hits["/jwks"] == 1


async def test_unknown_kid_refetches_once_then_waits(stub: Stub, transport: Transport) -> None:
    stub.json("/jwks", jwks_doc("k1"))
    cache = JwksCache(transport, refetch_interval=0.0)
    uri = f"{stub.base}/jwks"
    await cache.get(uri, provider="acme", kid="k1")
    stub.json("/jwks", jwks_doc("k1", "k2"))
    rotated = await cache.get(uri, provider="acme", kid="k2")
    assert {k["kid"] for k in rotated["keys"]} == {"k1", "k2"}
    assert stub.hits["/jwks"] == 2
    # k2 is now known: no further fetch
    await cache.get(uri, provider="acme", kid="k2")
    assert stub.hits["/jwks"] == 2


async def test_second_unknown_kid_within_interval_does_not_refetch(
    stub: Stub, transport: Transport
) -> None:
    stub.json("/jwks", jwks_doc("k1"))
    cache = JwksCache(transport, refetch_interval=3600.0)
    uri = f"{stub.base}/jwks"
    await cache.get(uri, provider="acme", kid="k1")
    doc = await cache.get(uri, provider="acme", kid="unknown-1")
    doc2 = await cache.get(uri, provider="acme", kid="unknown-2")
    assert [k["kid"] for k in doc["keys"]] == ["k1"]
    assert doc2 is doc
    assert stub.hits["/jwks"] == 1


async def test_default_interval_is_a_minute(stub: Stub, transport: Transport) -> None:
    stub.json("/jwks", jwks_doc("k1"))
    cache = JwksCache(transport)
    uri = f"{stub.base}/jwks"
    await cache.get(uri, provider="acme", kid="k1")
    await cache.get(uri, provider="acme", kid="k-new")
    await cache.get(uri, provider="acme", kid="k-newer")
    assert stub.hits["/jwks"] == 1


async def test_unknown_kid_after_interval_refetches(stub: Stub, transport: Transport) -> None:
    stub.json("/jwks", jwks_doc("k1"))
    cache = JwksCache(transport, refetch_interval=0.2)
    uri = f"{stub.base}/jwks"
    await cache.get(uri, provider="acme", kid="k1")
    await cache.get(uri, provider="acme", kid="missing")
    assert stub.hits["/jwks"] == 1
    await asyncio.sleep(0.3)
    await cache.get(uri, provider="acme", kid="missing")
    assert stub.hits["/jwks"] == 2
    # the refetch restarted the interval
    await cache.get(uri, provider="acme", kid="missing-again")
    assert stub.hits["/jwks"] == 2


async def test_jwks_cached_per_uri(stub: Stub, transport: Transport) -> None:
    stub.json("/a", jwks_doc("a1"))
    stub.json("/b", jwks_doc("b1"))
    cache = JwksCache(transport)
    a = await cache.get(f"{stub.base}/a", provider="a", kid="a1")
    b = await cache.get(f"{stub.base}/b", provider="b", kid="b1")
    assert a["keys"][0]["kid"] == "a1"
    assert b["keys"][0]["kid"] == "b1"
    assert stub.hits["/a"] == 1
    assert stub.hits["/b"] == 1


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        (b"{}", 200, "has no keys"),
        (b'{"keys": {}}', 200, "has no keys"),
        (b"not json", 200, "not JSON"),
        (b'{"keys": []}', 503, "503"),
    ],
)
async def test_bad_jwks_is_discovery_error(
    stub: Stub, transport: Transport, body: bytes, status: int, match: str
) -> None:
    stub.raw("/jwks", body, status=status, ctype="application/json")
    with pytest.raises(DiscoveryError, match=match) as info:
        await JwksCache(transport).get(f"{stub.base}/jwks", provider="acme", kid="k1")
    assert "'acme'" in info.value.message


async def test_unreachable_jwks_is_discovery_error(transport: Transport) -> None:
    uri = f"http://127.0.0.1:{free_port()}/jwks"
    with pytest.raises(DiscoveryError, match="'acme'"):
        await JwksCache(transport).get(uri, provider="acme", kid=None)


# --- Transport ----------------------------------------------------------------------------


async def test_redirect_is_not_followed(stub: Stub, transport: Transport) -> None:
    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/target"})

    stub.routes["/start"] = redirect
    stub.json("/target", {"reached": True})
    resp = await transport.get(f"{stub.base}/start", provider="acme")
    assert resp.status == 302
    assert resp.headers["Location"] == "/target"
    assert stub.hits["/target"] == 0


async def test_post_redirect_is_not_followed(stub: Stub, transport: Transport) -> None:
    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    stub.routes["/token"] = redirect
    request = PreparedRequest(
        url=f"{stub.base}/token",
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        body=f"client_secret={CANARY}",
    )
    resp = await transport.send(request, provider="acme")
    assert resp.status == 307
    assert stub.hits["/elsewhere"] == 0


async def test_get_returns_status_headers_and_body(stub: Stub, transport: Transport) -> None:
    seen: dict[str, str] = {}

    async def echo(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.json_response({"ok": True}, status=201)

    stub.routes["/echo"] = echo
    resp = await transport.get(f"{stub.base}/echo", provider="acme", headers={"X-Test": "1"})
    assert resp.status == 201
    assert resp.content_type == "application/json"
    assert json.loads(resp.body) == {"ok": True}
    assert seen["Accept"] == "application/json"
    assert seen["X-Test"] == "1"
    assert seen["User-Agent"].startswith("tokenbroker/")


async def test_body_exactly_one_mib_is_accepted(stub: Stub, transport: Transport) -> None:
    stub.raw("/big", b"a" * MAX_BODY)
    resp = await transport.get(f"{stub.base}/big", provider="acme")
    assert len(resp.body) == MAX_BODY


async def test_body_over_one_mib_raises(stub: Stub, transport: Transport) -> None:
    stub.raw("/huge", b"a" * (MAX_BODY + 1))
    with pytest.raises(ProviderUnavailable, match="1 MiB"):
        await transport.get(f"{stub.base}/huge", provider="acme")


async def test_streamed_body_over_one_mib_raises(stub: Stub, transport: Transport) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(40):  # 2.5 MiB, chunked, no Content-Length
                await resp.write(chunk)
        except ConnectionError:
            pass
        return resp

    stub.routes["/stream"] = stream
    with pytest.raises(ProviderUnavailable):
        await transport.get(f"{stub.base}/stream", provider="acme")


async def test_oversized_discovery_document_is_discovery_error(
    stub: Stub, transport: Transport
) -> None:
    stub.raw(OIDC, b" " * (MAX_BODY + 10), ctype="application/json")
    with pytest.raises(DiscoveryError, match="'acme'"):
        await registry(transport, discovered("acme", stub.base)).get("acme")


async def test_slow_server_times_out_naming_provider_without_body(stub: Stub) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=5)
        return web.json_response({})

    stub.routes["/token"] = slow
    transport = Transport(timeout_seconds=0.3)
    request = PreparedRequest(
        url=f"{stub.base}/token",
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        body=f"grant_type=refresh_token&refresh_token={CANARY}",
    )
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await transport.send(request, provider="slow-idp")
    finally:
        release.set()
        await transport.close()
    text = str(info.value)
    assert "'slow-idp'" in text
    assert "time" in text
    assert CANARY not in text
    assert CANARY not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


async def test_per_call_timeout_overrides_default(stub: Stub, transport: Transport) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=5)
        return web.json_response({})

    stub.routes["/slow"] = slow
    try:
        with pytest.raises(ProviderUnavailable, match="'acme'"):
            await transport.get(f"{stub.base}/slow", provider="acme", timeout=0.2)
    finally:
        release.set()


async def test_connection_refused_is_provider_unavailable(transport: Transport) -> None:
    url = f"http://127.0.0.1:{free_port()}/token"
    request = PreparedRequest(url=url, headers=(), body=f"code={CANARY}")
    with pytest.raises(ProviderUnavailable) as info:
        await transport.send(request, provider="acme")
    assert "'acme'" in info.value.message
    assert CANARY not in str(info.value)


async def test_transport_session_reopens_after_close(stub: Stub, transport: Transport) -> None:
    stub.json("/ok", {"ok": True})
    assert (await transport.get(f"{stub.base}/ok", provider="acme")).status == 200
    await transport.close()
    assert (await transport.get(f"{stub.base}/ok", provider="acme")).status == 200
