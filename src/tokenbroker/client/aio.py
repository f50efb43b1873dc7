"""``AsyncBroker``: the asyncio twin of :class:`tokenbroker.client.sync.Broker`."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from tokenbroker.client.errors import error_from_response
from tokenbroker.client.sync import broker_base_url, check_token, proxy_url, request_headers


class AsyncBroker:
    """An asyncio tokenbroker client; use ``async with`` or ``await aclose()``."""

    def __init__(
        self,
        url: str,
        agent_session_token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = broker_base_url(url)
        self._token = check_token(agent_session_token)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"AsyncBroker(url={self.url!r})"

    async def request(
        self,
        method: str,
        provider: str,
        path: str,
        *,
        base: str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
    ) -> httpx.Response:
        """See :meth:`tokenbroker.client.sync.Broker.request`."""
        response = await self._http.request(
            method.upper(),
            proxy_url(self.url, provider, path, base=base),
            params=params,
            headers=request_headers(self._token, headers),
            json=json,
            content=content,
        )
        error = error_from_response(response)
        if error is not None:
            raise error
        return response

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
