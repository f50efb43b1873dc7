"""Device authorization grant (RFC 8628 §3.1, §3.2, §3.4, §3.5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tokenbroker.errors import ProtocolError, ProviderError, ProviderUnavailable
from tokenbroker.protocol.request import ClientAuth
from tokenbroker.protocol.rfc8628 import (
    DEVICE_CODE_GRANT,
    classify_poll,
    device_authorization_request,
    device_token_request,
    next_interval,
    parse_device_authorization_response,
)
from tokenbroker.protocol.token_response import parse_token_response
from tokenbroker.secret import Secret

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PUBLIC = ClientAuth("cid", "none")


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_code": "dc-canary",
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://example.com/device",
        "verification_uri_complete": "https://example.com/device?user_code=WDJB-MJHT",
        "expires_in": 1800,
        "interval": 5,
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _parse(doc: dict[str, Any], *, loopback: bool = False) -> Any:
    return parse_device_authorization_response(
        200, "application/json", json.dumps(doc).encode(), now=NOW, allow_insecure_loopback=loopback
    )


def test_authorization_request() -> None:
    req = device_authorization_request(
        "https://as.example.com/device",
        auth=PUBLIC,
        scopes=["repo", "user"],
        resource="https://api.example.com",
    )
    assert dict(parse_qsl(req.body)) == {
        "scope": "repo user",
        "resource": "https://api.example.com",
        "client_id": "cid",
    }


def test_parse_response() -> None:
    auth = _parse(_doc())
    assert auth.device_code == Secret("dc-canary")
    assert auth.user_code == "WDJB-MJHT"
    assert auth.verification_uri == "https://example.com/device"
    assert auth.verification_uri_complete == "https://example.com/device?user_code=WDJB-MJHT"
    assert auth.expires_at == NOW + timedelta(seconds=1800)
    assert auth.interval == 5
    assert "canary" not in repr(auth)


def test_defaults_and_google_legacy_name() -> None:
    doc = _doc(
        interval=None,
        verification_uri_complete=None,
        verification_uri=None,
        verification_url="https://www.google.com/device",
        expires_in="1800",
    )
    auth = _parse(doc)
    assert auth.interval == 5
    assert auth.verification_uri_complete is None
    assert auth.verification_uri == "https://www.google.com/device"


def test_zero_interval_clamped() -> None:
    assert _parse(_doc(interval=0)).interval == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("verification_uri", "javascript:alert(1)"),
        ("verification_uri", "http://evil.example.com/device"),
        ("verification_uri_complete", "javascript:alert(1)"),
        ("verification_uri_complete", "https://example.com/`x`"),
        ("verification_uri", None),
        ("verification_uri", 7),
        ("device_code", None),
        ("device_code", ""),
        ("user_code", None),
        ("user_code", "A" * 65),
        ("user_code", "AB\nCD"),
        ("expires_in", None),
        ("expires_in", "later"),
    ],
)
def test_hostile_or_incomplete_responses(field: str, value: object) -> None:
    with pytest.raises(ProtocolError):
        _parse(_doc(**{field: value}))


def test_loopback_verification_uri_in_dev() -> None:
    doc = _doc(verification_uri="http://127.0.0.1:9000/device", verification_uri_complete=None)
    assert _parse(doc, loopback=True).verification_uri == "http://127.0.0.1:9000/device"


def test_error_response() -> None:
    body = json.dumps({"error": "invalid_client"}).encode()
    with pytest.raises(ProviderError):
        parse_device_authorization_response(400, "application/json", body, now=NOW)
    with pytest.raises(ProviderUnavailable):
        parse_device_authorization_response(503, "text/html", b"<html>", now=NOW)


def test_token_request() -> None:
    req = device_token_request(
        "https://as.example.com/token", device_code=Secret("dc-canary"), auth=PUBLIC
    )
    assert dict(parse_qsl(req.body)) == {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": "dc-canary",
        "client_id": "cid",
    }
    assert "canary" not in repr(req)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ("authorization_pending", "pending"),
        ("slow_down", "slow_down"),
        ("access_denied", "denied"),
        ("expired_token", "expired"),
        ("invalid_grant", "error"),
        ("something_new", "error"),
    ],
)
def test_classify_poll(error: str, outcome: str) -> None:
    assert classify_poll(error) == outcome


def test_poll_error_flows_through_token_response_parser() -> None:
    body = json.dumps({"error": "authorization_pending"}).encode()
    with pytest.raises(ProviderError) as info:
        parse_token_response(400, "application/json", body, now=NOW)
    assert classify_poll(info.value.oauth_error) == "pending"


def test_next_interval_adds_five_per_slow_down() -> None:
    interval = 5
    interval = next_interval(interval, "slow_down")
    assert interval == 10
    interval = next_interval(interval, "slow_down")
    assert interval == 15
    assert next_interval(interval, "pending") == 15
