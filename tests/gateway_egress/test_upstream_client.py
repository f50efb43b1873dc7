"""The gateway's own HTTP/1.1 client against scripted loopback servers (byte-level answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tokenbroker.errors import DestinationNotAllowed, UpstreamError, UpstreamTimeout
from tokenbroker.gateway.destination import GuardedResolver, policy
from tokenbroker.gateway.upstream import MAX_HEAD_BYTES, UpstreamPool

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server that runs ``script`` for each connection and keeps what it saw."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def pool(read_timeout: float = 5.0) -> UpstreamPool:
    resolver = GuardedResolver(policy(frozenset({"127.0.0.1"})))
    return UpstreamPool(resolver, connect_timeout=2, read_timeout=read_timeout)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamPool]:
    upstream = pool()
    yield upstream
    await upstream.close()


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
) -> None:
    while True:
        await server.head(reader)
        writer.write(OK)
        await writer.drain()


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head(
    client: UpstreamPool,
) -> None:
    async with Server(keep_answering) as server:
        for _ in range(3):
            answer = await client.request(
                "GET", server.base, "/files?q=1", [("Accept", "*/*")], None
            )
            assert (answer.status, answer.reason, await answer.read()) == (200, "OK", b"hello")
            assert ("Content-Type", "text/plain") in answer.headers
            answer.release()
    assert server.connections == 1
    assert (
        server.requests[0]
        == (
            f"GET /api/files?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAccept: */*\r\n\r\n"
        ).encode()
    )


async def test_chunked_and_connection_delimited_bodies(client: UpstreamPool) -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"0\r\n\r\n")

    async def until_close(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")

    async with Server(chunked) as server:
        answer = await client.request("GET", server.base, "/c", [], None)
        assert answer.content_length is None
        assert [c async for c in answer.iter_chunks()] == [b"abc", b"de"]
        answer.release()
    async with Server(until_close) as server:
        answer = await client.request("GET", server.base, "/e", [], None)
        assert await answer.read() == b"until the end"
        answer.release()


async def test_a_truncated_body_is_an_error_not_a_short_answer(client: UpstreamPool) -> None:
    async def short(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()

    async with Server(short) as server:
        answer = await client.request("GET", server.base, "/t", [], None)
        with pytest.raises(ConnectionResetError):
            await answer.read()
        answer.release()


async def test_head_answers_have_no_body_and_interim_answers_are_skipped(
    client: UpstreamPool,
) -> None:
    async def head_or_get(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            head = await s.head(r)
            w.write(OK[: OK.index(b"hello")] if head.startswith(b"HEAD") else OK)
            await w.drain()

    async def hints(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK)

    async with Server(head_or_get) as server:
        answer = await client.request("HEAD", server.base, "/h", [], None)
        assert (answer.status, answer.content_length, await answer.read()) == (200, 5, b"")
        answer.release()
        second = await client.request("GET", server.base, "/g", [], None)
        assert await second.read() == b"hello"
        second.release()
        assert server.connections == 2  # the HEAD answer's connection is not reused
    async with Server(hints) as server:
        answer = await client.request("GET", server.base, "/h", [], None)
        assert answer.status == 200
        assert [n for n, _ in answer.headers] == ["Content-Type", "Content-Length"]
        assert await answer.read() == b"hello"
        answer.release()


async def test_an_idle_connection_the_upstream_closed_is_retried_once_fresh(
    client: UpstreamPool,
) -> None:
    async def one_per_connection(
        r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.head(r)
        w.write(OK)
        await w.drain()
        await s.head(r)  # the second request arrives, and the server hangs up without answering

    async with Server(one_per_connection) as server:
        first = await client.request("GET", server.base, "/1", [], None)
        await first.read()
        first.release()
        second = await client.request("GET", server.base, "/2", [], None)
        assert await second.read() == b"hello"
        second.release()
    assert server.connections == 2


async def test_a_streamed_body_or_a_non_idempotent_request_is_never_retried(
    client: UpstreamPool,
) -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        if s.connections == 1:
            await s.head(r)
            w.write(OK)
            await w.drain()
        await s.head(r)

    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    async with Server(hang_up) as server:
        first = await client.request("GET", server.base, "/1", [], None)
        await first.read()
        first.release()
        with pytest.raises(UpstreamError):
            await client.request("PUT", server.base, "/2", [], body())
    assert server.connections == 1
    async with Server(hang_up) as server:
        first = await client.request("GET", server.base, "/1", [], None)
        await first.read()
        first.release()
        with pytest.raises(UpstreamError):  # RFC 9112 §9.3.1: POST is not retried
            await client.request("POST", server.base, "/2", [], b"{}")
    assert server.connections == 1


async def test_request_bodies_are_framed_by_the_client(client: UpstreamPool) -> None:
    async def echo_body(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            head = await s.head(r)
            if b"Transfer-Encoding: chunked" in head:
                data = b""
                while (size := int((await r.readline()).strip(), 16)) > 0:
                    data += await r.readexactly(size)
                    await r.readline()
                await r.readline()
            else:
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                data = await r.readexactly(length)
            s.bodies.append(data)
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await w.drain()

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"ab", b"", b"cd"):
            yield part

    async with Server(echo_body) as server:
        for body, length in ((b"small", None), (parts(), None), (parts(), 4)):
            answer = await client.request("PUT", server.base, "/b", [], body, body_length=length)
            assert answer.status == 204
            answer.release()
        with pytest.raises(UpstreamError, match="shorter than its Content-Length"):
            await client.request("PUT", server.base, "/b", [], parts(), body_length=9)
    assert server.bodies == [b"small", b"abcd", b"abcd"]
    assert b"Content-Length: 5\r\n" in server.requests[0]
    assert b"Transfer-Encoding: chunked\r\n" in server.requests[1]
    assert b"Content-Length: 4\r\n" in server.requests[2]


async def test_a_silent_upstream_times_out_and_a_closed_port_is_unreachable() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        await asyncio.sleep(30)

    upstream = pool(read_timeout=0.4)
    try:
        async with Server(silent) as server:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await upstream.request("GET", server.base, "/slow", [], None)
            assert time.monotonic() - started < 2.0
            port = server.port
        with pytest.raises(UpstreamError, match="could not be reached"):
            await upstream.request("GET", f"http://127.0.0.1:{port}", "/", [], None)
    finally:
        await upstream.close()


async def test_an_oversized_or_malformed_answer_head_is_an_upstream_error(
    client: UpstreamPool,
) -> None:
    async def huge(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n")

    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.head(r)
        w.write(b"<html>not http</html>\r\n\r\n")

    for script in (huge, garbage):
        async with Server(script) as server:
            with pytest.raises(UpstreamError):
                await client.request("GET", server.base, "/", [], None)


async def test_only_addresses_the_guard_allows_are_connected_to() -> None:
    connected = 0

    async def count(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        nonlocal connected
        connected += 1

    upstream = UpstreamPool(GuardedResolver(policy()), connect_timeout=2, read_timeout=2)
    try:
        async with Server(count) as server:
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(DestinationNotAllowed):
                    await upstream.request("GET", f"http://{host}:{server.port}", "/", [], None)
    finally:
        await upstream.close()
    assert connected == 0
