"""One ``/proxy/`` request on the lean front (:mod:`tokenbroker.gateway.front`): its head, its
body as it arrives (with back-pressure on the socket), and its answer on the wire.

The answer's head and a whole body go out in one write; a streamed body goes out as it comes,
with ``Content-Length`` framing when the upstream gave a length, else chunked (HTTP/1.1) or
close-delimited (HTTP/1.0). Writes wait while the socket's send buffer is full.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from http import HTTPStatus
from typing import Protocol

Header = tuple[str, str]
BODY_HIGH_WATER = 256 * 1024  # request body bytes buffered before the socket stops being read
NO_BODY_STATUS = frozenset({204, 304})
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class Carrier(Protocol):
    """What an exchange needs of its connection (``front.FrontConnection``)."""

    def send(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def pause_body(self) -> None: ...

    def resume_body(self) -> None: ...

    def exchange_ended(self, exchange: LeanExchange) -> None: ...


class _Clock:
    """``Date`` header values, formatted once a second."""

    second = -1
    text = ""

    @classmethod
    def http_date(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.text = email.utils.formatdate(now, usegmt=True)
            cls.second = now
        return cls.text


class LeanExchange:
    __slots__ = (
        "_body",
        "_buffered",
        "_carrier",
        "_chunked",
        "_complete",
        "_first",
        "_headers",
        "_lost",
        "_paused",
        "_waiter",
        "_whole",
        "content_length",
        "ended",
        "http11",
        "keep_alive",
        "method",
        "raw_path",
        "started",
    )

    def __init__(
        self,
        carrier: Carrier,
        method: str,
        raw_path: str,
        headers: list[Header],
        first: dict[str, str],
        *,
        content_length: int | None,
        http11: bool,
        keep_alive: bool,
    ) -> None:
        self._carrier = carrier
        self.method = method
        self.raw_path = raw_path
        self._headers = headers
        self._first = first
        self.content_length = content_length
        self.http11 = http11
        self.keep_alive = keep_alive
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._whole: tuple[int, str | None, list[Header], bytes] | None = None
        self._chunked = False
        self.started = False
        self.ended = False

    # --- the request -------------------------------------------------------------------------
    @property
    def body_exists(self) -> bool:
        if self.content_length is not None:
            return self.content_length > 0
        return "transfer-encoding" in self._first

    def header(self, name: str) -> str:
        return self._first.get(name.lower(), "")

    def header_items(self) -> Iterable[Header]:
        return self._headers

    def feed(self, data: bytes) -> None:
        if self.ended:
            return  # answered without reading its body: the connection closes after it
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_HIGH_WATER and not self._paused:
            self._paused = True
            self._carrier.pause_body()
        self._wake()

    def feed_eof(self) -> None:
        self._complete = True
        self._wake()

    def connection_lost(self) -> None:
        self._lost = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._body:
                data = self._body.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered <= BODY_HIGH_WATER // 2:
                    self._paused = False
                    self._carrier.resume_body()
                yield data
            elif self._complete:
                return
            elif self._lost:
                raise ConnectionResetError("the agent closed the connection")
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    # --- the answer --------------------------------------------------------------------------
    def respond(self, status: int, reason: str | None, headers: list[Header], body: bytes) -> None:
        if self.started:
            self._lost = True  # a streamed answer has begun: cut it short, nothing else fits
            return
        self._whole = (status, reason, headers, body)

    async def start(self, status: int, reason: str | None, headers: list[Header]) -> None:
        if self._lost:
            raise ConnectionResetError("the agent closed the connection")
        framed = self.method == "HEAD" or status in NO_BODY_STATUS or status < 200
        if not framed and not any(name.lower() == "content-length" for name, _ in headers):
            if self.http11:
                self._chunked = True
                headers = [*headers, ("Transfer-Encoding", "chunked")]
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        self.started = True
        self._carrier.send(self._head(status, reason, headers))

    async def write(self, chunk: bytes) -> None:
        if self._lost:
            raise ConnectionResetError("the agent closed the connection")
        if not chunk:
            return
        if self._chunked:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        self._carrier.send(chunk)
        await self._carrier.drain()

    async def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if not self._complete:
            self.keep_alive = False  # its body was not read: never parse the rest as requests
        whole = self._whole
        if self._lost:
            self.keep_alive = False
        elif whole is not None and not self.started:
            status, reason, headers, body = whole
            headers = [*headers, ("Content-Length", str(len(body)))]
            if self.method == "HEAD":
                body = b""
            self._carrier.send(self._head(status, reason, headers) + body)
        elif self._chunked:
            self._carrier.send(b"0\r\n\r\n")
        self._carrier.exchange_ended(self)

    def _head(self, status: int, reason: str | None, headers: list[Header]) -> bytes:
        phrase = reason if reason is not None else _REASONS.get(status, "")
        lines = [f"HTTP/1.1 {status} {phrase}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(f"Date: {_Clock.http_date()}\r\n")
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        elif not self.http11:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")
