"""Helpers for the web-page tests: a broker with sign-in, signing in over plain HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from agents import DEMO_OPERATIONS
from harness import Harness

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def web_broker(tmp: Path, database_url: str, **login: Any) -> AsyncIterator[Harness]:
    """A broker whose pages sign in at the demo provider; it confirms its own connect links."""
    h = Harness(tmp=tmp, database_url=database_url)
    try:
        await h.start(
            login=h.login_config(**login),
            connect={"user_verifier_url": None},
            provider={"operations": DEMO_OPERATIONS},
        )
        yield h
    finally:
        await h.stop()


def browser(h: Harness) -> aiohttp.ClientSession:
    """A fresh cookie jar: one person's browser."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str | None]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


async def post(
    http: aiohttp.ClientSession, url: str, data: dict[str, str]
) -> tuple[int, str, str | None]:
    async with http.post(url, data=data, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


async def sign_in(h: Harness, http: aiohttp.ClientSession, user: str = "alice") -> str:
    """Sign in as ``user`` (the demo provider approves at once); returns the page's CSRF token."""
    assert h.state is not None
    h.state.behaviour.auto_approve_user = user
    status, _, to_provider = await get(http, f"{h.public_url}/login")
    assert status == 303
    assert to_provider
    status, body, to_callback = await get(http, to_provider)
    assert status == 302, body
    assert to_callback
    status, body, landing = await get(http, to_callback)
    assert status == 303, body
    assert landing == "/connections"
    return await csrf(h, http)


async def csrf(h: Harness, http: aiohttp.ClientSession, path: str = "/connections") -> str:
    status, body, _ = await get(http, h.public_url + path)
    assert status == 200, body
    found = CSRF.search(body)
    assert found, body
    return found.group(1)


async def follow(h: Harness, http: aiohttp.ClientSession, location: str) -> tuple[int, str, str]:
    """Follow redirects through broker and provider; returns the first non-redirect answer."""
    url = location
    for _ in range(10):
        url = url if url.startswith("http") else h.public_url + url
        status, body, nxt = await get(http, url)
        if status not in (301, 302, 303, 307) or nxt is None:
            return status, body, url
        url = nxt
    raise AssertionError("too many redirects")
