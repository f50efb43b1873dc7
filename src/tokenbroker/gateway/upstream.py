"""The gateway's HTTP/1.1 client for upstream APIs: keep-alive connections, nothing else.

Chosen by measurement (``bench/gateway.py``): aiohttp's ``ClientSession`` cost about 60 µs of
CPU per proxied request here (per-request timers, tracing hooks, cookie, proxy and redirect
machinery the gateway never uses), more than the rest of the gateway together. This client
writes the request head in one buffer and parses the answer with llhttp (``httptools``, the
parser uvicorn uses); it never follows redirects, never decompresses and keeps no cookies.

Security: a connection goes only to an address the SSRF guard's resolver returned (the checked
address is the one connected to: DNS pinning, SECURITY.md D2); TLS verifies the certificate
against the host name. Header names and values were validated by the header allowlist.

Timeouts: connecting is bounded by ``connect``; waiting for the upstream (the answer's head or
the next piece of its body) by ``read``, checked by one sweeper task instead of a timer per
request. A pooled connection that the upstream closed while idle is retried once on a fresh
connection when the request can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from tokenbroker.errors import DestinationNotAllowed, UpstreamError, UpstreamTimeout
from tokenbroker.gateway.upstream_connection import (
    MAX_HEAD_BYTES,
    Connection,
    Header,
    Origin,
    UpstreamResponse,
)

__all__ = ["MAX_HEAD_BYTES", "Origin", "UpstreamPool", "UpstreamResponse", "split_origin"]

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DNS_TTL: Final = 60.0


def split_origin(base_url: str) -> tuple[Origin, str]:
    """``https://api.example.com:8443/v1`` -> (origin, ``/v1``)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError("the provider's API base is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port), parts.path.rstrip("/")


BodySource = bytes | AsyncIterator[bytes] | None


class UpstreamPool:
    """Keep-alive connections per origin, connected only through ``resolver``."""

    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_per_origin: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_per_origin = max_per_origin
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[Origin, list[Connection]] = {}
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._active: set[Connection] = set()
        self._origins: dict[str, tuple[Origin, str]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[tuple[str, int, int]]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def origin(self, base_url: str) -> tuple[Origin, str]:
        found = self._origins.get(base_url)
        if found is None:
            if len(self._origins) > 10_000:
                self._origins.clear()
            found = self._origins[base_url] = split_origin(base_url)
        return found

    async def request(
        self,
        method: str,
        base_url: str,
        target: str,
        headers: list[Header],
        body: BodySource,
        *,
        body_length: int | None = None,
    ) -> UpstreamResponse:
        """Send ``method`` ``target`` (path and query, after the base URL's own path) and
        return once the answer's head has arrived. ``headers`` must not include ``Host`` or
        message framing (Content-Length, Transfer-Encoding): they are set here."""
        origin, base_path = self.origin(base_url)
        slot = self._slots.get(origin)
        if slot is None:
            slot = self._slots[origin] = asyncio.Semaphore(self._max_per_origin)
        head = self._head(method, origin, base_path + target, headers, body, body_length)
        await slot.acquire()
        try:
            for attempt in (1, 2):
                connection = await self._connection(origin, fresh=attempt == 2)
                reused = connection.used > 0
                response = connection.start(method)
                self._active.add(connection)
                try:
                    await self._send(connection, head, body, body_length)
                    await response.head()
                    return response
                except (UpstreamError, ConnectionResetError) as exc:
                    connection.abort()
                    # RFC 9112 §9.3.1: only idempotent requests are retried automatically (the
                    # upstream may have acted on a request before it closed the connection).
                    replayable = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
                    if attempt == 1 and reused and response.untouched and replayable:
                        continue  # the upstream closed an idle connection: once more, fresh
                    if isinstance(exc, UpstreamError):
                        raise
                    raise UpstreamError(
                        "the upstream closed the connection before answering"
                    ) from None
                except BaseException:
                    connection.abort()  # e.g. the agent's body over the limit, a timeout
                    raise
            raise AssertionError("unreachable")
        finally:
            slot.release()

    @staticmethod
    def _head(
        method: str,
        origin: Origin,
        target: str,
        headers: list[Header],
        body: BodySource,
        body_length: int | None,
    ) -> bytes:
        lines = [f"{method} {target or '/'} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if isinstance(body, bytes):
            if body or method not in ("GET", "HEAD", "OPTIONS", "TRACE", "DELETE"):
                lines.append(f"Content-Length: {len(body)}\r\n")
        elif body is not None:
            if body_length is not None:
                lines.append(f"Content-Length: {body_length}\r\n")
            else:
                lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    async def _send(
        self, connection: Connection, head: bytes, body: BodySource, body_length: int | None
    ) -> None:
        if body is None or isinstance(body, bytes):
            connection.write(head + body if body else head)
            return
        connection.write(head)
        sent = 0
        async for chunk in body:
            if not chunk:
                continue
            sent += len(chunk)
            if body_length is None:
                connection.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            elif sent > body_length:
                connection.reusable = False
                raise UpstreamError("the request body is longer than its Content-Length")
            else:
                connection.write(chunk)
            await connection.drain()
        if body_length is None:
            connection.write(b"0\r\n\r\n")
        elif sent != body_length:
            connection.reusable = False
            raise UpstreamError("the request body is shorter than its Content-Length")
        connection.last_activity = time.monotonic()

    async def _connection(self, origin: Origin, *, fresh: bool) -> Connection:
        if self._closed:
            raise UpstreamError("the gateway is shutting down")
        idle = self._idle.get(origin)
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed:
                return connection
        self._start_sweeper()
        return await self._connect(origin)

    async def _connect(self, origin: Origin) -> Connection:
        addresses = await self._resolve(origin)
        tls = self._ssl if origin.scheme == "https" else None
        last: Exception | None = None
        loop = asyncio.get_running_loop()
        for host, port, family in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, protocol = await loop.create_connection(
                        lambda: Connection(self, origin),
                        host,
                        port,
                        family=family,
                        ssl=tls,
                        server_hostname=origin.host if tls else None,
                    )
            except TimeoutError:
                raise UpstreamTimeout(
                    "the upstream API did not accept a connection in time"
                ) from None
            except OSError as exc:  # refused, unreachable, TLS failure
                last = exc
                continue
            return protocol  # asyncio sets TCP_NODELAY itself
        raise UpstreamError(
            f"the upstream API could not be reached ({type(last).__name__})"
        ) from None

    async def _resolve(self, origin: Origin) -> list[tuple[str, int, int]]:
        key = (origin.host, origin.port)
        cached = self._addresses.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            results = await self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
        except DestinationNotAllowed:
            raise
        except OSError as exc:
            raise UpstreamError(
                f"the upstream API could not be reached ({type(exc).__name__})"
            ) from None
        addresses = [(r["host"], r["port"], r["family"]) for r in results]
        if len(self._addresses) > 10_000:
            self._addresses.clear()
        self._addresses[key] = (now + DNS_TTL, addresses)
        return addresses

    # --- bookkeeping -------------------------------------------------------------------------
    def put_back(self, connection: Connection) -> None:
        self._active.discard(connection)
        idle = self._idle.setdefault(connection.origin, [])
        if self._closed or len(idle) >= self._max_per_origin:
            connection.abort()
        else:
            idle.append(connection)

    def forget(self, connection: Connection) -> None:
        self._active.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Fail answers the upstream has kept us waiting for longer than the read timeout."""
        tick = min(1.0, self._read_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            deadline = time.monotonic() - self._read_timeout
            for connection in list(self._active):
                response = connection.response
                if response is None:
                    self._active.discard(connection)
                elif response.waiting and connection.last_activity < deadline:
                    connection.timed_out()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
        for connection in list(self._active):
            connection.abort()
        with contextlib.suppress(Exception):
            await self._resolver.close()
