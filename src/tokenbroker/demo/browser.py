"""Browser-facing pages of the demo provider: /authorize (login + consent) and /device."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDict, MultiMapping
from yarl import URL

from tokenbroker.demo.appkeys import STATE_KEY
from tokenbroker.demo.state import DemoState

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "login_hint",
)
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def render(template: str, *, status: int = 200, **context: Any) -> web.Response:
    html = TEMPLATES.get_template(template).render(**context)
    return web.Response(status=status, text=html, content_type="text/html", headers=PAGE_HEADERS)


def message_page(heading: str, message: str, *, status: int = 200) -> web.Response:
    return render(
        "message.html", status=status, heading=heading, message=message, is_error=status >= 400
    )


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str
    nonce: str | None
    prompt: str
    login_hint: str
    resources: tuple[str, ...]
    params: tuple[tuple[str, str], ...]  # what the consent form carries in hidden fields


class _Rejected(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__("rejected")
        self.response = response


def _validate(state: DemoState, params: MultiMapping[str]) -> AuthorizeRequest:
    """Check an authorization request; raise :class:`_Rejected` with the answer if it fails."""
    settings = state.settings
    client = settings.client(params.get("client_id", ""))
    if client is None:
        raise _Rejected(message_page("Unknown client", "client_id is not registered.", status=400))
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise _Rejected(
            message_page("Bad redirect_uri", "redirect_uri is not registered.", status=400)
        )
    request_state = params.get("state")

    def fail(error: str, description: str) -> _Rejected:
        query = {"error": error, "error_description": description}
        return _Rejected(redirect_to(state, redirect_uri, query, request_state))

    for name in AUTHORIZE_PARAMS:
        if len(params.getall(name, [])) > 1:
            raise fail("invalid_request", f"parameter {name} repeated")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
    challenge = params.get("code_challenge", "")
    if not _CHALLENGE.fullmatch(challenge):
        raise fail("invalid_request", "code_challenge is missing or malformed")
    scopes = tuple(dict.fromkeys(params.get("scope", "").split()))
    unknown = [s for s in scopes if s not in settings.scopes]
    if unknown:
        raise fail("invalid_scope", "unknown scope requested")
    carried = [(n, params[n]) for n in AUTHORIZE_PARAMS if n in params]
    resources = tuple(params.getall("resource", []))
    carried.extend(("resource", r) for r in resources)
    return AuthorizeRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=request_state,
        code_challenge=challenge,
        nonce=params.get("nonce"),
        prompt=params.get("prompt", ""),
        login_hint=params.get("login_hint", ""),
        resources=resources,
        params=tuple(carried),
    )


def redirect_to(
    state: DemoState,
    redirect_uri: str,
    query: dict[str, str],
    request_state: str | None,
    *,
    status: int = 302,
) -> web.Response:
    """Redirect to the client with ``state`` and RFC 9207 ``iss`` (subject to ``callback_iss``)."""
    params = dict(query)
    if request_state is not None:
        params["state"] = request_state
    iss = state.behaviour.callback_iss
    iss = state.settings.issuer if iss is None else iss
    if iss:
        params["iss"] = iss
    location = str(URL(redirect_uri, encoded=True).extend_query(params))
    return web.Response(status=status, headers={"Location": location, **PAGE_HEADERS})


def _issue_code(state: DemoState, req: AuthorizeRequest, user: str, *, status: int) -> web.Response:
    code = state.new_code(
        client_id=req.client_id,
        redirect_uri=req.redirect_uri,
        user=user,
        scopes=req.scopes,
        code_challenge=req.code_challenge,
        nonce=req.nonce,
        consent_prompted="consent" in req.prompt.split(),
        resources=req.resources,
    )
    return redirect_to(state, req.redirect_uri, {"code": code.code}, req.state, status=status)


def _consent_page(
    state: DemoState, req: AuthorizeRequest, *, username: str, error: str = "", status: int = 200
) -> web.Response:
    return render(
        "authorize.html",
        status=status,
        action="/authorize",
        client_id=req.client_id,
        redirect_uri=req.redirect_uri,
        hidden=req.params,
        form_nonce=state.new_form_nonce(),
        username=username,
        users=state.settings.users,
        password=state.settings.password,
        scopes=req.scopes,
        error=error,
    )


def _check_login(state: DemoState, username: str, password: str) -> bool:
    expected = state.settings.password.encode()
    return username in state.settings.users and hmac.compare_digest(password.encode(), expected)


async def authorize_get(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.count("authorize_calls")
    try:
        req = _validate(state, request.query)
    except _Rejected as rejected:
        return rejected.response
    if state.behaviour.auto_approve_user:
        return _issue_code(state, req, state.behaviour.auto_approve_user, status=302)
    return _consent_page(state, req, username=req.login_hint)


async def authorize_post(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = await _text_form(request)
    if not state.consume_form_nonce(form.get("form_nonce", "")):
        return message_page("Form expired", "Start the sign-in again from the app.", status=400)
    try:
        req = _validate(state, form)
    except _Rejected as rejected:
        return rejected.response
    if form.get("action") == "deny":
        denied = {"error": "access_denied", "error_description": "the user denied the request"}
        return redirect_to(state, req.redirect_uri, denied, req.state, status=303)
    username = form.get("username", "")
    if not _check_login(state, username, form.get("password", "")):
        return _consent_page(
            state, req, username=username, error="Wrong username or password.", status=401
        )
    return _issue_code(state, req, username, status=303)


async def device_get(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return _device_page(state, user_code=request.query.get("user_code", ""))


async def device_post(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = await _text_form(request)
    user_code = form.get("user_code", "")
    username = form.get("username", "")
    if not state.consume_form_nonce(form.get("form_nonce", "")):
        return message_page("Form expired", "Reload the page and try again.", status=400)
    if state.pending_device(user_code) is None:
        return _device_page(
            state, user_code=user_code, username=username, error="Unknown or expired code."
        )
    if form.get("action") == "deny":
        state.decide_device(user_code, username, approve=False)
        return message_page("Request denied", "The device was not connected.")
    if not _check_login(state, username, form.get("password", "")):
        return _device_page(
            state, user_code=user_code, username=username, error="Wrong username or password."
        )
    state.decide_device(user_code, username, approve=True)
    return message_page("Device connected", "You can return to your device.")


def _device_page(
    state: DemoState, *, user_code: str, username: str = "", error: str = ""
) -> web.Response:
    return render(
        "device.html",
        action="/device",
        form_nonce=state.new_form_nonce(),
        user_code=user_code,
        username=username,
        users=state.settings.users,
        password=state.settings.password,
        error=error,
    )


async def _text_form(request: web.Request) -> MultiDict[str]:
    data = await request.post()
    return MultiDict((k, v) for k, v in data.items() if isinstance(v, str))
