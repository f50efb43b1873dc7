"""Helpers shared by the demo provider tests (imported by conftest and the test modules)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp.test_utils import TestClient
from harness import free_port as free_port  # the demo tests' servers pick ports the same way
from joserfc.jwk import KeySet

from tokenbroker.demo.settings import DemoProviderSettings
from tokenbroker.demo.state import DemoState

REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback/demo"
CLIENT_ID = "broker"
CLIENT_SECRET = "demo-secret"

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Demo:
    state: DemoState
    settings: DemoProviderSettings
    clock: FakeClock
    provider: TestClient[Any, Any]
    api: TestClient[Any, Any]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def basic_auth(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


class FormParser(HTMLParser):
    """Collects the <input> fields of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            values = dict(attrs)
            self.inputs.append((values.get("name") or "", values.get("value") or ""))


def form_fields(html: str) -> list[tuple[str, str]]:
    parser = FormParser()
    parser.feed(html)
    return parser.inputs


BANNER = "tokenbroker DEMO provider — not a real identity provider"
ALL_SCOPES = "openid email offline_access files:read files:write"


def callback_params(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(demo: Demo, challenge: str, **extra: str) -> Any:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": ALL_SCOPES,
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return await demo.provider.get("/authorize", params=params, allow_redirects=False)


async def get_code(demo: Demo, user: str = "alice", **extra: str) -> tuple[str, str]:
    """Auto-approve an authorization; returns (code, verifier)."""
    demo.state.behaviour.auto_approve_user = user
    verifier, challenge = pkce_pair()
    resp = await authorize(demo, challenge, **extra)
    assert resp.status == 302
    return callback_params(resp.headers["Location"])["code"], verifier


async def token(demo: Demo, auth: bool = True, **form: str) -> tuple[int, dict[str, Any]]:
    headers = basic_auth() if auth else {}
    resp = await demo.provider.post("/token", data=form, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def exchange(demo: Demo, code: str, verifier: str) -> tuple[int, dict[str, Any]]:
    return await token(
        demo,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )


async def tokens_for(demo: Demo, user: str = "alice") -> dict[str, Any]:
    code, verifier = await get_code(demo, user)
    status, body = await exchange(demo, code, verifier)
    assert status == 200, body
    return body


async def jwks(demo: Demo) -> KeySet:
    resp = await demo.provider.get("/jwks")
    return KeySet.import_key_set(await resp.json())
