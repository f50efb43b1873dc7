"""End to end in headless Chromium: sign in, connect, approve an agent, see it, revoke it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agents import agent, proxy, session
from chromium import chromium_page
from webpages import web_broker

from tokenbroker.web.consent_link import consent_url


async def _demo_login(page: object, user: str = "alice") -> None:
    await page.fill("#username", user)  # type: ignore[attr-defined]
    await page.fill("#password", "demo")  # type: ignore[attr-defined]
    await page.click("button[value=approve]")  # type: ignore[attr-defined]


async def test_a_user_approves_an_agent_then_revokes_it(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'tokenbroker.db'}"
    async with web_broker(tmp_path, database_url) as h, chromium_page() as page:
        assert h.state is not None
        h.state.behaviour.auto_approve_user = None  # the real sign-in form of the demo provider
        made = await agent(h, "calendar-bot")
        token = await session(h, made["id"])

        # Sign in to the broker at the login provider.
        await page.goto(f"{h.public_url}/connections")
        assert "DEMO provider" in await page.content()
        await _demo_login(page)
        await page.wait_for_url(f"{h.public_url}/connections")
        assert "alice@demo.example" in await page.inner_text("header")

        # The agent is refused; its answer leads the user to the consent page.
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 403
        answer = json.loads(body)
        assert answer["error"] in ("authorization_required", "insufficient_grant")
        assert h.svc is not None
        url = answer.get("consent_url") or consent_url(
            h.svc.settings,
            tenant_id="default",
            user_id="alice",
            agent_id=made["id"],
            provider="acme",
            scopes=["files:read"],
            operation="files.list",
        )
        await page.goto(url)
        assert "calendar-bot" in await page.inner_text("h1")
        assert "Read your files" in await page.content()

        # No connection yet: connect first, confirm the account, come back and approve.
        await page.click("button[value=approve]")
        await _demo_login(page)
        await page.wait_for_url(f"{h.public_url}/confirm?**")
        assert "alice@demo.example" in await page.content()
        await page.click("text=Confirm and connect")
        await page.wait_for_url(f"{h.public_url}/consent?**")
        await page.click("button[value=approve]")
        await page.wait_for_url(f"{h.public_url}/access/**")
        assert "Active" in await page.content()

        # The agent's call goes through and shows in Activity.
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 200, body
        for _ in range(40):  # the trail commits in small batches
            await page.goto(f"{h.public_url}/activity?agent={made['id']}")
            activity = await page.inner_text("main")
            if "proxy.finished" in activity:
                break
            await asyncio.sleep(0.1)
        assert "proxy.finished" in activity
        assert "GET /files" in activity

        # Revoke: the next call is refused.
        await page.goto(f"{h.public_url}/access")
        await page.click("button:has-text('Revoke')")
        await page.wait_for_url(f"{h.public_url}/access/**")
        assert "Revoked" in await page.content()
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 403
        assert json.loads(body)["error"] == "insufficient_grant"
