"""Token response parsing (RFC 6749 §5.1, §5.2) and provider quirks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenbroker.errors import ProtocolError, ProviderError, ProviderUnavailable
from tokenbroker.protocol.rfc6749 import parse_token_response
from tokenbroker.secret import Secret

NOW = datetime(2025, 1, 1, tzinfo=UTC)
JSON = "application/json; charset=utf-8"


def _parse(doc: dict[str, Any], status: int = 200, content_type: str | None = JSON) -> Any:
    return parse_token_response(status, content_type, json.dumps(doc).encode(), now=NOW)


def test_full_response() -> None:
    tok = _parse(
        {
            "access_token": "at-canary",
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "rt-canary",
            "id_token": "idt-canary",
            "scope": "openid email",
            "instance_url": "https://x.my.salesforce.com",
        }
    )
    assert tok.access_token == Secret("at-canary")
    assert tok.refresh_token == Secret("rt-canary")
    assert tok.id_token == Secret("idt-canary")
    assert tok.token_type == "Bearer"
    assert tok.expires_at == NOW + timedelta(seconds=3600)
    assert tok.scope == ("openid", "email")
    assert dict(tok.raw) == {
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid email",
        "instance_url": "https://x.my.salesforce.com",
    }
    assert "canary" not in repr(tok)


def test_minimal_response() -> None:
    tok = _parse({"access_token": "at"})
    assert tok.expires_at is None
    assert tok.refresh_token is None
    assert tok.id_token is None
    assert tok.scope is None
    assert tok.token_type == "Bearer"


@pytest.mark.parametrize(("value", "seconds"), [("3600", 3600), (3599.0, 3599), (0, 0)])
def test_expires_in_variants(value: object, seconds: int) -> None:
    assert _parse({"access_token": "a", "expires_in": value}).expires_at == NOW + timedelta(
        seconds=seconds
    )


@pytest.mark.parametrize("value", ["soon", -1, True, 1.5, [1], 10**12, "1e3", "٣"])
def test_bad_expires_in(value: object) -> None:
    with pytest.raises(ProtocolError, match="expires_in"):
        _parse({"access_token": "a", "expires_in": value})


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("repo,user", ("repo", "user")),
        ("repo, user", ("repo", "user")),
        ("a b  c", ("a", "b", "c")),
        (["x", "y"], ("x", "y")),
        ("", ()),
    ],
)
def test_scope_splitting(scope: object, expected: tuple[str, ...]) -> None:
    assert _parse({"access_token": "a", "scope": scope}).scope == expected


def test_github_form_encoded_body() -> None:
    body = b"access_token=gho_canary&scope=repo%2Cgist&token_type=bearer"
    tok = parse_token_response(200, "application/x-www-form-urlencoded", body, now=NOW)
    assert tok.access_token == Secret("gho_canary")
    assert tok.scope == ("repo", "gist")
    assert "access_token" not in tok.raw


def test_github_error_with_200() -> None:
    with pytest.raises(ProviderError) as info:
        _parse({"error": "bad_verification_code", "error_description": "The code is wrong"})
    assert info.value.oauth_error == "bad_verification_code"
    assert info.value.description == "The code is wrong"


def test_oauth_error_400_message_has_no_secrets() -> None:
    doc = {"error": "invalid_grant", "error_description": "rt-canary is revoked"}
    with pytest.raises(ProviderError) as info:
        _parse(doc, status=400)
    assert info.value.oauth_error == "invalid_grant"
    assert "canary" not in str(info.value)
    assert "canary" not in info.value.message


def test_error_response_even_with_access_token_is_an_error() -> None:
    with pytest.raises(ProviderError):
        _parse({"access_token": "at", "error": "invalid_scope"})


def test_slack_ok_false() -> None:
    with pytest.raises(ProviderError) as info:
        _parse({"ok": False, "error": "invalid_code"})
    assert info.value.oauth_error == "invalid_code"


@pytest.mark.parametrize("doc", [{"ok": False}, {"ok": False, "access_token": "xoxb"}])
def test_slack_ok_false_without_error_code(doc: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as info:
        _parse(doc)
    assert info.value.oauth_error == "invalid_error_code"


def test_slack_v2_nested_user_token_stripped_from_raw() -> None:
    tok = _parse(
        {
            "ok": True,
            "access_token": "xoxb-canary",
            "token_type": "bot",
            "team": {"id": "T1"},
            "authed_user": {"id": "U1", "access_token": "xoxp-canary", "refresh_token": "r"},
        }
    )
    assert tok.raw["authed_user"] == {"id": "U1"}
    assert tok.raw["team"] == {"id": "T1"}
    assert "canary" not in json.dumps(dict(tok.raw))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_is_unavailable(status: int) -> None:
    with pytest.raises(ProviderUnavailable):
        parse_token_response(status, "text/html", b"<html>oops</html>", now=NOW)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html>at-canary</html>"),
        ("application/json", b"not json at-canary"),
        ("application/json", b"[1, 2]"),
        ("application/json", b"\xff\xfe"),
        ("image/png", b'{"access_token": "a"}'),
    ],
)
def test_garbage_is_protocol_error_without_echo(content_type: str, body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_token_response(200, content_type, body, now=NOW)
    assert "canary" not in str(info.value)


def test_huge_body_refused() -> None:
    body = json.dumps({"access_token": "a", "pad": "x" * 300_000}).encode()
    with pytest.raises(ProtocolError, match="larger"):
        parse_token_response(200, JSON, body, now=NOW)


def test_missing_content_type_json_accepted() -> None:
    assert parse_token_response(200, None, b'{"access_token": "a"}', now=NOW).access_token


def test_4xx_without_error_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        _parse({"access_token": "a"}, status=401)


@pytest.mark.parametrize("doc", [{}, {"access_token": ""}, {"access_token": 5}])
def test_missing_access_token(doc: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="access_token"):
        _parse(doc)


def test_non_string_refresh_token_refused() -> None:
    with pytest.raises(ProtocolError, match="refresh_token"):
        _parse({"access_token": "a", "refresh_token": 12})


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_token_response(200, JSON, b'{"access_token": "a"}', now=datetime(2025, 1, 1))
