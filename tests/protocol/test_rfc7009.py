"""Token revocation (RFC 7009 §2.1, §2.2, §2.2.1)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from tokenbroker.protocol.request import ClientAuth
from tokenbroker.protocol.rfc7009 import classify_revocation_response, revocation_request
from tokenbroker.secret import Secret

AUTH = ClientAuth("cid", "client_secret_basic", Secret("sec"))


def test_request_with_hint() -> None:
    req = revocation_request(
        "https://as.example.com/revoke", Secret("rt-canary"), "refresh_token", AUTH
    )
    assert dict(parse_qsl(req.body)) == {"token": "rt-canary", "token_type_hint": "refresh_token"}
    assert dict(req.headers)["Authorization"].startswith("Basic ")
    assert "canary" not in repr(req)


def test_request_without_hint_public_client() -> None:
    req = revocation_request(
        "https://as.example.com/revoke", Secret("at"), None, ClientAuth("cid", "none")
    )
    assert dict(parse_qsl(req.body)) == {"token": "at", "client_id": "cid"}


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (200, None, "revoked"),
        (204, None, "revoked"),
        (503, None, "retry"),
        (500, None, "retry"),
        (502, None, "retry"),
        (429, None, "retry"),
        (408, None, "retry"),
        (400, "invalid_token", "revoked"),
        (400, "invalid_grant", "revoked"),
        (400, "unsupported_token_type", "failed"),
        (400, None, "failed"),
        (401, "invalid_client", "failed"),
        (403, None, "failed"),
        (404, None, "failed"),
        (302, None, "failed"),
    ],
)
def test_classification(status: int, error: str | None, outcome: str) -> None:
    assert classify_revocation_response(status, error) == outcome
