"""The ``consent_url`` an ``insufficient_grant`` answer carries (pure: no I/O, gateway-cheap)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from tokenbroker.config import Settings


def consent_url(
    settings: Settings,
    *,
    tenant_id: str,
    user_id: str,
    agent_id: str,
    provider: str,
    scopes: Sequence[str],
    operation: str | None,
    expires_in: int | None = None,
) -> str | None:
    """Where the user approves this agent's request; None when the tenant has no sign-in."""
    tenant = settings.tenants.get(tenant_id)
    if tenant is None or tenant.login is None:
        return None
    query: dict[str, str] = {"agent_id": agent_id, "provider": provider, "scopes": " ".join(scopes)}
    if operation:
        query["operations"] = operation
    if expires_in:
        query["expires_in"] = str(expires_in)
    query["user_id"] = user_id
    if tenant_id != "default":
        query["tenant"] = tenant_id
    return f"{settings.public_url}/consent?{urlencode(query)}"
