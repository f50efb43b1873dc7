"""Settings sections beyond the core: refresh, gateway, audit, webhook and sign-in.

Each is a frozen dataclass with its defaults, and a parser that checks every key and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenbroker.config_values import (
    as_list,
    bool_value,
    int_value,
    optional_str,
    read_secret_file,
    reject_unknown,
)
from tokenbroker.errors import ConfigError
from tokenbroker.protocol.endpoints import check_endpoint_url
from tokenbroker.secret import Secret


@dataclass(frozen=True)
class RefreshSettings:
    """Token lifecycle knobs (``[refresh]``); defaults are the documented ones."""

    skew_seconds: int = 60  # refresh this long before expiry
    lease_seconds: int = 30  # a dead holder's lease expires on its own after this
    attempt_timeout_seconds: int = 10  # hard deadline of one token-endpoint call (< lease)
    max_attempts: int = 3  # per caller, for 5xx / timeouts / network errors
    wait_seconds: int = 20  # how long one refresh keeps trying (retries, another holder's lease)
    # A request waits at most this long for a refresh, then gets 503 provider_unavailable
    # while the refresh goes on under its lease (a hanging token endpoint never holds it).
    request_wait_ms: int = 1500
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
    # process: each gateway worker hands its records to an audit writer process of its own;
    # inline: the worker encodes, hashes and commits them itself (embedding, tests).
    writer: str = "process"


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
    session_ttl_seconds: int = 8 * 3600  # a web session ends this long after sign-in
    session_idle_seconds: int = 3600  # ... or this long after its last page (0: never)


def parse_refresh(raw: Mapping[str, Any]) -> RefreshSettings:
    defaults = RefreshSettings()
    names = set(RefreshSettings.__dataclass_fields__)
    reject_unknown(raw, names, "[refresh]")
    values = {name: int_value(raw, name, getattr(defaults, name), "refresh") for name in names}
    settings = RefreshSettings(**values)
    if settings.attempt_timeout_seconds * 2 > settings.lease_seconds:
        raise ConfigError("[refresh] attempt_timeout_seconds must be at most half of lease_seconds")
    if settings.request_wait_ms < 1:
        raise ConfigError("[refresh] request_wait_ms must be at least 1")
    return settings


def parse_gateway(raw: Mapping[str, Any]) -> GatewaySettings:
    defaults = GatewaySettings()
    names = set(GatewaySettings.__dataclass_fields__)
    reject_unknown(raw, names, "[gateway]")
    settings = GatewaySettings(
        **{name: int_value(raw, name, getattr(defaults, name), "gateway") for name in names}
    )
    if settings.session_ttl_seconds > settings.session_ttl_max_seconds:
        raise ConfigError("[gateway] session_ttl_seconds exceeds session_ttl_max_seconds")
    return settings


def parse_audit(raw: Mapping[str, Any]) -> AuditSettings:
    reject_unknown(
        raw,
        {
            "enabled",
            "on_failure",
            "commit_window_ms",
            "durability",
            "retention_days",
            "checkpoint_seconds",
            "writer",
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
    writer = raw.get("writer", "process")
    if writer not in ("process", "inline"):
        raise ConfigError('[audit] writer must be "process" or "inline"')
    return AuditSettings(
        writer=writer,
        enabled=bool_value(raw, "enabled", True, "audit"),
        on_failure=on_failure,
        commit_window_ms=int_value(raw, "commit_window_ms", 50, "audit"),
        durability=durability,
        retention_days=retention,
        checkpoint_seconds=int_value(raw, "checkpoint_seconds", 60, "audit"),
    )


def parse_webhook(
    raw: Any, where: str, env: Mapping[str, str], base_dir: Path
) -> WebhookSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    reject_unknown(raw, {"url", "secret_env", "secret_file", "events"}, f"[{where}]")
    if "url" not in raw:
        raise ConfigError(f"[{where}] url is required")
    url = check_endpoint_url(str(raw["url"]), allow_insecure_loopback=True, what=f"{where}.url")
    if "secret_env" in raw:
        name = str(raw["secret_env"])
        if not env.get(name):
            raise ConfigError(f"[{where}] environment variable {name} is not set")
        secret = Secret(env[name])
    elif "secret_file" in raw:
        secret = read_secret_file(base_dir / str(raw["secret_file"]), f"[{where}]")
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
    "session_idle_seconds",
}


def parse_login(
    raw: Any, where: str, env: Mapping[str, str], base_dir: Path
) -> LoginSettings | None:
    """``[login]``: the organisation's OpenID provider for the broker's web pages."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    reject_unknown(raw, _LOGIN_KEYS, f"[{where}]")
    insecure = bool_value(raw, "allow_insecure_loopback", False, where)
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
        secret = read_secret_file(base_dir / str(raw["client_secret_file"]), f"[{where}]")
    scopes = tuple(str(s) for s in as_list(raw.get("scopes"))) or ("openid", "email")
    if "openid" not in scopes:
        raise ConfigError(f"[{where}] scopes must include openid")
    admin_claim = optional_str(raw, "admin_claim")
    return LoginSettings(
        issuer=issuer,
        client_id=str(raw["client_id"]),
        client_secret=secret,
        scopes=scopes,
        user_id_claim=str(raw.get("user_id_claim", "sub")),
        admin_claim=admin_claim,
        admin_claim_value=optional_str(raw, "admin_claim_value"),
        admins=tuple(as_list(raw.get("admins"))),
        allow_insecure_loopback=insecure,
        session_ttl_seconds=int_value(raw, "session_ttl_seconds", 8 * 3600, where) or 8 * 3600,
        session_idle_seconds=int_value(raw, "session_idle_seconds", 3600, where),
    )
