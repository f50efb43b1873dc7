"""Server-rendered pages (Jinja2, autoescaped)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class Pages:
    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("tokenbroker.api", "templates"),
            autoescape=select_autoescape(["html"]),
        )

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        body = self._env.get_template(template).render(**context)
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
        )
