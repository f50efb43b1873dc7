"""Forwarding one request upstream and streaming the answer back.

Bodies stream in both directions without being held whole (a request body small enough to
replay after a 401 is buffered, default 64 KiB). The client never follows redirects, never
decompresses (a gzip bomb passes through untouched, size-capped), keeps no cookies, and
connects only to addresses the SSRF guard's resolver returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.errors import BodyTooLarge, UpstreamError
from tokenbroker.gateway.exchange import Exchange
from tokenbroker.gateway.headers import filter_response_headers
from tokenbroker.gateway.target import capped_retry_after
from tokenbroker.gateway.upstream import UpstreamPool, UpstreamResponse

Header = tuple[str, str]
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SMALL_BODY = 64 * 1024  # answers up to this size (and of known size) are sent in one write


@dataclass
class Body:
    """The agent's request body: buffered (replayable) or streamed once."""

    data: bytes | None
    stream: Exchange | None
    limit: int
    read: int = 0
    length: int | None = None  # a streamed body's Content-Length, if the agent sent one

    @property
    def replayable(self) -> bool:
        return self.stream is None

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self.stream is not None
        async for chunk in self.stream.chunks():
            self.read += len(chunk)
            if self.read > self.limit:
                raise BodyTooLarge(f"the request body exceeds {self.limit} bytes")
            yield chunk


async def read_body(request: Exchange, *, limit: int, buffer_up_to: int) -> Body:
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"the request body exceeds {limit} bytes")
    if request.method in NO_BODY and not request.body_exists:
        return Body(None, None, limit)
    if length is not None and length <= buffer_up_to:
        # The whole body, however many pieces it arrives in (the server enforces its length).
        data = await request.read_all() if length else b""
        return Body(data, None, limit, len(data))
    if not request.body_exists:
        return Body(None, None, limit)
    return Body(None, request, limit, length=length)


async def send(
    pool: UpstreamPool,
    method: str,
    base_url: str,
    target: str,
    headers: list[Header],
    body: Body,
) -> UpstreamResponse:
    """Forward to ``base_url`` + ``target``; ``headers`` already filtered (framing is the
    pool's: the filter never passes the agent's Content-Length, the pool sets it from the
    body)."""
    data: bytes | AsyncIterator[bytes] | None = body.data
    if body.stream is not None:
        data = body.chunks()
    return await pool.request(method, base_url, target, headers, data, body_length=body.length)


class Tally(Protocol):
    request_id: str
    bytes_out: int


async def relay(
    exchange: Exchange,
    upstream: UpstreamResponse,
    tally: Tally,
    *,
    extras: frozenset[str],
    cap: int,
    retry_after_cap: int,
) -> None:
    """The upstream's status, filtered headers and body, back to the agent.

    Small answers of known size go out as one buffer (headers and body in one write); others
    stream chunk by chunk. Either way the caller ends the answer (``exchange.end()``) once the
    record is written.
    """
    length = upstream.content_length
    if length is not None and length > cap:
        raise UpstreamError(f"the upstream answer exceeds {cap} bytes")
    whole = length is not None and length <= SMALL_BODY
    headers: list[Header] = []
    for name, value in filter_response_headers(upstream.headers, extras):
        lower = name.lower()
        if lower == "retry-after" and upstream.status in (429, 503):
            value = capped_retry_after(value, retry_after_cap)
        elif lower == "content-length" and whole:
            continue  # set from the body
        elif lower == "x-request-id":
            continue  # the gateway's own
        headers.append((name, value))
    headers.append(("X-Request-ID", tally.request_id))
    reason = upstream.reason or None
    if whole:
        payload = await upstream.read() if length else b""
        tally.bytes_out = len(payload)
        exchange.respond(upstream.status, reason, headers, payload)
        return
    await exchange.start(upstream.status, reason, headers)
    async for chunk in upstream.iter_chunks():
        tally.bytes_out += len(chunk)
        if tally.bytes_out > cap:
            upstream.close()
            raise ConnectionResetError("upstream answer over the size cap")
        await exchange.write(chunk)
