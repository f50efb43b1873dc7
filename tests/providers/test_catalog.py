"""The provider catalog: every shipped template builds, and the merge rules hold."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tokenbroker.errors import ConfigError
from tokenbroker.providers.catalog import (
    available_templates,
    build_provider,
    load_template,
    provider_summaries,
)
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.secret import Secret

REQUIRED = {
    "google",
    "microsoft",
    "github",
    "gitlab",
    "slack",
    "atlassian",
    "salesforce",
    "hubspot",
    "notion",
    "dropbox",
    "box",
    "zoom",
    "linear",
    "asana",
    "okta",
}
# Variables without a default, per template.
REQUIRED_VARS: dict[str, dict[str, str]] = {"okta": {"domain": "dev-123456.okta.com"}}
SECRET = Secret("s3cret")


def build(name: str, *, secret: Secret | None = SECRET, **section: Any) -> ProviderSpec:
    return build_provider(name, {"client_id": "client-1", **section}, client_secret=secret)


def from_template(template: str, **extra: Any) -> ProviderSpec:
    extra.setdefault("vars", REQUIRED_VARS.get(template, {}))
    return build(template, template=template, **extra)


def test_at_least_the_required_templates_ship() -> None:
    names = available_templates()
    assert len(names) >= 15
    assert set(names) >= REQUIRED


@pytest.mark.parametrize("template", available_templates())
def test_every_template_builds(template: str) -> None:
    spec = from_template(template)
    assert spec.template == template
    assert spec.display_name
    assert spec.docs_url
    assert spec.docs_url.startswith("https://")
    assert spec.token_endpoint.startswith("https://")
    endpoints = [
        spec.authorization_endpoint,
        spec.token_endpoint,
        spec.revocation_endpoint,
        spec.userinfo_endpoint,
        spec.jwks_uri,
        spec.device_authorization_endpoint,
        spec.issuer,
        spec.account.userinfo_url,
    ]
    for url in filter(None, endpoints):
        assert urlsplit(url).scheme == "https", url
        assert "{" not in url
    bases = [b for b in [spec.api_base_url, *spec.api_bases.values()] if b]
    assert bases
    for base in bases:
        assert base.startswith(("https://", "{instance_url}"))
    assert spec.operations
    if spec.account.source == "id_token":
        assert spec.uses_openid
        assert spec.issuer is not None
        assert spec.jwks_uri is not None


def test_summaries_cover_every_template() -> None:
    summaries = {s.name: s for s in provider_summaries()}
    assert set(summaries) == set(available_templates())
    assert summaries["google"].oidc
    assert summaries["google"].tokens_expire
    assert not summaries["github"].oidc
    assert not summaries["github"].tokens_expire


def test_unknown_template_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"googel.*'google'"):
        load_template("googel")
    with pytest.raises(ConfigError, match="unknown provider template"):
        load_template("../../etc/passwd")


def test_google_offline_access() -> None:
    spec = from_template("google")
    assert spec.authorization_params["access_type"] == "offline"
    assert spec.prompt_consent_for_refresh is True
    assert spec.issuer == "https://accounts.google.com"
    assert spec.device_authorization_endpoint == "https://oauth2.googleapis.com/device/code"


def test_github_quirks() -> None:
    spec = from_template("github")
    assert spec.tokens_expire is False
    assert spec.revocation_endpoint is None
    assert spec.issuer is None
    assert not spec.uses_openid
    assert spec.account.source == "userinfo"
    assert spec.account.userinfo_url == "https://api.github.com/user"
    assert (spec.account.id_path, spec.account.label_path) == ("id", "login")
    assert spec.device_authorization_endpoint == "https://github.com/login/device/code"
    assert "X-GitHub-Api-Version" in spec.forward_headers


def test_microsoft_tenant_default_and_substitution() -> None:
    default = from_template("microsoft")
    assert default.variables == {"tenant": "common"}
    assert "/common/oauth2/v2.0/authorize" in default.authorization_endpoint
    assert default.issuer is None
    assert default.prompt_consent_for_refresh is False  # template overrides the OIDC rule
    spec = from_template("microsoft", vars={"tenant": "contoso.onmicrosoft.com"})
    assert spec.token_endpoint == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    guid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert guid in from_template("microsoft", vars={"tenant": guid}).jwks_uri  # type: ignore[operator]
    batch = {op.name: op for op in spec.operations}["batch"]
    assert batch.explicit
    assert batch.path == "/$batch"


@pytest.mark.parametrize(
    "tenant",
    ["evil.com/../x", "a@b", "evil.com:443", "evil.com#", "a b", "common/", "..", "{tenant}", ""],
)
def test_microsoft_hostile_tenant_refused(tenant: str) -> None:
    with pytest.raises(ConfigError, match=r"provider 'microsoft'.*'tenant'"):
        from_template("microsoft", vars={"tenant": tenant})


def test_okta_domain_pattern() -> None:
    spec = from_template("okta", vars={"domain": "acme.oktapreview.com"})
    assert spec.issuer == "https://acme.oktapreview.com/oauth2/default"
    custom = from_template(
        "okta", vars={"domain": "acme.okta.com", "authorization_server": "aus1a2b3c4d5e6f7g8h9"}
    )
    assert custom.token_endpoint == "https://acme.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9/v1/token"
    for bad in ("evil.com", "okta.com.evil.com", "acme.okta.com.evil.com", "a.okta.com@evil.com"):
        with pytest.raises(ConfigError, match=r"'domain'"):
            from_template("okta", vars={"domain": bad})


def test_okta_domain_is_required() -> None:
    with pytest.raises(ConfigError, match=r"provider 'okta'.*needs template variable 'domain'"):
        build("okta", template="okta")


def test_unknown_template_variable_refused() -> None:
    with pytest.raises(ConfigError, match="unknown template variable 'tenat'"):
        from_template("microsoft", vars={"tenat": "common"})
    with pytest.raises(ConfigError, match="vars needs a template"):
        build("x", issuer="https://idp.example.com", vars={"a": "b"})


def test_salesforce_connect_var() -> None:
    spec = from_template("salesforce")
    (var,) = spec.connect_vars
    assert (var.name, var.source, var.host_pattern) == (
        "instance_url",
        "instance_url",
        "*.salesforce.com",
    )
    assert spec.api_base_url == "{instance_url}"
    assert spec.revocation_endpoint == "https://login.salesforce.com/services/oauth2/revoke"
    sandbox = from_template("salesforce", vars={"login_host": "test.salesforce.com"})
    assert sandbox.token_endpoint == "https://test.salesforce.com/services/oauth2/token"
    my_domain = from_template(
        "salesforce", vars={"login_host": "acme--uat.sandbox.my.salesforce.com"}
    )
    assert my_domain.authorization_endpoint.startswith(
        "https://acme--uat.sandbox.my.salesforce.com/"
    )
    with pytest.raises(ConfigError, match="'login_host'"):
        from_template("salesforce", vars={"login_host": "evil.com"})


def test_connect_var_placeholder_only_as_url_prefix() -> None:
    with pytest.raises(ConfigError, match="only a path may follow"):
        from_template("salesforce", api_bases={"x": "{instance_url}.evil.com/x"})
    with pytest.raises(ConfigError, match="instance_url"):
        from_template("salesforce", token_endpoint="{instance_url}/services/oauth2/token")


def test_unknown_section_key_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'scope'.*did you mean 'scopes'"):
        build("google", template="google", scope=["openid"])
    with pytest.raises(ConfigError, match=r"allowed keys:.*client_id"):
        build("google", template="google", client_secret="inline")


def test_client_id_required() -> None:
    with pytest.raises(ConfigError, match="client_id is required"):
        build_provider("google", {"template": "google"}, client_secret=SECRET)


def test_needs_template_issuer_or_endpoints() -> None:
    with pytest.raises(ConfigError, match="needs a template, an issuer"):
        build("acme")
    with pytest.raises(ConfigError, match="needs a template, an issuer"):
        build("acme", authorization_endpoint="https://as.example.com/authorize")


def test_explicit_endpoints_without_template() -> None:
    spec = build(
        "acme",
        authorization_endpoint="https://as.example.com/authorize",
        token_endpoint="https://as.example.com/token",
        api_base_url="https://api.example.com",
        scopes="read write",
    )
    assert spec.scopes == ("read", "write")
    assert spec.template is None
    assert spec.display_name == "acme"
    assert spec.code_challenge_methods_supported is None


def test_http_endpoint_refused_unless_loopback_allowed() -> None:
    section: dict[str, Any] = {
        "authorization_endpoint": "http://127.0.0.1:9000/authorize",
        "token_endpoint": "http://127.0.0.1:9000/token",
    }
    with pytest.raises(ConfigError, match="authorization_endpoint must use https"):
        build("dev", **section)
    spec = build("dev", allow_insecure_loopback=True, **section)
    assert spec.token_endpoint == "http://127.0.0.1:9000/token"
    assert spec.allow_insecure_loopback
    with pytest.raises(ConfigError, match="token_endpoint must use https"):
        build(
            "dev",
            allow_insecure_loopback=True,
            authorization_endpoint="http://localhost/authorize",
            token_endpoint="http://as.example.com/token",
        )
    with pytest.raises(ConfigError, match="api_base_url"):
        from_template("github", api_base_url="http://api.github.com")


def test_issuer_without_template_relies_on_metadata() -> None:
    section: dict[str, Any] = {
        "issuer": "https://idp.example.com",
        "scopes": ["openid", "offline_access"],
    }
    with pytest.raises(ConfigError, match="no authorization_endpoint"):
        build("idp", **section)
    metadata = {
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
        "revocation_endpoint": "https://idp.example.com/revoke",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    spec = build_provider(
        "idp", {"client_id": "c", **section}, client_secret=SECRET, metadata=metadata
    )
    assert spec.authorization_endpoint == "https://idp.example.com/auth"
    assert spec.issuer == "https://idp.example.com"
    assert spec.code_challenge_methods_supported == ("S256",)
    assert spec.iss_parameter_supported
    assert spec.token_endpoint_auth_method == "client_secret_post"
    assert spec.id_token_signing_alg_values_supported == ("ES256",)
    # OIDC Core §11: offline_access with openid asks for consent unless told otherwise.
    assert spec.prompt_consent_for_refresh is True
    assert spec.account.source == "id_token"


def test_hostile_metadata_endpoint_refused() -> None:
    metadata = {
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "javascript:alert(1)",
        "token_endpoint": "https://idp.example.com/token",
    }
    with pytest.raises(ConfigError, match="authorization_endpoint"):
        build_provider(
            "idp",
            {"client_id": "c", "issuer": "https://idp.example.com"},
            client_secret=SECRET,
            metadata=metadata,
        )


def test_metadata_without_pkce_is_not_patched_by_the_template() -> None:
    metadata = {
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_endpoint": "https://oauth2.googleapis.com/token",
    }
    spec = build_provider(
        "google", {"client_id": "c", "template": "google"}, client_secret=SECRET, metadata=metadata
    )
    assert spec.code_challenge_methods_supported is None


def test_precedence_section_over_metadata_over_template() -> None:
    metadata = {
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": "https://accounts.google.com/from-metadata",
        "token_endpoint": "https://oauth2.googleapis.com/from-metadata",
        "code_challenge_methods_supported": ["S256"],
    }
    spec = build_provider(
        "google",
        {
            "client_id": "c",
            "template": "google",
            "token_endpoint": "https://oauth2.googleapis.com/from-config",
            "prompt_consent_for_refresh": False,
            "scopes": ["openid", "https://www.googleapis.com/auth/gmail.readonly"],
            "authorization_params": {"hd": "example.com"},
            "display_name": "Google Workspace",
            "refresh_sends_scope": True,
        },
        client_secret=SECRET,
        metadata=metadata,
    )
    assert spec.token_endpoint == "https://oauth2.googleapis.com/from-config"
    assert spec.authorization_endpoint == "https://accounts.google.com/from-metadata"
    assert spec.revocation_endpoint == "https://oauth2.googleapis.com/revoke"  # template
    assert spec.prompt_consent_for_refresh is False
    assert spec.scopes == ("openid", "https://www.googleapis.com/auth/gmail.readonly")
    assert spec.authorization_params == {
        "access_type": "offline",
        "include_granted_scopes": "true",
        "hd": "example.com",
    }
    assert spec.display_name == "Google Workspace"
    assert spec.refresh_sends_scope is True
    assert spec.rotates_refresh_tokens is False  # ProviderSpec default via template


def test_section_substitutes_template_variables_too() -> None:
    spec = from_template(
        "gitlab",
        vars={"host": "gitlab.example.org"},
        api_bases={"extra": "https://{host}/extra"},
    )
    assert spec.api_base_url == "https://gitlab.example.org/api/v4"
    assert spec.issuer == "https://gitlab.example.org"
    assert spec.api_bases["extra"] == "https://gitlab.example.org/extra"


def test_operations_merge_by_name() -> None:
    spec = from_template(
        "linear",
        operations=[
            {"name": "graphql", "method": "POST", "path": "/graphql", "scopes": ["write"]},
            {"name": "custom", "method": "get", "path": "/x/{id}"},
        ],
    )
    ops = {op.name: op for op in spec.operations}
    assert ops["graphql"].scopes == ("write",)
    assert not ops["graphql"].explicit
    assert ops["custom"].method == "GET"


@pytest.mark.parametrize(
    "op",
    [
        {"name": "a", "method": "GET", "path": "relative"},
        {"name": "a", "method": "GET", "path": "/a/../b"},
        {"name": "a", "method": "GET", "path": "//evil.com/x"},
        {"name": "a", "method": "TRACE", "path": "/a"},
        {"name": "a", "method": "GET", "path": "/a", "base": "nope"},
        {"name": "a", "method": "GET", "path": "/a", "typo": 1},
    ],
)
def test_bad_operations_refused(op: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="operations"):
        from_template("github", operations=[op])


@pytest.mark.parametrize("param", ["redirect_uri", "state", "client_id", "scope", "code_challenge"])
def test_reserved_authorization_params_refused(param: str) -> None:
    with pytest.raises(ConfigError, match=f"must not set '{param}'"):
        from_template("github", authorization_params={param: "x"})


def test_slack_user_scope_is_reserved_too() -> None:
    spec = from_template("slack")
    assert spec.scope_parameter == "user_scope"
    assert spec.token_response_path == "authed_user"
    assert spec.scope_separator == ","
    with pytest.raises(ConfigError, match="must not set 'user_scope'"):
        from_template("slack", authorization_params={"user_scope": "admin"})


@pytest.mark.parametrize(
    "header", ["Authorization", "cookie", "Host", "Connection", "X-Forwarded-Host"]
)
def test_credential_and_hop_headers_never_forwarded(header: str) -> None:
    with pytest.raises(ConfigError, match="cannot be forwarded"):
        from_template("notion", forward_headers=[header])


def test_forward_headers_replace_template_list() -> None:
    spec = from_template("notion", forward_headers=["Notion-Version", "X-Extra"])
    assert spec.forward_headers == ("Notion-Version", "X-Extra")


def test_scopes_validated() -> None:
    with pytest.raises(ConfigError, match="invalid scope"):
        from_template("github", scopes=["repo", 'a"b'])
    with pytest.raises(ConfigError, match="invalid scope"):
        from_template("linear", scopes=["read,admin"])


def test_public_client_uses_no_client_authentication() -> None:
    assert from_template("github", secret=None).token_endpoint_auth_method == "none"
    with pytest.raises(ConfigError, match="needs a client secret"):
        from_template("github", secret=None, token_endpoint_auth_method="client_secret_basic")


def test_wrong_types_refused() -> None:
    with pytest.raises(ConfigError, match="tokens_expire must be true or false"):
        from_template("github", tokens_expire="no")
    with pytest.raises(ConfigError, match="refresh_token_idle_ttl must be a positive integer"):
        from_template("github", refresh_token_idle_ttl=-1)
    with pytest.raises(ConfigError, match="token_endpoint_auth_method must be one of"):
        from_template("github", token_endpoint_auth_method="private_key_jwt")


def test_account_id_token_needs_openid() -> None:
    with pytest.raises(ConfigError, match="needs the 'openid' scope"):
        from_template("google", scopes=["email"], account={"source": "id_token"})


def test_resource_must_be_absolute_without_fragment() -> None:
    assert from_template("github", resource="https://mcp.example.com/").resource
    with pytest.raises(ConfigError, match="resource"):
        from_template("github", resource="https://mcp.example.com/#frag")


def test_provider_name_checked() -> None:
    with pytest.raises(ConfigError, match="invalid provider name"):
        build_provider("../x", {"template": "github", "client_id": "c"}, client_secret=SECRET)
