"""Provider quirks in the code exchange: Slack's nested user token, Salesforce's instance URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tokenbroker.connect.exchange import extract_connect_vars, parse_tokens
from tokenbroker.errors import ProtocolError, ProviderError
from tokenbroker.providers.catalog import build_provider
from tokenbroker.secret import Secret

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _spec(template: str, **extra: object):  # type: ignore[no-untyped-def]
    return build_provider(
        template, {"template": template, "client_id": "x", **extra}, client_secret=Secret("s")
    )


def test_slack_user_token_is_taken_from_authed_user_and_raw_keeps_the_account() -> None:
    body = {
        "ok": True,
        "access_token": "xoxb-bot-token",
        "team": {"id": "T1", "name": "Acme"},
        "authed_user": {"id": "U1", "access_token": "xoxp-user-token", "scope": "a,b"},
    }
    tokens = parse_tokens(_spec("slack"), 200, "application/json", json.dumps(body).encode(), NOW)
    assert tokens.access_token.reveal() == "xoxp-user-token"
    assert tokens.scope == ("a", "b")
    assert tokens.raw["authed_user"]["id"] == "U1"
    assert "xoxp-user-token" not in json.dumps(tokens.raw)
    assert "xoxb-bot-token" not in json.dumps(tokens.raw)


def test_slack_error_with_http_200_is_an_error() -> None:
    body = json.dumps({"ok": False, "error": "invalid_code"}).encode()
    with pytest.raises(ProviderError):
        parse_tokens(_spec("slack"), 200, "application/json", body, NOW)


def test_slack_scopes_travel_in_user_scope() -> None:
    spec = _spec("slack")
    assert spec.scope_parameter == "user_scope"
    assert spec.scope_separator == ","


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.my.salesforce.com",
        "https://acme--sandbox.sandbox.my.salesforce.com",
    ],
)
def test_salesforce_instance_url_on_salesforce_hosts_is_kept(url: str) -> None:
    spec = _spec("salesforce")
    assert extract_connect_vars(spec, {"instance_url": url}) == {"instance_url": url}


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example",
        "https://salesforce.com.evil.example",
        "http://acme.my.salesforce.com",
        "https://user@evil.example/.my.salesforce.com",
        "https://evil.example#.my.salesforce.com",
    ],
)
def test_salesforce_instance_url_elsewhere_is_refused(url: str) -> None:
    with pytest.raises(ProtocolError):
        extract_connect_vars(_spec("salesforce"), {"instance_url": url})


def test_microsoft_without_fixed_issuer_takes_the_account_from_userinfo() -> None:
    spec = _spec("microsoft", vars={"tenant": "common"})
    assert spec.issuer is None
    assert spec.account.source == "userinfo"
