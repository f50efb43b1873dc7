"""The one place that does outbound HTTP for OAuth calls (token, revocation, discovery, JWKS).

Pure protocol modules build a :class:`PreparedRequest`; this module sends it and returns the
raw status, headers and a size-capped body. Redirects are never followed, every call has a
hard deadline, and network failures become :class:`ProviderUnavailable` naming the provider
(never the request body, which holds secrets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from tokenbroker.errors import ProviderTimeout, ProviderUnavailable
from tokenbroker.protocol.request import PreparedRequest

MAX_BODY = 1024 * 1024
USER_AGENT = "tokenbroker/0.1"


@dataclass(frozen=True)
class RawResponse:
    status: int
    content_type: str | None
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """Owns one aiohttp session; create it inside the running loop, close it at shutdown."""

    def __init__(self, *, timeout_seconds: float = 10.0) -> None:
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, request: PreparedRequest, *, provider: str, timeout: float | None = None
    ) -> RawResponse:
        headers = dict(request.headers)
        data = request.body.encode() if request.body else None
        return await self._call(request.method, request.url, headers, data, provider, timeout)

    async def get(
        self,
        url: str,
        *,
        provider: str,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RawResponse:
        return await self._call("GET", url, dict(headers or {}), None, provider, timeout)

    async def _call(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | None,
        provider: str,
        timeout: float | None,
    ) -> RawResponse:
        headers.setdefault("Accept", "application/json")
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._client().request(
                method, url, headers=headers, data=data, allow_redirects=False, **kwargs
            ) as resp:
                body = await _read_capped(resp, provider)
                return RawResponse(
                    status=resp.status,
                    content_type=resp.content_type,
                    headers={k: v for k, v in resp.headers.items()},
                    body=body,
                )
        except TimeoutError:
            raise ProviderTimeout(f"provider {provider!r} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                f"provider {provider!r} could not be reached ({type(exc).__name__})"
            ) from None


async def _read_capped(resp: aiohttp.ClientResponse, provider: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise ProviderUnavailable(f"provider {provider!r} sent a response over 1 MiB")
        chunks.append(chunk)
    return b"".join(chunks)
