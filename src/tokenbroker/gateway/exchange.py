"""What the gateway needs of one HTTP exchange, whichever server carries it.

Two servers carry ``/proxy/`` requests: the broker's lean HTTP/1.1 front
(:mod:`tokenbroker.gateway.front`), which serves them without aiohttp's request and response
machinery, and aiohttp itself (:class:`AiohttpExchange`) for connections the front handed over
and for applications embedding the broker. The gateway reads the request and answers through
this interface only.

An answer is either whole (:meth:`Exchange.respond`, sent by :meth:`Exchange.end`, so that the
audit record of a request precedes the last byte of its answer) or streamed
(:meth:`Exchange.start`, :meth:`Exchange.write`, then :meth:`Exchange.end`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from aiohttp import web

Header = tuple[str, str]


class Exchange(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str:
        """The request target as sent (path and query, nothing decoded)."""
        ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def body_exists(self) -> bool: ...

    def header(self, name: str) -> str:
        """The first value of header ``name`` (any case), or ``""``."""
        ...

    def header_items(self) -> Iterable[Header]: ...

    async def read_all(self) -> bytes:
        """The whole request body (callers check its declared length first)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The request body, piece by piece as it arrives."""
        ...

    def respond(self, status: int, reason: str | None, headers: list[Header], body: bytes) -> None:
        """Set a whole answer; :meth:`end` sends it."""
        ...

    async def start(self, status: int, reason: str | None, headers: list[Header]) -> None:
        """Send a streamed answer's head."""
        ...

    async def write(self, chunk: bytes) -> None: ...

    async def end(self) -> None:
        """Send the whole answer, or finish the streamed one."""
        ...


class AiohttpExchange:
    """An exchange carried by aiohttp: the route handler returns :attr:`response`."""

    __slots__ = ("_request", "_streamed", "response")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._streamed: web.StreamResponse | None = None
        self.response: web.StreamResponse | None = None

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def raw_path(self) -> str:
        return self._request.raw_path

    @property
    def content_length(self) -> int | None:
        return self._request.content_length

    @property
    def body_exists(self) -> bool:
        return self._request.body_exists

    def header(self, name: str) -> str:
        return self._request.headers.get(name, "")

    def header_items(self) -> Iterable[Header]:
        return self._request.headers.items()

    async def read_all(self) -> bytes:
        return await self._request.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.content.iter_any():
            yield chunk

    def respond(self, status: int, reason: str | None, headers: list[Header], body: bytes) -> None:
        if self._streamed is not None:
            # A streamed answer has begun: no other can follow; the agent sees it cut short.
            if self._request.transport is not None:
                self._request.transport.close()
            return
        response = web.Response(status=status, reason=reason, body=body)
        for name, value in headers:
            response.headers.add(name, value)
        self.response = response

    async def start(self, status: int, reason: str | None, headers: list[Header]) -> None:
        response = web.StreamResponse(status=status, reason=reason)
        for name, value in headers:
            response.headers.add(name, value)
        await response.prepare(self._request)
        self.response = self._streamed = response

    async def write(self, chunk: bytes) -> None:
        assert self._streamed is not None
        await self._streamed.write(chunk)

    async def end(self) -> None:
        if self._streamed is not None:
            await self._streamed.write_eof()
