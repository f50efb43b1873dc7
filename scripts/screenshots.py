"""Regenerate the PNG screenshots of the web pages in ``docs/screenshots/`` for the README.

Runs a broker, the DEMO provider and its API on loopback (the test harness), signs in as
``alice`` in headless Chromium (Debian's ``chromium``, driven by Playwright) and captures the
main pages. Usage: ``.venv/bin/python scripts/screenshots.py [OUTPUT_DIR]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from agents import agent, grant, proxy, session  # noqa: E402
from chromium import ARGS, CHROMIUM  # noqa: E402
from playwright.async_api import Page, async_playwright  # noqa: E402
from webpages import web_broker  # noqa: E402

from tokenbroker.web.consent_link import consent_url  # noqa: E402


async def _login(page: Page, user: str) -> None:
    await page.fill("#username", user)
    await page.fill("#password", "demo")
    await page.click("button[value=approve]")


async def capture(out: Path) -> list[Path]:
    shots: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'tokenbroker.db'}"
        async with web_broker(Path(tmp), db, admins=["alice"]) as h, async_playwright() as pw:
            assert h.state is not None
            assert h.svc is not None
            h.state.behaviour.auto_approve_user = None
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(viewport={"width": 1100, "height": 720})
            page = await context.new_page()

            async def shot(name: str) -> None:
                path = out / f"{name}.png"
                await page.screenshot(path=str(path), full_page=True)
                shots.append(path)

            await page.goto(f"{h.public_url}/connections")
            await _login(page, "alice")
            await page.wait_for_url(f"{h.public_url}/connections")
            h.state.behaviour.auto_approve_user = "alice"
            await h.connect("alice", ["files:read", "files:write"])
            h.state.behaviour.auto_approve_user = None
            mail = await agent(h, "mail-assistant")
            await grant(h, mail["id"], ["files:read"], operations=["files.list"], expires_in=86400)
            token = await session(h, mail["id"])
            await proxy(h, token, "GET", "/proxy/acme/files")
            await page.goto(f"{h.public_url}/connections")
            await shot("connections")
            await page.goto(f"{h.public_url}/access")
            await shot("agent-access")
            planner = await agent(h, "calendar-planner")
            url = consent_url(
                h.svc.settings,
                tenant_id="default",
                user_id="alice",
                agent_id=planner["id"],
                provider="acme",
                scopes=["files:read", "files:write"],
                operation="files.create",
                expires_in=3600,
            )
            await page.goto(str(url))
            await shot("consent")
            link = await h.start_connect("alice", ["files:read"])
            await page.goto(link["authorization_url"])
            await _login(page, "alice")
            await page.wait_for_url(f"{h.public_url}/confirm?**")
            await shot("confirm")
            await asyncio.sleep(0.3)  # let the trail commit its last batch
            await page.goto(f"{h.public_url}/activity")
            await shot("activity")
            await page.goto(f"{h.public_url}/admin")
            await shot("admin")
            await browser.close()
    return shots


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(capture(out)):
        print(path)


if __name__ == "__main__":
    main()
