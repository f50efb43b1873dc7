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
from urllib.parse import urlsplit

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
class RefreshSettings:
    """Token lifecycle knobs (``[refresh]``); defaults are the documented ones."""

    skew_seconds: int = 60  # refresh this long before expiry
    lease_seconds: int = 30  # a dead holder's lease expires on its own after this
    attempt_timeout_seconds: int = 10  # hard deadline of one token-endpoint call (< lease)
    max_attempts: int = 3  # per caller, for 5xx / timeouts / network errors
    wait_seconds: int = 20  # how long a caller waits for a refresh before a typed error
    recent_use_seconds: int = 900  # the background refresher only keeps these warm
    background_interval_seconds: int = 15
    cooldown_base_seconds: int = 30
    cooldown_max_seconds: int = 900


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway and agent sessions (``[gateway]``)."""

    session_ttl_seconds: int = 900  # agent session default lifetime
    session_ttl_max_seconds: int = 3600
    ticket_ttl_seconds: int = 300
    max_request_body_bytes: int = 10 * 1024 * 1024
    max_response_body_bytes: int = 256 * 1024 * 1024
    replay_buffer_bytes: int = 64 * 1024  # bodies up to this size may be replayed after a 401
    refresh_on_401_interval_seconds: int = 30
    connect_timeout_seconds: int = 10
    read_timeout_seconds: int = 60
    retry_after_cap_seconds: int = 300
    user_rate_per_second: int = 20  # token bucket per user + provider
    user_burst: int = 100
    agent_rate_per_second: int = 50  # token bucket per agent
    agent_burst: int = 200


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail (``[audit]``)."""

    enabled: bool = True  # false only to measure the audit's cost in the benchmark
    on_failure: str = "deny"  # deny: refuse new requests (503) while records cannot be written
    commit_window_ms: int = 50
    durability: str = "group"  # group: lose at most one window on a crash; sync: wait for commit
    retention_days: int | None = None  # None: keep every record
    checkpoint_seconds: int = 60  # sign each tenant's chain head at least this often


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: Secret
    events: tuple[str, ...] = ()  # empty: every connection event


@dataclass(frozen=True)
class LoginSettings:
    """Sign-in to the broker's own pages (``[login]``, ``[tenants.NAME.login]``): OIDC."""

    issuer: str
    client_id: str
    client_secret: Secret | None = None
    scopes: tuple[str, ...] = ("openid", "email")
    user_id_claim: str = "sub"
    admin_claim: str | None = None  # admin when this claim is true, or lists / equals the value
    admin_claim_value: str | None = None
    admins: tuple[str, ...] = ()  # user ids that are admins
    allow_insecure_loopback: bool = False
    session_ttl_seconds: int = 8 * 3600


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
    _reject_unknown(raw, _TOP_KEYS, "top level")
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
    server = _table(raw, "server")
    _reject_unknown(server, {"host", "port"}, "[server]")
    connect = _connect_settings(_table(raw, "connect"), "connect")
    webhook = _webhook(raw.get("webhook"), "webhook", env, base_dir)
    login = _login(raw.get("login"), "login", env, base_dir)
    tenants = {
        DEFAULT_TENANT: _tenant(
            DEFAULT_TENANT,
            _table(raw, "admin"),
            _self_verifying(connect, login, public_url),
            webhook,
            env,
            base_dir,
            login,
        )
    }
    for name, table in _table(raw, "tenants").items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[tenants.{name}] must be a table")
        if name == DEFAULT_TENANT:
            raise ConfigError("the default tenant is configured by [admin], not [tenants.default]")
        tenant_connect = _connect_settings(
            table.get("connect", {}), f"tenants.{name}.connect", connect
        )
        tenant_webhook = (
            _webhook(table.get("webhook", webhook), f"tenants.{name}.webhook", env, base_dir)
            if "webhook" in table
            else webhook
        )
        tenant_login = _login(table.get("login"), f"tenants.{name}.login", env, base_dir)
        tenant_connect = _self_verifying(tenant_connect, tenant_login, public_url)
        tenants[name] = _tenant(
            name, table, tenant_connect, tenant_webhook, env, base_dir, tenant_login
        )
    providers = {
        name: _provider_section(name, table, env, base_dir)
        for name, table in _table(raw, "providers").items()
    }
    return Settings(
        public_url=public_url,
        database_url=database_url,
        key_file=key_file,
        keys_env_value=keys_env_value,
        host=str(server.get("host", "127.0.0.1")),
        port=_int(server, "port", 8000, "server"),
        tenants=tenants,
        providers=providers,
        refresh=_refresh_settings(_table(raw, "refresh")),
        gateway=_gateway_settings(_table(raw, "gateway")),
        audit=_audit_settings(_table(raw, "audit")),
        redis_url=env.get("TOKENBROKER_REDIS_URL") or _optional_str(raw, "redis_url"),
        source=source,
    )


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _reject_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}"
        )


def _connect_settings(
    raw: Mapping[str, Any], where: str, parent: ConnectSettings | None = None
) -> ConnectSettings:
    _reject_unknown(raw, _CONNECT_KEYS, f"[{where}]")
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
        origins = tuple(_origin(str(o), f"{where}.allowed_return_origins") for o in value)
    return ConnectSettings(
        user_verifier_url=verifier,
        require_verification=_bool(raw, "require_verification", base.require_verification, where),
        allowed_return_origins=origins,
        session_ttl_seconds=_int(raw, "session_ttl_seconds", base.session_ttl_seconds, where),
        state_ttl_seconds=_int(raw, "state_ttl_seconds", base.state_ttl_seconds, where),
    )


def _refresh_settings(raw: Mapping[str, Any]) -> RefreshSettings:
    defaults = RefreshSettings()
    names = set(RefreshSettings.__dataclass_fields__)
    _reject_unknown(raw, names, "[refresh]")
    values = {name: _int(raw, name, getattr(defaults, name), "refresh") for name in names}
    settings = RefreshSettings(**values)
    if settings.attempt_timeout_seconds * 2 > settings.lease_seconds:
        raise ConfigError("[refresh] attempt_timeout_seconds must be at most half of lease_seconds")
    return settings


def _gateway_settings(raw: Mapping[str, Any]) -> GatewaySettings:
    defaults = GatewaySettings()
    names = set(GatewaySettings.__dataclass_fields__)
    _reject_unknown(raw, names, "[gateway]")
    settings = GatewaySettings(
        **{name: _int(raw, name, getattr(defaults, name), "gateway") for name in names}
    )
    if settings.session_ttl_seconds > settings.session_ttl_max_seconds:
        raise ConfigError("[gateway] session_ttl_seconds exceeds session_ttl_max_seconds")
    return settings


def _audit_settings(raw: Mapping[str, Any]) -> AuditSettings:
    _reject_unknown(
        raw,
        {
            "enabled",
            "on_failure",
            "commit_window_ms",
            "durability",
            "retention_days",
            "checkpoint_seconds",
        },
        "[audit]",
    )
    durability = raw.get("durability", "group")
    if durability not in ("group", "sync"):
        raise ConfigError('[audit] durability must be "group" or "sync"')
    retention = raw.get("retention_days")
    if retention is not None and (
        not isinstance(retention, int) or isinstance(retention, bool) or retention < 1
    ):
        raise ConfigError("[audit] retention_days must be a positive number of days")
    on_failure = raw.get("on_failure", "deny")
    if on_failure not in ("deny", "allow"):
        raise ConfigError('[audit] on_failure must be "deny" or "allow"')
    return AuditSettings(
        enabled=_bool(raw, "enabled", True, "audit"),
        on_failure=on_failure,
        commit_window_ms=_int(raw, "commit_window_ms", 50, "audit"),
        durability=durability,
        retention_days=retention,
        checkpoint_seconds=_int(raw, "checkpoint_seconds", 60, "audit"),
    )


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string")
    return value


def _webhook(
    raw: Any, where: str, env: Mapping[str, str], base_dir: Path
) -> WebhookSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    _reject_unknown(raw, {"url", "secret_env", "secret_file", "events"}, f"[{where}]")
    if "url" not in raw:
        raise ConfigError(f"[{where}] url is required")
    url = check_endpoint_url(str(raw["url"]), allow_insecure_loopback=True, what=f"{where}.url")
    if "secret_env" in raw:
        name = str(raw["secret_env"])
        if not env.get(name):
            raise ConfigError(f"[{where}] environment variable {name} is not set")
        secret = Secret(env[name])
    elif "secret_file" in raw:
        secret = _read_secret_file(base_dir / str(raw["secret_file"]), f"[{where}]")
    else:
        raise ConfigError(f"[{where}] needs secret_env or secret_file (the HMAC signing key)")
    events = raw.get("events", [])
    if not isinstance(events, list):
        raise ConfigError(f"[{where}] events must be a list")
    return WebhookSettings(url=url, secret=secret, events=tuple(str(e) for e in events))


_LOGIN_KEYS = {
    "issuer",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "scopes",
    "user_id_claim",
    "admin_claim",
    "admin_claim_value",
    "admins",
    "allow_insecure_loopback",
    "session_ttl_seconds",
}


def _self_verifying(
    connect: ConnectSettings, login: LoginSettings | None, public_url: str
) -> ConnectSettings:
    """With sign-in configured, users confirm their own connect links on the broker's page."""
    if login is None or connect.user_verifier_url is not None:
        return connect
    return replace(connect, user_verifier_url=f"{public_url}/confirm")


def _login(raw: Any, where: str, env: Mapping[str, str], base_dir: Path) -> LoginSettings | None:
    """``[login]``: the organisation's OpenID provider for the broker's web pages."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    _reject_unknown(raw, _LOGIN_KEYS, f"[{where}]")
    insecure = _bool(raw, "allow_insecure_loopback", False, where)
    if not raw.get("issuer") or not raw.get("client_id"):
        raise ConfigError(f"[{where}] issuer and client_id are required")
    issuer = check_endpoint_url(
        str(raw["issuer"]), allow_insecure_loopback=insecure, what=f"{where}.issuer"
    )
    secret: Secret | None = None
    if "client_secret_env" in raw:
        name = str(raw["client_secret_env"])
        if not env.get(name):
            raise ConfigError(f"[{where}] environment variable {name} is not set")
        secret = Secret(env[name])
    elif "client_secret_file" in raw:
        secret = _read_secret_file(base_dir / str(raw["client_secret_file"]), f"[{where}]")
    scopes = tuple(str(s) for s in _as_list(raw.get("scopes"))) or ("openid", "email")
    if "openid" not in scopes:
        raise ConfigError(f"[{where}] scopes must include openid")
    admin_claim = _optional_str(raw, "admin_claim")
    return LoginSettings(
        issuer=issuer,
        client_id=str(raw["client_id"]),
        client_secret=secret,
        scopes=scopes,
        user_id_claim=str(raw.get("user_id_claim", "sub")),
        admin_claim=admin_claim,
        admin_claim_value=_optional_str(raw, "admin_claim_value"),
        admins=tuple(_as_list(raw.get("admins"))),
        allow_insecure_loopback=insecure,
        session_ttl_seconds=_int(raw, "session_ttl_seconds", 8 * 3600, where) or 8 * 3600,
    )


def _origin(value: str, what: str) -> str:
    """An origin is scheme://host[:port] and nothing else."""
    url = check_endpoint_url(value, allow_insecure_loopback=True, what=what)
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{what}: {value!r} is not an origin (scheme://host[:port])")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"[{where}] {key} must be a non-negative integer")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"[{where}] {key} must be true or false")
    return value


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
    _reject_unknown(raw, allowed, f"the admin settings of tenant {name!r}")
    env_names = _as_list(raw.get("key_env")) + _as_list(raw.get("admin_key_env"))
    if not env_names and name == DEFAULT_TENANT:
        env_names = ["TOKENBROKER_ADMIN_KEY"]
    files = _as_list(raw.get("key_file")) + _as_list(raw.get("admin_key_file"))
    keys: list[Secret] = []
    for env_name in env_names:
        if env.get(env_name):
            keys.append(Secret(env[env_name]))
    for file_name in files:
        keys.append(_read_secret_file(base_dir / file_name, f"admin key of tenant {name!r}"))
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
        secret = _read_secret_file(
            base_dir / str(table["client_secret_file"]), f"provider {name!r}"
        )
    section = {
        k: v for k, v in table.items() if k not in {"client_secret_env", "client_secret_file"}
    }
    return ProviderSection(name=name, section=section, client_secret=secret)


def _read_secret_file(path: Path, what: str) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"{what}: cannot read secret file {str(path)!r} ({reason})") from None
    if not value:
        raise ConfigError(f"{what}: secret file {str(path)!r} is empty")
    return Secret(value)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _relative_sqlite(url: str, base_dir: Path) -> str:
    """Resolve a relative SQLite path against the config file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url
