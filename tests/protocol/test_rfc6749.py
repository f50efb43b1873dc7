"""Authorization code grant builders and parsers (RFC 6749 §4.1, §6, §2.3.1)."""

from __future__ import annotations

import base64
from dataclasses import replace
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from tokenbroker.errors import ConfigError, ProtocolError
from tokenbroker.protocol.request import ClientAuth, PreparedRequest, basic_authorization
from tokenbroker.protocol.rfc6749 import (
    AuthorizationRequest,
    authorization_code_request,
    authorization_url,
    parse_callback,
    refresh_token_request,
)
from tokenbroker.secret import Secret

TOKEN_URL = "https://as.example.com/token"
SECRET = "s3cr3t:with%odd chars"


def _req(**changes: object) -> AuthorizationRequest:
    base = AuthorizationRequest(
        endpoint="https://as.example.com/authorize?tenant=abc",
        client_id="client-1",
        redirect_uri="https://broker.example.com/callback",
        state="state-123",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        scopes=("openid", "email"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_authorization_url_has_security_params_and_keeps_query() -> None:
    url = authorization_url(_req(nonce="n-1", resource="https://api.example.com", prompt="consent"))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "as.example.com", "/authorize")
    q = _query(url)
    assert q["tenant"] == ["abc"]
    assert q["response_type"] == ["code"]
    assert q["client_id"] == ["client-1"]
    assert q["redirect_uri"] == ["https://broker.example.com/callback"]
    assert q["state"] == ["state-123"]
    assert q["code_challenge"] == ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"]
    assert q["code_challenge_method"] == ["S256"]
    assert q["scope"] == ["openid email"]
    assert q["nonce"] == ["n-1"]
    assert q["resource"] == ["https://api.example.com"]
    assert q["prompt"] == ["consent"]
    assert all(len(v) == 1 for v in q.values())


def test_scope_separator_and_optional_params_omitted() -> None:
    q = _query(authorization_url(_req(scopes=("repo", "user"), scope_separator=",")))
    assert q["scope"] == ["repo,user"]
    assert "nonce" not in q
    assert "resource" not in q
    assert "prompt" not in q
    assert "scope" not in _query(authorization_url(_req(scopes=())))


def test_extra_params_are_added() -> None:
    q = _query(authorization_url(_req(extra={"access_type": "offline", "prompt": "login"})))
    assert q["access_type"] == ["offline"]
    assert q["prompt"] == ["login"]


def test_prompt_field_wins_over_extra_prompt() -> None:
    q = _query(authorization_url(_req(extra={"prompt": "none"}, prompt="consent")))
    assert q["prompt"] == ["consent"]


@pytest.mark.parametrize(
    "name",
    [
        "state",
        "code_challenge",
        "code_challenge_method",
        "redirect_uri",
        "client_id",
        "response_type",
        "nonce",
        "scope",
        "resource",
    ],
)
def test_extra_params_cannot_override_security_params(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        authorization_url(_req(extra={name: "evil"}))


@pytest.mark.parametrize("name", ["state", "code_challenge_method", "redirect_uri"])
def test_endpoint_query_cannot_carry_security_params(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        authorization_url(_req(endpoint=f"https://as.example.com/authorize?{name}=evil"))


def test_endpoint_with_fragment_refused() -> None:
    with pytest.raises(ConfigError, match="fragment"):
        authorization_url(_req(endpoint="https://as.example.com/authorize#x"))


def test_parse_callback_success() -> None:
    result = parse_callback({"code": "the-code", "state": "s", "iss": "https://as.example.com"})
    assert not result.is_error
    assert result.code == Secret("the-code")
    assert result.state == "s"
    assert result.iss == "https://as.example.com"
    assert "the-code" not in repr(result)


def test_parse_callback_missing_state_is_returned_not_raised() -> None:
    result = parse_callback({"code": "c"})
    assert result.state is None
    assert result.iss is None


def test_parse_callback_empty_iss_is_kept_as_present() -> None:
    assert parse_callback({"code": "c", "iss": ""}).iss == ""


def test_parse_callback_error() -> None:
    result = parse_callback(
        {
            "error": "access_denied",
            "error_description": "The user said no\r\n<script>",
            "error_uri": "https://as.example.com/e",
            "state": "s",
        }
    )
    assert result.is_error
    assert result.code is None
    assert result.error == "access_denied"
    assert result.error_description == "The user said no<script>"
    err = result.to_provider_error()
    assert err.oauth_error == "access_denied"
    assert err.code == "provider_error"


def test_parse_callback_error_code_sanitized() -> None:
    assert parse_callback({"error": "bad\ncode"}).error == "invalid_error_code"


def test_parse_callback_neither_code_nor_error() -> None:
    with pytest.raises(ProtocolError):
        parse_callback({"state": "s"})


def _form(req: PreparedRequest) -> dict[str, str]:
    pairs = parse_qsl(req.body, keep_blank_values=True, strict_parsing=True)
    assert len({k for k, _ in pairs}) == len(pairs)
    return dict(pairs)


def _headers(req: PreparedRequest) -> dict[str, str]:
    return dict(req.headers)


def test_code_request_basic_auth() -> None:
    auth = ClientAuth("client 1:x", "client_secret_basic", Secret(SECRET))
    req = authorization_code_request(
        TOKEN_URL,
        code=Secret("the-code"),
        redirect_uri="https://broker.example.com/callback",
        code_verifier=Secret("v" * 43),
        auth=auth,
        resource="https://api.example.com",
    )
    assert req.url == TOKEN_URL
    assert req.method == "POST"
    assert _form(req) == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "https://broker.example.com/callback",
        "code_verifier": "v" * 43,
        "resource": "https://api.example.com",
    }
    headers = _headers(req)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Accept"] == "application/json"
    raw = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    # RFC 6749 §2.3.1: form-url-encode both parts before base64.
    assert raw == "client+1%3Ax:s3cr3t%3Awith%25odd+chars"


def test_basic_authorization_plain_values() -> None:
    value = basic_authorization("abc", Secret("def"))
    assert value == "Basic " + base64.b64encode(b"abc:def").decode()


def test_code_request_client_secret_post() -> None:
    auth = ClientAuth("cid", "client_secret_post", Secret("sec"))
    req = authorization_code_request(
        TOKEN_URL,
        code=Secret("c"),
        redirect_uri="https://b/cb",
        code_verifier=Secret("v" * 43),
        auth=auth,
    )
    form = _form(req)
    assert form["client_id"] == "cid"
    assert form["client_secret"] == "sec"
    assert "resource" not in form
    assert "Authorization" not in _headers(req)


def test_code_request_public_client() -> None:
    req = authorization_code_request(
        TOKEN_URL,
        code=Secret("c"),
        redirect_uri="https://b/cb",
        code_verifier=Secret("v" * 43),
        auth=ClientAuth("cid", "none"),
    )
    form = _form(req)
    assert form["client_id"] == "cid"
    assert "client_secret" not in form
    assert "Authorization" not in _headers(req)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_methods_need_a_secret(method: str) -> None:
    with pytest.raises(ConfigError):
        refresh_token_request(
            TOKEN_URL,
            refresh_token=Secret("rt"),
            auth=ClientAuth("cid", method, None),  # type: ignore[arg-type]
        )


def test_refresh_request_with_and_without_scopes() -> None:
    auth = ClientAuth("cid", "client_secret_basic", Secret("sec"))
    plain = _form(refresh_token_request(TOKEN_URL, refresh_token=Secret("rt-1"), auth=auth))
    assert plain == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    scoped = _form(
        refresh_token_request(
            TOKEN_URL,
            refresh_token=Secret("rt-1"),
            auth=auth,
            scopes=["a", "b"],
            scope_separator=",",
            resource="https://api.example.com",
        )
    )
    assert scoped["scope"] == "a,b"
    assert scoped["resource"] == "https://api.example.com"


def test_prepared_request_repr_hides_secrets() -> None:
    auth = ClientAuth("cid", "client_secret_post", Secret("client-secret-canary"))
    req = refresh_token_request(TOKEN_URL, refresh_token=Secret("rt-canary"), auth=auth)
    text = repr(req) + str(req)
    assert "canary" not in text
    assert TOKEN_URL in text
