"""Settings of the demo provider: frozen start-up settings and runtime-mutable behaviour knobs."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Union

DEMO_SCOPES: tuple[str, ...] = (
    "openid",
    "email",
    "profile",
    "offline_access",
    "files:read",
    "files:write",
)


@dataclass(frozen=True, slots=True)
class DemoClient:
    """A client registered at the demo provider. ``client_secret=None`` makes it public."""

    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DemoProviderSettings:
    """Start-up settings. ``issuer`` is the public base URL, e.g. ``http://127.0.0.1:9400``."""

    issuer: str
    clients: tuple[DemoClient, ...] = ()
    users: tuple[str, ...] = ("alice", "bob")
    password: str = "demo"
    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    code_ttl: int = 60
    device_code_ttl: int = 600
    device_interval: int = 5
    scopes: tuple[str, ...] = DEMO_SCOPES

    def __post_init__(self) -> None:
        object.__setattr__(self, "issuer", self.issuer.rstrip("/"))

    def client(self, client_id: str) -> DemoClient | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None

    def endpoint(self, path: str) -> str:
        return f"{self.issuer}{path}"


@dataclass(slots=True)
class DemoBehaviour:
    """Fault-injection and hostile-provider knobs. Every default is the well-behaved provider.

    Mutable at runtime (tests set fields directly; other processes POST ``/_demo/behaviour``).
    """

    # Browser flow.
    auto_approve_user: str | None = None
    callback_iss: str | None = None  # None: correct issuer; "": omit ``iss``; other: send it
    # Discovery documents.
    metadata_issuer: str | None = None
    metadata_pkce_methods: list[str] | None = None  # None: ["S256"]
    metadata_overrides: dict[str, Any] = field(default_factory=dict)  # value None removes key
    # ID token.
    id_token_aud: str | None = None
    id_token_iss: str | None = None
    id_token_sign_with_other_key: bool = False
    id_token_nonce: str | None = None
    id_token_expired: bool = False
    different_sub: str | None = None
    # Token endpoint.
    token_failures: list[int | str] = field(default_factory=list)
    token_delay_seconds: float = 0.0
    timeout_seconds: float = 30.0
    access_token_ttl: int | None = None
    refresh_without_prompt: bool = True
    omit_refresh_token: bool = False
    rotate_refresh_tokens: bool = True
    reuse_grace_seconds: float = 0.0
    refresh_scope_narrow_to: list[str] | None = None
    # Revocation endpoint.
    revoke_failures: list[int] = field(default_factory=list)
    # Demo API.
    api_failures: list[int] = field(default_factory=list)
    api_retry_after: str | None = None  # sent with an injected 429 or 503
    api_delay_seconds: float = 0.0  # the API waits this long before it answers
    api_redirect_to: str | None = None

    def merge(self, changes: dict[str, Any]) -> None:
        """Validate every change first, then apply all of them (all or nothing)."""
        hints = typing.get_type_hints(DemoBehaviour)
        known = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown behaviour field {name!r}")
            if not _matches(value, hints[name]):
                raise ValueError(f"bad value for behaviour field {name!r}")
        for name, value in changes.items():
            if isinstance(value, int) and not isinstance(value, bool) and hints[name] is float:
                value = float(value)
            setattr(self, name, value)

    def reset(self) -> None:
        fresh = DemoBehaviour()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _matches(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False
