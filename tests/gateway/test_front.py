"""The lean HTTP/1.1 front: ``/proxy/`` served without aiohttp, everything else handed to it.

Requests go over raw sockets so that keep-alive, pipelining, framing and hand-over are exactly
what the test says. Answers the front writes itself carry no ``Server`` header; aiohttp's
always do, which tells which of the two answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from agents import GATEWAY_CONFIG, ready
from harness import ADMIN_KEY, Harness, running

from tokenbroker.gateway import front_site

Answer = tuple[int, dict[str, str], bytes]


@asynccontextmanager
async def broker(tmp_path: Path) -> AsyncIterator[tuple[Harness, str]]:
    async with running(tmp_path, f"sqlite:///{tmp_path / 't.db'}", **GATEWAY_CONFIG) as h:
        token, _ = await ready(h)
        yield h, token


def request(
    method: str,
    target: str,
    token: str,
    *,
    body: bytes = b"",
    extra: str = "",
    version: str = "1.1",
) -> bytes:
    head = (
        f"{method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    )
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, headers, body


async def open_connection(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", h.broker_port)


def served_by_front(headers: dict[str, str]) -> bool:
    return "server" not in headers


async def ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: bytes
) -> tuple[int, bool]:
    """Send one request on the connection: its answer's status, and whether the front wrote it."""
    writer.write(sent)
    status, headers, _ = await read_answer(reader)
    return status, served_by_front(headers)


async def test_one_connection_carries_proxy_and_management_requests(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        assert await ask(reader, writer, request("GET", "/proxy/acme/files", token)) == (200, True)
        # Another path on the same connection: aiohttp answers it (the front hands over).
        assert await ask(reader, writer, request("GET", "/v1/agents", ADMIN_KEY)) == (200, False)
        # From then on aiohttp carries the connection, /proxy/ included, with the same result.
        assert await ask(reader, writer, request("GET", "/proxy/acme/files", token)) == (200, False)
        writer.close()


async def test_a_connection_that_starts_elsewhere_is_aiohttps(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        assert await ask(reader, writer, request("GET", "/healthz", "")) == (200, False)
        assert await ask(reader, writer, request("GET", "/proxy/acme/files", token)) == (200, False)
        writer.close()


async def test_pipelined_proxy_requests_are_answered_in_order(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        ids = [f"pipelined-{n}" for n in range(5)]
        writer.write(
            b"".join(
                request("GET", f"/proxy/acme/echo/{n}", token, extra=f"X-Request-ID: {n}\r\n")
                for n in ids
            )
        )
        for n in ids:
            status, headers, body = await read_answer(reader)
            assert status == 200
            assert served_by_front(headers)
            assert headers["x-request-id"] == n
            assert json.loads(body)["path"] == f"/echo/{n}"
        writer.close()


async def test_a_pipelined_request_for_aiohttp_closes_the_connection_after_the_rest(
    tmp_path: Path,
) -> None:
    """It cannot be handed over mid-read: what came before is answered, then the connection
    closes without an answer to it (the client sends it again on a new connection)."""
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        writer.write(request("GET", "/proxy/acme/files", token) + request("GET", "/healthz", ""))
        status, headers, _ = await read_answer(reader)
        assert status == 200
        assert served_by_front(headers)
        assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize("hand_over_first", [False, True], ids=["front", "aiohttp"])
async def test_a_small_body_that_arrives_in_pieces_is_forwarded_whole(
    tmp_path: Path, hand_over_first: bool
) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        if hand_over_first:
            writer.write(request("GET", "/healthz", ""))
            await read_answer(reader)
        body = b"x" * 3000
        sent = request("POST", "/proxy/acme/echo/pieces", token, body=body)
        writer.write(sent[:-2000])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(sent[-2000:])
        status, headers, answer = await read_answer(reader)
        assert status == 200, answer
        assert served_by_front(headers) is not hand_over_first
        assert json.loads(answer)["body_length"] == 3000
        writer.close()


async def test_a_chunked_request_body_streams_to_the_upstream(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        head = request(
            "POST", "/proxy/acme/echo/chunked", token, extra="Transfer-Encoding: chunked\r\n"
        )
        writer.write(head + b"5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        status, headers, answer = await read_answer(reader)
        assert status == 200, answer
        assert served_by_front(headers), answer
        assert json.loads(answer)["body_length"] == 11
        writer.close()


async def test_an_http_1_0_client_gets_its_answer_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        writer.write(request("GET", "/proxy/acme/files", token, version="1.0"))
        status, headers, _ = await read_answer(reader)
        assert status == 200
        assert served_by_front(headers)
        assert headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()


async def test_connection_close_from_the_agent_is_honoured(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        writer.write(request("GET", "/proxy/acme/files", token, extra="Connection: close\r\n"))
        status, headers, _ = await read_answer(reader)
        assert status == 200
        assert headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize(
    "extra",
    [
        "Bad Header Without Colon\r\n",  # llhttp refuses it
        f"X-Big: {'a' * 9000}\r\n",  # over the front's field limit
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",  # a smuggling attempt
    ],
    ids=["malformed", "oversized", "cl-and-te"],
)
async def test_requests_the_front_does_not_take_get_aiohttps_answer(
    tmp_path: Path, extra: str
) -> None:
    """Handed over with every byte, so aiohttp refuses them as it always has (and nothing is
    forwarded)."""
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        writer.write(request("GET", "/proxy/acme/files", token, extra=extra))
        status, headers, _ = await read_answer(reader)
        assert 400 <= status < 500
        assert not served_by_front(headers)
        writer.close()


async def test_a_header_that_never_ends_is_handed_over_within_the_head_limit(
    tmp_path: Path,
) -> None:
    """httptools holds a header field until its end: the front bounds the head by the bytes
    received and hands the request to aiohttp, whose limits end the connection (without the
    bound, the front would hold the field forever and never answer)."""
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        head = request("GET", "/proxy/acme/files", token).removesuffix(b"\r\n")
        writer.write(head + b"X-Long: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(20):
                writer.write(b"a" * 8192)
                await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            answer = b""
        # aiohttp's refusal (it answers a request it could not parse as HTTP/1.0) or its reset.
        assert answer == b"" or answer.startswith(b"HTTP/1.0 400 ")
        assert answer == b"" or b"Server:" in answer
        writer.close()


async def test_expect_100_continue_is_aiohttps(tmp_path: Path) -> None:
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        body = b'{"a": 1}'
        head = request("POST", "/proxy/acme/echo/expect", token, extra="Expect: 100-continue\r\n")
        writer.write(head.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(body)
        status, headers, answer = await read_answer(reader)
        assert status == 200
        assert not served_by_front(headers)
        assert json.loads(answer)["body_length"] == len(body)
        writer.close()


async def test_a_refusal_before_the_body_is_read_closes_the_connection(tmp_path: Path) -> None:
    """The agent's unread body must never be parsed as further requests."""
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        smuggled = request("GET", "/proxy/acme/files", token)
        head = request("POST", "/proxy/acme/files", "not-a-session-token")
        head = head.replace(
            b"\r\n\r\n", f"\r\nContent-Length: {len(smuggled) + 100}\r\n\r\n".encode()
        )
        writer.write(head)
        status, headers, _ = await read_answer(reader)
        assert status == 401
        assert served_by_front(headers)
        assert headers["connection"] == "close"
        writer.write(smuggled)
        assert await reader.read() == b""
        writer.close()


async def test_idle_keep_alive_connections_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_site, "KEEPALIVE_SECONDS", 0.5)
    async with broker(tmp_path) as (h, token):
        reader, writer = await open_connection(h)
        writer.write(request("GET", "/proxy/acme/files", token))
        status, headers, _ = await read_answer(reader)
        assert status == 200
        assert served_by_front(headers)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
