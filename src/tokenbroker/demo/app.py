"""DEMO application: stands in for *your* product's backend, which holds the admin key.

It shows how an application uses the management API: it creates a connect session for its
signed-in user (always ``alice`` here), sends the browser to the broker's link, proves the user
when the broker asks (it is the ``user_verifier_url``), and lists the user's connections.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

BANNER = (
    '<p style="background:#fff3cd;border:1px solid #e0c46c;padding:.5rem 1rem">'
    "<strong>tokenbroker DEMO application</strong>: it plays the role of your product's "
    "backend. Signed in as <strong>alice</strong>.</p>"
)


@dataclass(frozen=True)
class DemoAppSettings:
    public_url: str  # of this demo app
    broker_url: str
    admin_key: str
    provider: str = "demo"
    user_id: str = "alice"
    scopes: tuple[str, ...] = ("files:read",)


SETTINGS = web.AppKey("demo_app_settings", DemoAppSettings)


def create_demo_app(settings: DemoAppSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.router.add_get("/", _home)
    app.router.add_post("/connect", _connect)
    app.router.add_get("/verify", _verify)
    return app


async def _broker(
    settings: DemoAppSettings, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {settings.admin_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, settings.broker_url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def _page(body: str) -> web.Response:
    doc = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>DEMO app</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}</style>"
        f"</head><body>{BANNER}{body}</body></html>"
    )
    return web.Response(text=doc, content_type="text/html")


async def _home(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    status, doc = await _broker(settings, "GET", f"/v1/connections?user_id={settings.user_id}")
    rows = ""
    for conn in doc.get("connections", []) if status == 200 else []:
        rows += (
            f"<tr><td>{html.escape(conn['provider'])}</td>"
            f"<td>{html.escape(str(conn['account']['label']))}</td>"
            f"<td>{html.escape(' '.join(conn['scopes']))}</td>"
            f"<td>{html.escape(conn['status'])}</td>"
            f"<td><code>{html.escape(conn['id'])}</code></td></tr>"
        )
    table = (
        "<table><tr><th>provider</th><th>account</th><th>scopes</th><th>status</th><th>id</th></tr>"
        f"{rows}</table>"
        if rows
        else "<p>alice has no connections yet.</p>"
    )
    notice = ""
    if request.query.get("error"):
        notice = f"<p role=alert>Connect failed: {html.escape(request.query['error'])}</p>"
    return _page(
        f"<h1>alice's connections</h1>{notice}{table}"
        '<form method="post" action="/connect"><button type="submit">'
        "Connect alice's demo account</button></form>"
        "<p>The demo provider's login is <code>alice</code> / <code>demo</code>.</p>"
        f"<p>The broker's own pages (what alice sees: connections, agent access, consent, "
        f'activity): <a href="{html.escape(settings.broker_url)}/connections">'
        f"{html.escape(settings.broker_url)}/connections</a></p>"
    )


async def _connect(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    status, doc = await _broker(
        settings,
        "POST",
        "/v1/connect-sessions",
        {
            "user_id": settings.user_id,
            "provider": settings.provider,
            "scopes": list(settings.scopes),
            "return_to": settings.public_url + "/",
        },
    )
    if status != 201:
        return _page(f"<p role=alert>{html.escape(str(doc.get('message')))}</p>")
    raise web.HTTPSeeOther(doc["authorization_url"])


async def _verify(request: web.Request) -> web.StreamResponse:
    """The user verifier: the broker sends the browser here; we confirm our signed-in user."""
    settings = request.app[SETTINGS]
    session_id = request.query.get("connect_session_id", "")
    status, doc = await _broker(
        settings,
        "POST",
        f"/v1/connect-sessions/{session_id}/confirm",
        {"flow_id": request.query.get("flow_id", ""), "user_id": settings.user_id},
    )
    if status != 200:
        raise web.HTTPSeeOther(f"/?error={doc.get('error', 'failed')}")
    raise web.HTTPSeeOther(doc.get("return_to") or "/")
