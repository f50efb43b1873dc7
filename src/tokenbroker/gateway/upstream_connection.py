"""One keep-alive connection to an upstream and the answer in flight on it.

:class:`_Connection` is the asyncio protocol: it feeds the socket's bytes to llhttp
(``httptools``) and the parser's callbacks to the :class:`UpstreamResponse` of the request in
flight. The response buffers body pieces until the gateway reads them, pausing the socket past
a high-water mark, so a slow agent never makes the gateway hold a whole large answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol, cast

import httptools

from tokenbroker.errors import UpstreamError, UpstreamTimeout

Header = tuple[str, str]
MAX_HEAD_BYTES: Final = 64 * 1024  # status line and headers of one answer
HIGH_WATER: Final = 256 * 1024  # unread body bytes before reading from the socket pauses


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class Owner(Protocol):
    """The pool a connection returns to (or leaves when it closes)."""

    def put_back(self, connection: Connection) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class UpstreamResponse:
    """One answer: status, reason and headers at once; the body as it arrives."""

    def __init__(self, connection: Connection, method: str) -> None:
        self._connection = connection
        self.method = method
        self.status = 0
        self.reason = ""
        self.headers: list[Header] = []
        self.content_length: int | None = None
        self._delimited = False  # Content-Length or chunked: EOF before the end is truncation
        self._head_bytes = 0
        self._head: asyncio.Future[None] = connection.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self._error: BaseException | None = None
        self._released = False

    # --- fed by the connection ---------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason = reason.decode("latin-1")
        self._count(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self.headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise UpstreamError(f"the upstream's answer head exceeds {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self, status: int) -> None:
        if status < 200:  # 1xx interim answer (103 Early Hints): wait for the real one
            self.headers = []
            return
        self.status = status
        chunked = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length":
                self.content_length = int(value)
            elif lower == "transfer-encoding":
                chunked = True
        if chunked:
            self.content_length = None
        self._delimited = chunked or self.content_length is not None
        if self.method == "HEAD":
            self.complete = True  # a HEAD answer has no body, whatever its headers say
            self._connection.reusable = False
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:  # not an interim 1xx answer
            self.complete = True
            self._wake()

    def on_eof(self) -> None:
        if self.status and not self.complete and not self._delimited:
            self.complete = True  # the body ran until the connection closed (HTTP/1.0 style)
        elif not self.complete:
            self.fail(UpstreamError("the upstream closed the connection mid-answer"))
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting any more
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the gateway -----------------------------------------------------------------
    @property
    def untouched(self) -> bool:
        """Not a byte of an answer arrived (a closed idle connection, safe to retry)."""
        return self.status == 0 and self._head_bytes == 0

    async def head(self) -> None:
        await self._head

    @property
    def waiting(self) -> bool:
        """True while the answer is due from the upstream (read timeouts apply)."""
        return not self.complete and self._error is None and self._buffered <= HIGH_WATER

    async def _next(self) -> bytes | None:
        while not self._chunks:
            if self._error is not None:
                raise ConnectionResetError(str(self._error))
            if self.complete:
                return None
            self._waiter = self._connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= HIGH_WATER // 2:
            self._connection.resume_reading()
        return chunk

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def read(self) -> bytes:
        """The whole body (callers check ``content_length`` against their cap first)."""
        if self.complete and self._error is None:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            return data
        return b"".join([chunk async for chunk in self.iter_chunks()])

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool if it can."""
        if self._released:
            return
        self._released = True
        self._connection.finished(self, keep=self.complete and self._error is None)

    def close(self) -> None:
        """Done with this answer and its connection (e.g. a body over the size cap)."""
        if not self._released:
            self._released = True
            self._connection.finished(self, keep=False)


class Connection(asyncio.Protocol):
    def __init__(self, pool: Owner, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.used = 0
        self.last_activity = 0.0
        self.response: UpstreamResponse | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._paused = False
        self._write_ready: asyncio.Future[None] | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        parser, response = self._parser, self.response
        if parser is None or response is None or response.complete:
            self.reusable = False  # bytes nobody asked for: never reuse this connection
            self.abort()
            return
        try:
            parser.feed_data(data)
        except UpstreamError as exc:
            response.fail(exc)
            self.abort()
        except (httptools.HttpParserError, ValueError) as exc:
            response.fail(UpstreamError(f"the upstream's answer is not valid HTTP ({exc})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.response is not None:
            self.response.on_eof()
        waiter = self._write_ready
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._write_ready = self._write_ready, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        assert self.response is not None
        self.response.on_status(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.on_header(name, value)

    def on_headers_complete(self) -> None:
        assert self.response is not None
        assert self._parser is not None
        if not self._parser.should_keep_alive():
            self.reusable = False
        self.response.on_headers_complete(self._parser.get_status_code())

    def on_body(self, data: bytes) -> None:
        assert self.response is not None
        self.response.on_body(data)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.on_message_complete()

    # --- used by the pool and the response ---------------------------------------------------
    def start(self, method: str) -> UpstreamResponse:
        self.response = UpstreamResponse(self, method)
        self._parser = httptools.HttpResponseParser(self)
        self.used += 1
        self.last_activity = time.monotonic()
        return self.response

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the upstream closed the connection")
        waiter = self._write_ready
        if waiter is not None:
            await waiter

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.last_activity = time.monotonic()
            self.transport.resume_reading()

    def finished(self, response: UpstreamResponse, *, keep: bool) -> None:
        if response is not self.response:
            return
        self.response = None
        self._parser = None
        if keep and self.reusable and not self.closed:
            self.pool.put_back(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def timed_out(self) -> None:
        if self.response is not None:
            self.response.fail(UpstreamTimeout("the upstream API did not answer in time"))
        self.abort()
