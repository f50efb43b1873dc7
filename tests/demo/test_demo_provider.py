"""The demo provider behaves as a strict OIDC provider and plays hostile when scripted to."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from demo_support import (
    ALL_SCOPES,
    BANNER,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    Demo,
    authorize,
    basic_auth,
    callback_params,
    exchange,
    get_code,
    jwks,
    pkce_pair,
    token,
    tokens_for,
)
from joserfc import jwt
from joserfc.errors import BadSignatureError

# -- discovery -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
async def test_discovery_document(demo: Demo, path: str) -> None:
    resp = await demo.provider.get(path)
    doc = await resp.json()
    issuer = demo.settings.issuer
    assert resp.headers["X-Demo"] == "true"
    assert doc["issuer"] == issuer
    for name, suffix in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("revocation_endpoint", "/revoke"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("device_authorization_endpoint", "/device_authorization"),
        ("introspection_endpoint", "/introspect"),
    ]:
        assert doc[name] == issuer + suffix
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert set(doc["scopes_supported"]) >= {"openid", "offline_access", "files:read"}
    assert doc["response_types_supported"] == ["code"]
    assert "urn:ietf:params:oauth:grant-type:device_code" in doc["grant_types_supported"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_hostile_metadata(demo: Demo) -> None:
    demo.state.behaviour.metadata_issuer = "https://evil.example"
    demo.state.behaviour.metadata_pkce_methods = ["plain"]
    demo.state.behaviour.metadata_overrides = {
        "jwks_uri": "javascript:alert(1)",
        "scopes_supported": None,
    }
    doc = await (await demo.provider.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == "https://evil.example"
    assert doc["code_challenge_methods_supported"] == ["plain"]
    assert doc["jwks_uri"] == "javascript:alert(1)"
    assert "scopes_supported" not in doc


# -- authorization code + PKCE ---------------------------------------------------------------------


async def test_code_flow_with_verifiable_id_token(demo: Demo) -> None:
    demo.state.behaviour.auto_approve_user = "alice"
    verifier, challenge = pkce_pair()
    resp = await authorize(demo, challenge)
    params = callback_params(resp.headers["Location"])
    assert params["state"] == "st-1"
    assert params["iss"] == demo.settings.issuer
    status, body = await exchange(demo, params["code"], verifier)
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == ALL_SCOPES
    assert body["refresh_token"]
    claims = jwt.decode(body["id_token"], await jwks(demo)).claims
    assert claims["iss"] == demo.settings.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == "alice"
    assert claims["nonce"] == "n-1"
    assert claims["email"] == "alice@demo.example"
    assert claims["email_verified"] is True
    assert claims["exp"] > demo.clock.now > claims["iat"] - 1
    assert demo.state.counters["code_exchanges"] == 1
    info = await demo.provider.get(
        "/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert (await info.json())["sub"] == "alice"


@pytest.mark.parametrize(
    "extra",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
        {"code_challenge": ""},
        {"code_challenge": "short"},
    ],
)
async def test_authorize_requires_s256(demo: Demo, extra: dict[str, str]) -> None:
    demo.state.behaviour.auto_approve_user = "alice"
    _, challenge = pkce_pair()
    resp = await authorize(demo, challenge, **extra)
    params = callback_params(resp.headers["Location"])
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-1"
    assert params["iss"] == demo.settings.issuer
    assert "code" not in params


async def test_authorize_bad_client_or_redirect_is_not_redirected(demo: Demo) -> None:
    _, challenge = pkce_pair()
    for extra in ({"redirect_uri": REDIRECT_URI + "x"}, {"client_id": "nobody"}):
        resp = await authorize(demo, challenge, **extra)
        assert resp.status == 400
        assert "Location" not in resp.headers
        assert BANNER in await resp.text()


async def test_pkce_wrong_or_missing_verifier(demo: Demo) -> None:
    code, _ = await get_code(demo)
    status, body = await exchange(demo, code, pkce_pair()[0])
    assert (status, body["error"]) == (400, "invalid_grant")
    code, _ = await get_code(demo)
    status, body = await token(
        demo, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_reuse_revokes_issued_tokens(demo: Demo) -> None:
    code, verifier = await get_code(demo)
    status, first = await exchange(demo, code, verifier)
    assert status == 200
    status, body = await exchange(demo, code, verifier)
    assert (status, body["error"]) == (400, "invalid_grant")
    me = await demo.api.get("/me", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert me.status == 401
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert body["error"] == "invalid_grant"


async def test_code_bound_to_client_redirect_and_lifetime(demo: Demo) -> None:
    code, verifier = await get_code(demo)
    resp = await demo.provider.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers=basic_auth("other", "other-secret"),
    )
    assert (await resp.json())["error"] == "invalid_grant"
    code, verifier = await get_code(demo)
    _, body = await token(
        demo,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI + "/x",
        code_verifier=verifier,
    )
    assert body["error"] == "invalid_grant"
    code, verifier = await get_code(demo)
    demo.clock.advance(61)
    _status, body = await exchange(demo, code, verifier)
    assert body["error"] == "invalid_grant"


async def test_client_authentication(demo: Demo) -> None:
    code, verifier = await get_code(demo)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    resp = await demo.provider.post("/token", data=form, headers=basic_auth(secret="wrong"))
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    resp = await demo.provider.post("/token", data=form)
    assert resp.status == 401
    both = {**form, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    resp = await demo.provider.post("/token", data=both, headers=basic_auth())
    assert (await resp.json())["error"] == "invalid_request"
    resp = await demo.provider.post("/token", data=both)  # client_secret_post
    assert resp.status == 200
    assert demo.state.token_requests[-1]["auth_method"] == "client_secret_post"
    assert "client_secret" not in demo.state.token_requests[-1]


async def test_basic_auth_credentials_are_form_url_decoded(demo: Demo) -> None:
    demo.state.behaviour.auto_approve_user = "alice"
    verifier, challenge = pkce_pair()
    resp = await authorize(demo, challenge, client_id="pub:lic")
    code = callback_params(resp.headers["Location"])["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    resp = await demo.provider.post("/token", data=form, headers=basic_auth("pub%3Alic", ""))
    assert resp.status == 200, await resp.text()


# -- refresh ---------------------------------------------------------------------------------------


async def test_refresh_rotation_and_reuse_revokes_family(demo: Demo) -> None:
    first = await tokens_for(demo)
    status, second = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    status, third = await token(
        demo, grant_type="refresh_token", refresh_token=second["refresh_token"]
    )
    assert status == 200
    # Replaying the first (rotated) refresh token kills the whole family.
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=third["refresh_token"]
    )
    assert body["error"] == "invalid_grant"
    me = await demo.api.get("/me", headers={"Authorization": f"Bearer {third['access_token']}"})
    assert me.status == 401
    assert demo.state.counters["refresh_calls"] == 4


async def test_refresh_reuse_within_grace(demo: Demo) -> None:
    demo.state.behaviour.reuse_grace_seconds = 30
    first = await tokens_for(demo)
    _, _second = await token(demo, grant_type="refresh_token", refresh_token=first["refresh_token"])
    demo.clock.advance(10)
    status, again = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert status == 200
    demo.clock.advance(30)
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert body["error"] == "invalid_grant"
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=again["refresh_token"]
    )
    assert body["error"] == "invalid_grant"


async def test_refresh_scope_must_be_subset(demo: Demo) -> None:
    first = await tokens_for(demo)
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"], scope="openid admin"
    )
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=first["refresh_token"], scope="files:read"
    )
    assert (status, body["scope"]) == (200, "files:read")
    demo.state.behaviour.refresh_scope_narrow_to = ["openid"]
    status, body = await token(
        demo, grant_type="refresh_token", refresh_token=body["refresh_token"]
    )
    assert body["scope"] == "openid"


async def test_refresh_token_needs_offline_access_and_consent_when_strict(demo: Demo) -> None:
    demo.state.behaviour.refresh_without_prompt = False
    assert "refresh_token" not in await tokens_for(demo)
    code, verifier = await get_code(demo, prompt="consent")
    _, body = await exchange(demo, code, verifier)
    assert body["refresh_token"]
    demo.state.behaviour.omit_refresh_token = True
    code, verifier = await get_code(demo, prompt="consent")
    _, body = await exchange(demo, code, verifier)
    assert "refresh_token" not in body


async def test_rotation_can_be_turned_off(demo: Demo) -> None:
    demo.state.behaviour.rotate_refresh_tokens = False
    first = await tokens_for(demo)
    for _ in range(2):
        status, body = await token(
            demo, grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        assert status == 200
        assert "refresh_token" not in body


# -- fault injection -------------------------------------------------------------------------------


async def test_token_failures_are_consumed_in_order(demo: Demo) -> None:
    first = await tokens_for(demo)
    demo.state.behaviour.token_failures = [503, 429, "invalid_grant", "invalid_client", "html"]
    rt = first["refresh_token"]
    resp = await demo.provider.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": rt}, headers=basic_auth()
    )
    assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
    status, _ = await token(demo, grant_type="refresh_token", refresh_token=rt)
    assert status == 429
    status, body = await token(demo, grant_type="refresh_token", refresh_token=rt)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await token(demo, grant_type="refresh_token", refresh_token=rt)
    assert (status, body["error"]) == (401, "invalid_client")
    resp = await demo.provider.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": rt}, headers=basic_auth()
    )
    assert resp.status == 502
    assert resp.content_type == "text/html"
    status, _ = await token(demo, grant_type="refresh_token", refresh_token=rt)
    assert status == 200  # the faults never consumed the refresh token
    assert demo.state.behaviour.token_failures == []
    assert demo.state.counters["token_calls"] == 7


async def test_timeout_fault_delays_then_answers(demo: Demo) -> None:
    first = await tokens_for(demo)
    demo.state.behaviour.token_failures = ["timeout"]
    demo.state.behaviour.timeout_seconds = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await token(demo, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert status == 200
    assert loop.time() - started >= 0.3


# -- revocation ------------------------------------------------------------------------------------


async def test_revoke(demo: Demo) -> None:
    first = await tokens_for(demo)
    second = await tokens_for(demo)
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    resp = await demo.provider.post(
        "/revoke", data={"token": first["access_token"]}, headers=basic_auth()
    )
    assert resp.status == 200
    assert (await demo.api.get("/me", headers=bearer)).status == 401
    resp = await demo.provider.post(
        "/revoke",
        data={"token": second["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic_auth(),
    )
    assert resp.status == 200
    bearer2 = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await demo.api.get("/me", headers=bearer2)).status == 401
    _, body = await token(demo, grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert body["error"] == "invalid_grant"
    resp = await demo.provider.post("/revoke", data={"token": "unknown"}, headers=basic_auth())
    assert resp.status == 200
    resp = await demo.provider.post("/revoke", data={"token": "unknown"})
    assert resp.status == 401
    demo.state.behaviour.revoke_failures = [503]
    resp = await demo.provider.post("/revoke", data={"token": "x"}, headers=basic_auth())
    assert resp.status == 503
    assert demo.state.counters["revocations"] == 5


# -- hostile ID tokens and callbacks ---------------------------------------------------------------


async def test_callback_iss_knob(demo: Demo) -> None:
    demo.state.behaviour.auto_approve_user = "alice"
    _, challenge = pkce_pair()
    demo.state.behaviour.callback_iss = ""
    params = callback_params((await authorize(demo, challenge)).headers["Location"])
    assert "iss" not in params
    demo.state.behaviour.callback_iss = "https://other-as.example"
    params = callback_params((await authorize(demo, challenge)).headers["Location"])
    assert params["iss"] == "https://other-as.example"


async def test_hostile_id_tokens(demo: Demo) -> None:
    keys = await jwks(demo)
    behaviour = demo.state.behaviour
    behaviour.id_token_aud, behaviour.id_token_iss, behaviour.id_token_nonce = "x", "y", "z"
    behaviour.id_token_expired = True
    behaviour.different_sub = "mallory"
    claims = jwt.decode((await tokens_for(demo))["id_token"], keys).claims
    assert (claims["aud"], claims["iss"], claims["nonce"], claims["sub"]) == (
        "x",
        "y",
        "z",
        "mallory",
    )
    assert claims["exp"] < demo.clock.now
    behaviour.id_token_sign_with_other_key = True
    id_token = (await tokens_for(demo))["id_token"]
    with pytest.raises(BadSignatureError):
        jwt.decode(id_token, keys)


# -- userinfo, introspection, control endpoints ----------------------------------------------------


async def test_introspect_and_userinfo(demo: Demo) -> None:
    body = await tokens_for(demo)
    resp = await demo.provider.post(
        "/introspect", data={"token": body["access_token"]}, headers=basic_auth()
    )
    info = await resp.json()
    assert (info["active"], info["sub"], info["client_id"]) == (True, "alice", CLIENT_ID)
    resp = await demo.provider.post("/introspect", data={"token": "nope"}, headers=basic_auth())
    assert await resp.json() == {"active": False}
    resp = await demo.provider.get("/userinfo")
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_control_endpoints(demo: Demo) -> None:
    await tokens_for(demo)
    stats = await (await demo.provider.get("/_demo/stats")).json()
    assert stats["token_calls"] == 1
    resp = await demo.provider.post(
        "/_demo/behaviour", json={"token_failures": [500, "timeout"], "token_delay_seconds": 1}
    )
    assert resp.status == 200
    assert demo.state.behaviour.token_failures == [500, "timeout"]
    assert demo.state.behaviour.token_delay_seconds == 1.0
    for bad in ({"nope": 1}, {"token_failures": [1.5]}, {"omit_refresh_token": "yes"}):
        assert (await demo.provider.post("/_demo/behaviour", json=bad)).status == 400
    assert (await demo.provider.post("/_demo/reset")).status == 200
    assert demo.state.behaviour.token_failures == []
    assert demo.state.counters["token_calls"] == 0


async def test_hanging_token_endpoint_does_not_hang_teardown(demo: Demo) -> None:
    demo.state.behaviour.token_failures = ["timeout"]
    demo.state.behaviour.timeout_seconds = 30
    with pytest.raises(asyncio.TimeoutError):
        await demo.provider.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            headers=basic_auth(),
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    assert demo.state.counters["token_calls"] == 1
