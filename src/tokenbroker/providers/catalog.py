"""Build a :class:`ProviderSpec` from the operator's ``[providers.NAME]`` table.

Precedence, field by field: explicit keys of the table > discovery metadata > template >
``ProviderSpec`` defaults. Tables (``authorization_params``, ``api_bases``) merge key by key;
lists (``scopes``, ``forward_headers``, ``audit_redact_paths``) replace; ``operations`` merge
by name. Template variables (``{tenant}``) are checked against their pattern before
substitution, and every endpoint and API base passes :func:`check_endpoint_url`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from tokenbroker.errors import ConfigError
from tokenbroker.providers import parse
from tokenbroker.providers.layers import Layers, ServerMetadataLike
from tokenbroker.providers.loader import (
    ENDPOINT_KEYS,
    QUIRK_KEYS,
    Template,
    available_templates,
    load_template,
)
from tokenbroker.providers.model import AccountIdentity, Operation, ProviderSpec
from tokenbroker.providers.reader import Reader, check_keys
from tokenbroker.providers.variables import parse_variables, resolve_variables
from tokenbroker.secret import Secret

__all__ = [
    "SECTION_KEYS",
    "ProviderSummary",
    "ServerMetadataLike",
    "Template",
    "available_templates",
    "build_provider",
    "load_template",
    "provider_summaries",
]


SECTION_KEYS: Final = frozenset(
    (
        *QUIRK_KEYS,
        "template",
        "client_id",
        "scopes",
        "vars",
        "allow_insecure_loopback",
        "client_secret_env",  # read by the caller
        "client_secret_file",  # read by the caller
    )
)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_URL_KEYS: Final = ("issuer", *ENDPOINT_KEYS)
_METADATA_LISTS: Final = (
    "code_challenge_methods_supported",
    "id_token_signing_alg_values_supported",
)


@dataclass(frozen=True)
class ProviderSummary:
    """One line of ``tokenbroker providers``."""

    name: str
    display_name: str
    oidc: bool
    tokens_expire: bool
    docs_url: str | None

    def __str__(self) -> str:
        kind = "OIDC" if self.oidc else "OAuth 2.0"
        expiry = "expiring tokens" if self.tokens_expire else "non-expiring tokens"
        return (
            f"{self.name:<12} {self.display_name:<30} {kind:<9} {expiry:<19} {self.docs_url or ''}"
        )


def provider_summaries() -> list[ProviderSummary]:
    """Every shipped template, by name."""
    out = []
    for name in available_templates():
        tpl = load_template(name)
        out.append(
            ProviderSummary(name, tpl.display_name, tpl.is_oidc, tpl.tokens_expire, tpl.docs_url)
        )
    return out


def build_provider(
    name: str,
    section: Mapping[str, Any],
    *,
    client_secret: Secret | None,
    metadata: ServerMetadataLike | None = None,
) -> ProviderSpec:
    """Merge the operator's table, discovery metadata and the template into a ProviderSpec."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ConfigError(f"invalid provider name {str(name)[:60]!r}: use letters, digits, _ and -")
    where = f"provider {name!r}"
    sec = Reader(section, where)
    check_keys(section, SECTION_KEYS, where)
    client_id = sec.required_str("client_id")
    template_name = sec.str_("template")
    tpl = load_template(template_name) if template_name else None
    tr = Reader(tpl.raw, f"template {tpl.name!r}") if tpl else None
    if (
        tr is None
        and sec.str_("issuer") is None
        and not (sec.str_("authorization_endpoint") and sec.str_("token_endpoint"))
    ):
        raise ConfigError(
            f"{where} needs a template, an issuer (for discovery), or both"
            " authorization_endpoint and token_endpoint"
        )
    given = sec.table_("vars")
    if given is not None and tr is None:
        raise ConfigError(f"{where}: vars needs a template")
    variables = parse_variables(tr.table_("variables") if tr else None)
    values = resolve_variables(variables, given.table if given else {}, provider=name)
    layers = Layers(name, sec, tr, metadata, values)
    insecure = bool(sec.bool_("allow_insecure_loopback"))
    connect_vars = tuple(parse.connect_var(r) for r in (tr.tables("connect_vars") if tr else []))
    keep = frozenset(cv.name for cv in connect_vars)

    def url(value: str | None, key: str, connect: frozenset[str] = frozenset()) -> str | None:
        if value is None:
            return None
        return parse.check_url(
            value, provider=name, field=key, insecure=insecure, connect_vars=connect
        )

    urls = {key: url(layers.str_(key, key), key) for key in _URL_KEYS}
    authorization_endpoint = urls.pop("authorization_endpoint")
    token_endpoint = urls.pop("token_endpoint")
    if authorization_endpoint is None or token_endpoint is None:
        missing = "authorization_endpoint" if authorization_endpoint is None else "token_endpoint"
        raise ConfigError(
            f"{where} has no {missing} (discovery metadata or the table must give it)"
        )

    separator = layers.str_("scope_separator") or " "
    if separator not in (" ", ","):
        raise ConfigError(f"{where}: scope_separator must be ' ' or ','")
    if "scopes" in sec:
        scopes = parse.scopes(section["scopes"], provider=name, separator=separator)
    elif tr is not None:
        scopes = parse.scopes(
            tr.str_list("default_scopes") or (), provider=name, separator=separator
        )
    else:
        scopes = ()
    uses_openid = "openid" in scopes
    scope_param = parse.scope_parameter(layers.str_("scope_parameter") or "scope", provider=name)
    response_path = parse.dotted_path(
        layers.str_("token_response_path") or "", provider=name, field="token_response_path"
    )

    secret_given = client_secret is not None and bool(client_secret)
    method_text = layers.str_("token_endpoint_auth_method")
    supported = layers.metadata_list("token_endpoint_auth_methods_supported")
    if "token_endpoint_auth_method" not in sec and supported and method_text not in supported:
        preferred = ("client_secret_basic", "client_secret_post") if secret_given else ("none",)
        method_text = next((m for m in preferred if m in supported), method_text)
    if method_text is None:
        method_text = "client_secret_basic" if secret_given else "none"
    auth_method = parse.auth_method(method_text, provider=name)
    if not secret_given and auth_method != "none":
        if "token_endpoint_auth_method" in sec:
            raise ConfigError(f"{where}: {auth_method} needs a client secret")
        auth_method = "none"

    prompt_consent = layers.bool_("prompt_consent_for_refresh")
    if prompt_consent is None:
        prompt_consent = uses_openid and "offline_access" in scopes

    pkce: tuple[str, ...] | None
    if "code_challenge_methods_supported" in sec:
        pkce = sec.str_list("code_challenge_methods_supported")
    elif metadata is not None:
        pkce = layers.metadata_list("code_challenge_methods_supported")
    else:
        pkce = tr.str_list("code_challenge_methods_supported") if tr else None

    algs = _first_list(layers, "id_token_signing_alg_values_supported") or ("RS256",)
    if any(a.lower() == "none" for a in algs):
        raise ConfigError(f"{where}: id_token_signing_alg_values_supported must not contain none")

    bases = layers.str_map("api_bases", keep)
    api_bases = {k: url(v, f"api_bases.{k}", keep) or "" for k, v in bases.items()}
    base_layer = layers.layer("api_base_url")
    base_text = base_layer.str_("api_base_url") if base_layer else None
    api_base_url = url(
        layers.sub(base_text, "api_base_url", keep) if base_text else None, "api_base_url", keep
    )

    account = _account(layers, urls["userinfo_endpoint"], uses_openid)
    if account.userinfo_url is not None:
        account = replace(
            account,
            userinfo_url=url(layers.sub(account.userinfo_url, "account"), "account.userinfo_url"),
        )
    graphql_layer = layers.layer("account_graphql_query")  # read raw: GraphQL uses braces
    graphql = graphql_layer.str_("account_graphql_query") if graphql_layer else None
    if graphql is not None and account.source != "userinfo":
        raise ConfigError(f"{where}: account_graphql_query needs account source 'userinfo'")

    revocation_types = layers.layer("revocation_token_types")
    resource_text = layers.str_("resource")
    header_layer = layers.layer("forward_headers")
    redact_layer = layers.layer("audit_redact_paths")
    ttl_layer = layers.layer("refresh_token_idle_ttl")
    display_name = layers.str_("display_name") or (tpl.display_name if tpl else name)
    return ProviderSpec(
        name=name,
        display_name=display_name,
        client_id=client_id,
        client_secret=client_secret,
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        issuer=urls["issuer"],
        revocation_endpoint=urls["revocation_endpoint"],
        userinfo_endpoint=urls["userinfo_endpoint"],
        jwks_uri=urls["jwks_uri"],
        device_authorization_endpoint=urls["device_authorization_endpoint"],
        token_endpoint_auth_method=auth_method,
        scopes=scopes,
        scope_separator=separator,
        authorization_params=parse.authorization_params(
            layers.str_map("authorization_params"), provider=name, scope_parameter=scope_param
        ),
        prompt_consent_for_refresh=prompt_consent,
        code_challenge_methods_supported=pkce,
        iss_parameter_supported=bool(
            (metadata or {}).get("authorization_response_iss_parameter_supported") is True
        ),
        id_token_signing_alg_values_supported=algs,
        resource=parse.resource(resource_text, provider=name) if resource_text else None,
        api_base_url=api_base_url,
        api_bases=api_bases,
        connect_vars=connect_vars,
        account=account,
        tokens_expire=_bool(layers, "tokens_expire", True),
        refresh_sends_scope=_bool(layers, "refresh_sends_scope", False),
        rotates_refresh_tokens=_bool(layers, "rotates_refresh_tokens", False),
        revocation_token_types=parse.revocation_types(
            revocation_types.str_list("revocation_token_types") or (), provider=name
        )
        if revocation_types
        else ("refresh_token", "access_token"),
        refresh_token_idle_ttl=ttl_layer.int_("refresh_token_idle_ttl") if ttl_layer else None,
        operations=_operations(name, sec, tr, api_bases),
        allow_insecure_loopback=insecure,
        template=tpl.name if tpl else None,
        docs_url=url(layers.str_("docs_url"), "docs_url"),
        forward_headers=parse.forward_headers(
            (header_layer.str_list("forward_headers") or ()) if header_layer else (),
            provider=name,
        ),
        audit_redact_paths=parse.audit_redact_paths(
            (redact_layer.str_list("audit_redact_paths") or ()) if redact_layer else (),
            provider=name,
        ),
        variables=values,
        account_graphql_query=graphql,
        scope_parameter=scope_param,
        token_response_path=response_path,
    )


def _bool(layers: Layers, key: str, default: bool) -> bool:
    value = layers.bool_(key)
    return default if value is None else value


def _first_list(layers: Layers, key: str) -> tuple[str, ...] | None:
    if key in layers.section:
        return layers.section.str_list(key)
    found = layers.metadata_list(key)
    if found is not None:
        return found
    return layers.template.str_list(key) if layers.template is not None else None


def _account(layers: Layers, userinfo_endpoint: str | None, uses_openid: bool) -> AccountIdentity:
    layer = layers.layer("account")
    table = layer.table_("account") if layer else None
    if table is not None:
        return parse.account(
            table,
            provider=layers.name,
            userinfo_endpoint=userinfo_endpoint,
            uses_openid=uses_openid,
        )
    if not uses_openid and userinfo_endpoint is not None:
        return AccountIdentity(source="userinfo", userinfo_url=userinfo_endpoint)
    return AccountIdentity()


def _operations(
    name: str, sec: Reader, tr: Reader | None, bases: Mapping[str, str]
) -> tuple[Operation, ...]:
    merged: dict[str, Operation] = {}
    for layer in (tr, sec):
        seen: set[str] = set()
        for reader in layer.tables("operations") if layer is not None else []:
            op = parse.operation(reader, provider=name, bases=bases)
            if op.name in seen:
                raise ConfigError(f"{reader.where}: duplicate operation name {op.name!r}")
            seen.add(op.name)
            merged[op.name] = op
    return tuple(merged.values())
