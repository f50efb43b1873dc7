"""Headless Chromium (Debian's ``chromium``) driven by Playwright; no browser download."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium_page(**context: Any) -> AsyncIterator[Any]:
    """A page in a fresh browser context; skips when Playwright or Chromium is missing."""
    required = os.environ.get("TOKENBROKER_REQUIRE_SERVICES") == "1"
    try:
        import playwright.async_api as playwright_api
    except ImportError:
        if required:
            pytest.fail("Playwright is required (it is in the dev extras)")
        pytest.skip("Playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = await browser.new_context(**context)
            yield await ctx.new_page()
        finally:
            await browser.close()
