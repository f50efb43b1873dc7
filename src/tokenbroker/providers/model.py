"""What the broker knows about one configured provider, after templates and discovery are merged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from tokenbroker.secret import Secret

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True)
class ConnectVar:
    """A value taken from the token response at connect time (e.g. Salesforce ``instance_url``).

    ``source`` is a dotted path into the token response JSON; the value must be an https URL
    (or a bare host) whose host matches ``host_pattern`` (fnmatch syntax, e.g.
    ``*.my.salesforce.com``), otherwise the connect fails.
    """

    name: str
    source: str
    host_pattern: str


@dataclass(frozen=True)
class AccountIdentity:
    """Where the provider account's stable id (and a human label) come from.

    ``source`` is ``"id_token"`` (claims of the validated ID token), ``"token_response"``
    (the token endpoint's JSON) or ``"userinfo"`` (a GET of ``userinfo_url`` with the new
    access token). ``id_path`` / ``label_path`` are dotted paths into that JSON.
    """

    source: Literal["id_token", "token_response", "userinfo"] = "id_token"
    id_path: str = "sub"
    label_path: str | None = "email"
    userinfo_url: str | None = None


@dataclass(frozen=True)
class Operation:
    """A named API operation the gateway can match (issue 4 fills these in)."""

    name: str
    method: str
    path: str
    scopes: tuple[str, ...] = ()
    base: str | None = None
    explicit: bool = False


@dataclass(frozen=True)
class ProviderSpec:
    """A provider ready to use: endpoints resolved, template variables substituted."""

    name: str
    display_name: str
    client_id: str
    client_secret: Secret | None
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    device_authorization_endpoint: str | None = None
    token_endpoint_auth_method: ClientAuthMethod = "client_secret_basic"
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    authorization_params: Mapping[str, str] = field(default_factory=dict)
    # OIDC Core §11: ask for consent so the provider issues a refresh token for offline_access.
    prompt_consent_for_refresh: bool = False
    # From RFC 8414 metadata; None means the provider publishes no metadata (e.g. GitHub).
    code_challenge_methods_supported: tuple[str, ...] | None = None
    iss_parameter_supported: bool = False
    id_token_signing_alg_values_supported: tuple[str, ...] = ("RS256",)
    resource: str | None = None
    api_base_url: str | None = None
    api_bases: Mapping[str, str] = field(default_factory=dict)
    connect_vars: tuple[ConnectVar, ...] = ()
    account: AccountIdentity = field(default_factory=AccountIdentity)
    # False for providers whose access tokens never expire (GitHub OAuth apps).
    tokens_expire: bool = True
    # Quirk: some providers require `scope` on the refresh request, others reject it.
    refresh_sends_scope: bool = False
    # Quirk: the provider rotates refresh tokens on every refresh.
    rotates_refresh_tokens: bool = False
    # Quirk: revocation endpoint wants the access token (not the refresh token) or both.
    revocation_token_types: tuple[str, ...] = ("refresh_token", "access_token")
    # Idle lifetime of a refresh token in seconds, if the provider documents one.
    refresh_token_idle_ttl: int | None = None
    operations: tuple[Operation, ...] = ()
    allow_insecure_loopback: bool = False
    template: str | None = None
    docs_url: str | None = None
    # Extra request headers the gateway may forward from the agent (e.g. Notion-Version).
    forward_headers: tuple[str, ...] = ()
    # Path patterns (operation syntax) whose {name} segments the audit records as "…".
    audit_redact_paths: tuple[str, ...] = ()
    # Resolved template variables (e.g. {"tenant": "common"}), for display and audit.
    variables: Mapping[str, str] = field(default_factory=dict)
    # GraphQL-only APIs (Linear): the account lookup POSTs {"query": ...} as JSON to
    # account.userinfo_url instead of a GET.
    account_graphql_query: str | None = None
    # Name of the authorization request parameter that carries the scopes (Slack user tokens:
    # "user_scope").
    scope_parameter: str = "scope"
    # Dotted path to the object of the token response that holds access_token, refresh_token,
    # expires_in and scope (Slack user tokens: "authed_user"); None means the top level.
    token_response_path: str | None = None

    def redirect_uri(self, public_url: str) -> str:
        """Each provider has its own redirect URI (RFC 9700 §4.4.2.2, mix-up defence)."""
        return f"{public_url.rstrip('/')}/oauth/callback/{self.name}"

    @property
    def uses_openid(self) -> bool:
        return "openid" in self.scopes
