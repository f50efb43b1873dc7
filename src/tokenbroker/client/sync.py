"""``Broker``: the blocking client an agent uses to call APIs through the gateway.

``Broker(url, token).request("GET", "google", "/gmail/v1/users/me/messages")`` sends the call to
``{url}/proxy/google/gmail/v1/users/me/messages`` with the agent session token in the
``Authorization`` header (and nowhere else), and returns the :class:`httpx.Response`: the
upstream API's answer, whatever its status. The broker's own refusals are raised as the typed
errors of :mod:`tokenbroker.client.errors`. Redirects are never followed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import httpx

from tokenbroker.client.errors import error_from_response

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f#\\]")
_TOKEN = re.compile(r"[\x21-\x7e]+")


def broker_base_url(url: str) -> str:
    """The broker's URL, checked (http or https, no credentials, query or fragment)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("the broker URL must be an http:// or https:// URL with a host")
    if parsed.userinfo or parsed.query or parsed.fragment:
        raise ValueError("the broker URL must not carry credentials, a query or a fragment")
    return str(parsed).rstrip("/")


def proxy_url(broker_url: str, provider: str, path: str, *, base: str | None = None) -> str:
    """``{broker_url}/proxy/{provider}[:{base}]{path}``, refusing anything that could escape it.

    ``path`` must start with ``/`` and may end with ``?query``; a dot segment (raw or
    percent-encoded), an empty segment, whitespace, a control character, ``\\`` or ``#`` is
    refused with :class:`ValueError` (HTTP clients would fold ``..`` before the broker sees it).
    """
    if not _NAME.fullmatch(provider):
        raise ValueError("provider must match [a-z0-9][a-z0-9-]*")
    if base is not None and not _NAME.fullmatch(base):
        raise ValueError("base must match [a-z0-9][a-z0-9-]*")
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    if _BAD_CHARS.search(path):
        raise ValueError("path must not contain whitespace, control characters, '\\' or '#'")
    route, _, _query = path.partition("?")
    segments = route.split("/")[1:]
    for index, segment in enumerate(segments):
        decoded = unquote(segment)
        if decoded in (".", ".."):
            raise ValueError("path must not contain '.' or '..' segments")
        if segment == "" and index != len(segments) - 1:
            raise ValueError("path must not contain empty segments ('//')")
    target = provider if base is None else f"{provider}:{base}"
    return f"{broker_url}/proxy/{target}{path}"


def check_token(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError("the agent session token must be non-empty printable ASCII")
    return token


def request_headers(token: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers plus the token; a caller's own ``Authorization`` is refused."""
    sent = dict(headers or {})
    if any(name.lower() == "authorization" for name in sent):
        raise ValueError("the Authorization header is set by the client; do not pass one")
    sent["Authorization"] = f"Bearer {token}"
    return sent


class Broker:
    """A blocking tokenbroker client; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        url: str,
        agent_session_token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = broker_base_url(url)
        self._token = check_token(agent_session_token)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"Broker(url={self.url!r})"

    def request(
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
        """Call ``provider``'s API through the broker; the upstream's answer is returned as is.

        Raises a :class:`~tokenbroker.client.errors.BrokerError` subclass when the broker itself
        refuses or fails (its answers carry ``TokenBroker-Error``); ``httpx.HTTPError`` when the
        broker cannot be reached; :class:`ValueError` for an unsafe provider, base or path.
        """
        response = self._http.request(
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

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
