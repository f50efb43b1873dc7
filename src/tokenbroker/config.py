"""Settings from ``tokenbroker.toml`` and the environment (the environment is a parameter).

The environment overrides secrets and the database URL; client secrets and admin keys are
read from environment variables or files, never required inline.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tokenbroker.config_sections import (
    AuditSettings,
    GatewaySettings,
    LoginSettings,
    RefreshSettings,
    WebhookSettings,
    parse_audit,
    parse_gateway,
    parse_login,
    parse_refresh,
    parse_webhook,
)
from tokenbroker.config_values import (
    as_list,
    bool_value,
    int_value,
    optional_str,
    origin,
    read_secret_file,
    reject_unknown,
    sub_table,
)
from tokenbroker.db.schema import DEFAULT_TENANT
from tokenbroker.errors import ConfigError
from tokenbroker.protocol.endpoints import check_endpoint_url
from tokenbroker.secret import Secret

CONFIG_ENV = "TOKENBROKER_CONFIG"
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_TOP_KEYS = {
    "public_url",
    "database_url",
    "key_file",
    "keys_env",
    "server",
    "admin",
    "tenants",
    "connect",
    "providers",
    "refresh",
    "gateway",
    "audit",
    "login",
    "redis_url",
    "webhook",
}
_CONNECT_KEYS = {
    "user_verifier_url",
    "require_verification",
    "allowed_return_origins",
    "session_ttl_seconds",
    "state_ttl_seconds",
}


@dataclass(frozen=True)
class ConnectSettings:
    user_verifier_url: str | None = None
    require_verification: bool = True
    allowed_return_origins: tuple[str, ...] = ()
    session_ttl_seconds: int = 1800
    state_ttl_seconds: int = 600


@dataclass(frozen=True)
class TenantSettings:
    name: str
    admin_keys: tuple[Secret, ...]
    connect: ConnectSettings
    webhook: WebhookSettings | None = None
    login: LoginSettings | None = None


@dataclass(frozen=True)
class ProviderSection:
    """The operator's ``[providers.NAME]`` table, with its client secret already resolved."""

    name: str
    section: Mapping[str, Any]
    client_secret: Secret | None


@dataclass(frozen=True)
class Settings:
    public_url: str
    database_url: str
    key_file: Path | None
    keys_env_value: Secret | None
    host: str = "127.0.0.1"
    port: int = 8000
    tenants: Mapping[str, TenantSettings] = field(default_factory=dict)
    providers: Mapping[str, ProviderSection] = field(default_factory=dict)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    redis_url: str | None = None
    source: Path | None = None

    def tenant(self, name: str) -> TenantSettings:
        return self.tenants[name]


def config_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    return Path(explicit or environ.get(CONFIG_ENV) or "tokenbroker.toml")


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the config file; raise :class:`ConfigError` with a clear message."""
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found: run `tokenbroker init` or pass --config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return parse_settings(raw, env, base_dir=path.parent, source=path)


def parse_settings(
    raw: Mapping[str, Any], env: Mapping[str, str], *, base_dir: Path, source: Path | None = None
) -> Settings:
    reject_unknown(raw, _TOP_KEYS, "top level")
    public_url = str(env.get("TOKENBROKER_PUBLIC_URL") or raw.get("public_url") or "")
    if not public_url:
        raise ConfigError("public_url is required (e.g. https://broker.example.com)")
    check_endpoint_url(public_url, allow_insecure_loopback=True, what="public_url")
    public_url = public_url.rstrip("/")
    database_url = str(
        env.get("TOKENBROKER_DATABASE_URL") or raw.get("database_url") or "sqlite:///tokenbroker.db"
    )
    database_url = _relative_sqlite(database_url, base_dir)
    keys_env_name = str(raw.get("keys_env", "TOKENBROKER_KEYS"))
    keys_env_value = Secret(env[keys_env_name]) if env.get(keys_env_name) else None
    key_file = None
    if keys_env_value is None:
        key_file = base_dir / str(raw.get("key_file", "tokenbroker.keys"))
    server = sub_table(raw, "server")
    reject_unknown(server, {"host", "port"}, "[server]")
    connect = _connect_settings(sub_table(raw, "connect"), "connect")
    webhook = parse_webhook(raw.get("webhook"), "webhook", env, base_dir)
    login = parse_login(raw.get("login"), "login", env, base_dir)
    tenants = {
        DEFAULT_TENANT: _tenant(
            DEFAULT_TENANT,
            sub_table(raw, "admin"),
            _self_verifying(connect, login, public_url),
            webhook,
            env,
            base_dir,
            login,
        )
    }
    for name, table in sub_table(raw, "tenants").items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[tenants.{name}] must be a table")
        if name == DEFAULT_TENANT:
            raise ConfigError("the default tenant is configured by [admin], not [tenants.default]")
        tenant_connect = _connect_settings(
            table.get("connect", {}), f"tenants.{name}.connect", connect
        )
        tenant_webhook = (
            parse_webhook(table.get("webhook", webhook), f"tenants.{name}.webhook", env, base_dir)
            if "webhook" in table
            else webhook
        )
        tenant_login = parse_login(table.get("login"), f"tenants.{name}.login", env, base_dir)
        tenant_connect = _self_verifying(tenant_connect, tenant_login, public_url)
        tenants[name] = _tenant(
            name, table, tenant_connect, tenant_webhook, env, base_dir, tenant_login
        )
    providers = {
        name: _provider_section(name, table, env, base_dir)
        for name, table in sub_table(raw, "providers").items()
    }
    return Settings(
        public_url=public_url,
        database_url=database_url,
        key_file=key_file,
        keys_env_value=keys_env_value,
        host=str(server.get("host", "127.0.0.1")),
        port=int_value(server, "port", 8000, "server"),
        tenants=tenants,
        providers=providers,
        refresh=parse_refresh(sub_table(raw, "refresh")),
        gateway=parse_gateway(sub_table(raw, "gateway")),
        audit=parse_audit(sub_table(raw, "audit")),
        redis_url=env.get("TOKENBROKER_REDIS_URL") or optional_str(raw, "redis_url"),
        source=source,
    )


def _connect_settings(
    raw: Mapping[str, Any], where: str, parent: ConnectSettings | None = None
) -> ConnectSettings:
    reject_unknown(raw, _CONNECT_KEYS, f"[{where}]")
    base = parent or ConnectSettings()
    verifier = raw.get("user_verifier_url", base.user_verifier_url)
    if verifier is not None:
        verifier = check_endpoint_url(
            str(verifier), allow_insecure_loopback=True, what=f"{where}.user_verifier_url"
        )
    origins = base.allowed_return_origins
    if "allowed_return_origins" in raw:
        value = raw["allowed_return_origins"]
        if not isinstance(value, list):
            raise ConfigError(f"[{where}] allowed_return_origins must be a list of origins")
        origins = tuple(origin(str(o), f"{where}.allowed_return_origins") for o in value)
    return ConnectSettings(
        user_verifier_url=verifier,
        require_verification=bool_value(
            raw, "require_verification", base.require_verification, where
        ),
        allowed_return_origins=origins,
        session_ttl_seconds=int_value(raw, "session_ttl_seconds", base.session_ttl_seconds, where),
        state_ttl_seconds=int_value(raw, "state_ttl_seconds", base.state_ttl_seconds, where),
    )


def _self_verifying(
    connect: ConnectSettings, login: LoginSettings | None, public_url: str
) -> ConnectSettings:
    """With sign-in configured, users confirm their own connect links on the broker's page."""
    if login is None or connect.user_verifier_url is not None:
        return connect
    return replace(connect, user_verifier_url=f"{public_url}/confirm")


def _tenant(
    name: str,
    raw: Mapping[str, Any],
    connect: ConnectSettings,
    webhook: WebhookSettings | None,
    env: Mapping[str, str],
    base_dir: Path,
    login: LoginSettings | None = None,
) -> TenantSettings:
    if "key" in raw or "admin_key" in raw:
        raise ConfigError("admin keys are read from key_env or key_file, never inline")
    allowed = {"key_env", "key_file", "admin_key_env", "admin_key_file"}
    if name != DEFAULT_TENANT:
        allowed.update({"connect", "webhook", "login"})
    reject_unknown(raw, allowed, f"the admin settings of tenant {name!r}")
    env_names = as_list(raw.get("key_env")) + as_list(raw.get("admin_key_env"))
    if not env_names and name == DEFAULT_TENANT:
        env_names = ["TOKENBROKER_ADMIN_KEY"]
    files = as_list(raw.get("key_file")) + as_list(raw.get("admin_key_file"))
    keys: list[Secret] = []
    for env_name in env_names:
        if env.get(env_name):
            keys.append(Secret(env[env_name]))
    for file_name in files:
        keys.append(read_secret_file(base_dir / file_name, f"admin key of tenant {name!r}"))
    for key in keys:
        if len(key.reveal()) < 16:
            raise ConfigError(f"an admin key of tenant {name!r} is shorter than 16 characters")
    return TenantSettings(
        name=name, admin_keys=tuple(keys), connect=connect, webhook=webhook, login=login
    )


def _provider_section(
    name: str, table: Any, env: Mapping[str, str], base_dir: Path
) -> ProviderSection:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[providers.{name}] must be a table")
    if not _PROVIDER_NAME.fullmatch(name):
        raise ConfigError(
            f"provider name {name!r} must be lowercase letters, digits and '-' (max 40)"
        )
    if "client_secret" in table:
        raise ConfigError(
            f"provider {name!r}: client_secret must not be inline; use client_secret_env or "
            "client_secret_file"
        )
    secret: Secret | None = None
    override = f"TOKENBROKER_PROVIDER_{name.upper().replace('-', '_')}_CLIENT_SECRET"
    if env.get(override):
        secret = Secret(env[override])
    elif "client_secret_env" in table:
        env_name = str(table["client_secret_env"])
        if not env.get(env_name):
            raise ConfigError(f"provider {name!r}: environment variable {env_name} is not set")
        secret = Secret(env[env_name])
    elif "client_secret_file" in table:
        secret = read_secret_file(base_dir / str(table["client_secret_file"]), f"provider {name!r}")
    section = {
        k: v for k, v in table.items() if k not in {"client_secret_env", "client_secret_file"}
    }
    return ProviderSection(name=name, section=section, client_secret=secret)


def _relative_sqlite(url: str, base_dir: Path) -> str:
    """Resolve a relative SQLite path against the config file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url


__all__ = [
    "AuditSettings",
    "ConnectSettings",
    "GatewaySettings",
    "LoginSettings",
    "ProviderSection",
    "RefreshSettings",
    "Settings",
    "TenantSettings",
    "WebhookSettings",
    "config_path",
    "load_settings",
    "parse_settings",
]
