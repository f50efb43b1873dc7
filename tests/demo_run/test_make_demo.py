"""What `make demo` promises: one URL where a person connects alice's demo account."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

import aiohttp
from harness import free_port

from tokenbroker.demo.run import prepare, run_demo


async def test_a_person_connects_alice_through_the_demo_login_and_consent(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    prepare(tmp_path, ports)
    stop = asyncio.Event()
    task = asyncio.create_task(run_demo(tmp_path, ports, stop))
    app_url = f"http://127.0.0.1:{ports[3]}/"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            for _ in range(100):
                try:
                    async with browser.get(app_url) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            async with browser.post(app_url + "connect") as resp:
                login = await resp.text()
                login_url = resp.url
            assert "DEMO provider" in login
            fields = {
                name: html.unescape(value)
                for name, value in re.findall(
                    r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', login
                )
            }
            fields.update({"username": "alice", "password": "demo", "decision": "approve"})
            async with browser.post(login_url.with_query(None), data=fields) as resp:
                page = await resp.text()
                assert str(resp.url) == app_url
            assert "alice@demo.example" in page
            assert "active" in page
    finally:
        stop.set()
        await task
