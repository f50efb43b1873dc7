"""The broker's lean HTTP/1.1 front: ``/proxy/`` requests without aiohttp's machinery.

Measured with ``bench/gateway.py``: aiohttp's server (request and response objects, routing,
middlewares, its payload writer) cost about 30 µs of CPU per proxied request here, a fifth of
the gateway's whole cost. The front parses requests with llhttp (``httptools``, as the
gateway's upstream client does) and hands plain ``/proxy/`` requests to the gateway
(:class:`~tokenbroker.gateway.front_exchange.LeanExchange`); everything else is aiohttp's.

A connection whose request the front does not serve itself (any other path, an upgrade,
``Expect: 100-continue``, a head over the size limits, a request llhttp refuses) is handed to
aiohttp's own protocol with every byte of that request, so aiohttp answers it exactly as it
would have. A hand-over is exact only at a request that starts a read from the socket, which is
always the case for clients that wait for an answer before sending the next request; for a
pipelined request that cannot be handed over, the front answers what came before it and closes
the connection, and the client retries that request on a new one (RFC 9112 §9.3.2).

Pipelined ``/proxy/`` requests are answered in order, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from tokenbroker.gateway.exchange import Exchange
from tokenbroker.gateway.front_exchange import LeanExchange

log = logging.getLogger("tokenbroker.gateway")

Handler = Callable[[Exchange], Awaitable[None]]
PREFIX = b"/proxy/"
MAX_LINE = 8190  # aiohttp's limits for the request line and each header field
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024
MAX_PIPELINED = 8  # requests parsed ahead of their answers before the socket stops being read
KEEPALIVE_SECONDS = 75.0  # as aiohttp's


class _NotLean(Exception):
    """This request is aiohttp's: stop parsing and hand the connection over."""


class Front:
    """What every front connection of one listening socket shares."""

    def __init__(self, handler: Handler | None, aiohttp_protocol: Callable[[], Any]) -> None:
        self.handler = handler
        self.aiohttp_protocol = aiohttp_protocol
        self.connections: set[FrontConnection] = set()
        self.all_closed = asyncio.Event()

    def __call__(self) -> FrontConnection:
        return FrontConnection(self)

    def forget(self, connection: FrontConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self.all_closed.set()


class FrontConnection(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._data = b""  # the piece of the stream being parsed
        self._reads = 0  # pieces received so far
        self._ended_in = -1  # the piece in which the last request ended
        self._held: list[bytes] | None = None  # the current request's bytes, if it began a piece
        self._head_bytes = -1  # bytes received since the current head began; -1 between heads
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._current: LeanExchange | None = None  # receiving its body
        self._queue: deque[LeanExchange] = deque()  # parsed; the first is being answered
        self._closing = False
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.last_active = self._loop.time()

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._current is not None

    # --- the socket --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._front.connections.add(self)
        self._front.all_closed.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.forget(self)
        self._closing = True
        for exchange in self._queue:
            exchange.connection_lost()
        if self._current is not None:
            self._current.connection_lost()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._reads += 1
        self._data = data
        self.last_active = self._loop.time()
        if self._held is not None:
            self._held.append(data)
        try:
            self._parser.feed_data(data)
        except (_NotLean, httptools.HttpParserUpgrade):
            self._not_lean()  # (an upgrade is refused at its head already)
        except httptools.HttpParserError:
            if self._current is not None:
                self._current.connection_lost()  # a broken body: the request cannot complete
            self._not_lean()
        else:
            if self._head_bytes >= 0:
                # A head still incomplete after this piece. httptools gathers a header field
                # whole before passing it on, so the head is bounded here, by bytes received.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    self._not_lean()

    # --- llhttp's callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        self._head_size = 0
        self._head_bytes = 0
        # Exact only if no earlier request ended in this piece: then this one starts it.
        self._held = [self._data] if self._ended_in != self._reads else None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LINE:
            raise _NotLean

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))
        self._head_size += len(name) + len(value)
        if (
            len(name) > MAX_LINE
            or len(value) > MAX_LINE
            or len(self._fields) > MAX_HEADERS
            or self._head_size > MAX_HEAD
        ):
            raise _NotLean

    def on_headers_complete(self) -> None:
        parser = self._parser
        if (
            self._front.handler is None
            or not self._url.startswith(PREFIX)
            or parser.should_upgrade()
        ):
            raise _NotLean
        headers: list[tuple[str, str]] = []
        first: dict[str, str] = {}  # each name's first value, by its lowercase name
        for name, value in self._fields:
            key = name.decode("latin-1")
            text = value.decode("utf-8", "surrogateescape")
            headers.append((key, text))
            first.setdefault(key.lower(), text)
        if "expect" in first:
            raise _NotLean  # aiohttp answers 100-continue
        length = first.get("content-length")  # llhttp accepted it: digits only, one value
        self._held = None
        self._head_bytes = -1
        exchange = LeanExchange(
            self,
            parser.get_method().decode("ascii"),
            self._url.decode("utf-8", "surrogateescape"),
            headers,
            first,
            content_length=None if length is None else int(length),
            http11=parser.get_http_version() == "1.1",
            keep_alive=parser.should_keep_alive(),
        )
        self._current = exchange
        self._queue.append(exchange)
        if len(self._queue) == 1:
            self._answer(exchange)
        elif len(self._queue) > MAX_PIPELINED:
            self.pause_body()

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current.feed(body)

    def on_message_complete(self) -> None:
        self._ended_in = self._reads
        if self._current is not None:
            self._current.feed_eof()
            self._current = None

    # --- answering ---------------------------------------------------------------------------
    def _answer(self, exchange: LeanExchange) -> None:
        self._loop.create_task(self._run(exchange))

    async def _run(self, exchange: LeanExchange) -> None:
        handler = self._front.handler
        assert handler is not None
        try:
            await handler(exchange)
        except ConnectionResetError:
            pass  # the agent left, or the answer was cut short
        except Exception:
            log.exception("unexpected error answering a gateway request")
            if not exchange.started:
                exchange.respond(500, None, [("Content-Type", "text/plain")], b"internal error")
        if not exchange.ended:
            exchange.keep_alive = False
            with contextlib.suppress(ConnectionResetError):
                await exchange.end()

    def exchange_ended(self, exchange: LeanExchange) -> None:
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        self.last_active = self._loop.time()
        if not exchange.keep_alive:
            self.close()
        elif self._queue:
            if self._reading_paused and len(self._queue) <= MAX_PIPELINED:
                self.resume_body()
            self._answer(self._queue[0])
        elif self._closing:
            self.close()

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._writing_paused and self._transport is not None:
            self._drained = self._loop.create_future()
            await self._drained
            self._drained = None

    def pause_body(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_body(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        self._closing = True
        for exchange in self._queue:
            exchange.connection_lost()
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> None:
        """Shutting down: close now if idle, else after the answers under way."""
        self._closing = True
        if not self.busy:
            self.close()

    # --- handing over ------------------------------------------------------------------------
    def _not_lean(self) -> None:
        transport = self._transport
        held = self._held
        self._held = None
        self._closing = True  # this protocol parses nothing more
        if transport is None:
            return
        if held is None or self._queue:
            # Not at a request that began a read (pipelined): answer what came before, then
            # close; the client sends the rest again on a new connection.
            if not self._queue:
                transport.close()
            return
        self._front.forget(self)
        handler = self._front.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        handler.data_received(b"".join(held))
