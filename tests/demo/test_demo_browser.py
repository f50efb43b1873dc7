"""The demo provider's browser pages (login + consent, device) and the device grant."""

from __future__ import annotations

from typing import Any

from demo_support import (
    BANNER,
    Demo,
    authorize,
    basic_auth,
    callback_params,
    exchange,
    form_fields,
    jwks,
    pkce_pair,
    token,
)
from joserfc import jwt

# -- device flow -----------------------------------------------------------------------------------


async def device_start(demo: Demo, scope: str = "openid files:read") -> dict[str, Any]:
    resp = await demo.provider.post(
        "/device_authorization", data={"scope": scope}, headers=basic_auth()
    )
    assert resp.status == 200
    return dict(await resp.json())


async def device_poll(demo: Demo, device_code: str) -> tuple[int, dict[str, Any]]:
    return await token(
        demo, grant_type="urn:ietf:params:oauth:grant-type:device_code", device_code=device_code
    )


async def test_device_flow_pending_slow_down_and_approve(demo: Demo) -> None:
    start = await device_start(demo)
    assert start["verification_uri"] == demo.settings.issuer + "/device"
    assert start["verification_uri_complete"].endswith(start["user_code"])
    assert (start["expires_in"], start["interval"]) == (600, 1)
    assert len(start["user_code"]) == 9
    assert start["user_code"][4] == "-"
    _, body = await device_poll(demo, start["device_code"])
    assert body["error"] == "authorization_pending"
    _, body = await device_poll(demo, start["device_code"])
    assert body["error"] == "slow_down"
    page = await demo.provider.get("/device", params={"user_code": start["user_code"]})
    html = await page.text()
    assert BANNER in html
    fields = dict(form_fields(html))
    assert fields["user_code"] == start["user_code"]
    resp = await demo.provider.post(
        "/device",
        data={
            "form_nonce": fields["form_nonce"],
            "user_code": start["user_code"].lower(),
            "username": "bob",
            "password": "demo",
            "action": "approve",
        },
    )
    assert "Device connected" in await resp.text()
    demo.clock.advance(6)
    status, body = await device_poll(demo, start["device_code"])
    assert status == 200, body
    assert body["scope"] == "openid files:read"
    assert jwt.decode(body["id_token"], await jwks(demo)).claims["sub"] == "bob"
    _, body = await device_poll(demo, start["device_code"])
    assert body["error"] == "invalid_grant"
    assert demo.state.counters["device_polls"] == 4


async def test_device_flow_denied_and_expired(demo: Demo) -> None:
    denied, expired = await device_start(demo), await device_start(demo)
    assert demo.state.decide_device(denied["user_code"], "alice", approve=False)
    _, body = await device_poll(demo, denied["device_code"])
    assert body["error"] == "access_denied"
    demo.clock.advance(601)
    _, body = await device_poll(demo, expired["device_code"])
    assert body["error"] == "expired_token"


# -- the HTML login + consent page -----------------------------------------------------------------


async def login_page(demo: Demo, **extra: str) -> tuple[str, dict[str, str], str]:
    verifier, challenge = pkce_pair()
    resp = await authorize(demo, challenge, **extra)
    assert resp.status == 200
    html = await resp.text()
    return html, dict(form_fields(html)), verifier


async def test_login_page_approve_redirects_with_code_state_iss(demo: Demo) -> None:
    html, fields, verifier = await login_page(demo, login_hint="bob")
    assert BANNER in html
    assert "files:write" in html
    assert fields["username"] == "bob"
    assert fields["code_challenge_method"] == "S256"
    resp = await demo.provider.post(
        "/authorize",
        data={**fields, "password": "demo", "action": "approve"},
        allow_redirects=False,
    )
    assert resp.status == 303
    params = callback_params(resp.headers["Location"])
    assert (params["state"], params["iss"]) == ("st-1", demo.settings.issuer)
    status, body = await exchange(demo, params["code"], verifier)
    assert status == 200
    assert jwt.decode(body["id_token"], await jwks(demo)).claims["sub"] == "bob"
    # The form nonce is single use.
    resp = await demo.provider.post(
        "/authorize",
        data={**fields, "password": "demo", "action": "approve"},
        allow_redirects=False,
    )
    assert resp.status == 400


async def test_login_page_deny_and_wrong_password(demo: Demo) -> None:
    _html, fields, _ = await login_page(demo)
    resp = await demo.provider.post(
        "/authorize",
        data={**fields, "username": "alice", "password": "nope", "action": "approve"},
        allow_redirects=False,
    )
    assert resp.status == 401
    assert "Wrong username or password" in await resp.text()
    _, fields, _ = await login_page(demo)
    resp = await demo.provider.post(
        "/authorize", data={**fields, "action": "deny"}, allow_redirects=False
    )
    params = callback_params(resp.headers["Location"])
    assert params["error"] == "access_denied"
    assert (params["state"], params["iss"]) == ("st-1", demo.settings.issuer)


async def test_login_page_escapes_reflected_values(demo: Demo) -> None:
    html, fields, _ = await login_page(demo, state='"><script>alert(1)</script>')
    assert "<script>alert(1)" not in html
    assert fields["state"] == '"><script>alert(1)</script>'
