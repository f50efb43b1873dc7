"""The connection value and its public (token-free) JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

ACTIVE = "active"
DEGRADED = "degraded"
NEEDS_REAUTH = "needs_reauth"


@dataclass(frozen=True)
class Connection:
    id: str
    tenant_id: str
    user_id: str
    provider: str
    status: str
    scopes: tuple[str, ...]
    account_id: str | None
    account_label: str | None
    connect_vars: Mapping[str, str]
    access_token_expires_at: datetime | None
    has_refresh_token: bool
    version: int
    last_refresh_at: datetime | None
    last_refresh_error: str | None
    status_reason: str | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime
    refresh_failures: int = 0
    refresh_not_before: datetime | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Connection:
        m = row._mapping
        return cls(
            id=m["id"],
            tenant_id=m["tenant_id"],
            user_id=m["user_id"],
            provider=m["provider"],
            status=m["status"],
            scopes=tuple(m["scopes"]),
            account_id=m["account_id"],
            account_label=m["account_label"],
            connect_vars=dict(m["connect_vars"]),
            access_token_expires_at=m["access_token_expires_at"],
            has_refresh_token=bool(m["has_refresh_token"]),
            version=m["version"],
            last_refresh_at=m["last_refresh_at"],
            last_refresh_error=m["last_refresh_error"],
            status_reason=m["status_reason"],
            last_used_at=m["last_used_at"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            refresh_failures=m["refresh_failures"],
            refresh_not_before=m["refresh_not_before"],
        )

    def public(self) -> dict[str, Any]:
        """What the management API shows: never a token."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "provider": self.provider,
            "status": self.status,
            "status_reason": self.status_reason,
            "scopes": list(self.scopes),
            "account": {"id": self.account_id, "label": self.account_label},
            "connect_vars": dict(self.connect_vars),
            "token_expires_at": _iso(self.access_token_expires_at),
            "has_refresh_token": self.has_refresh_token,
            "last_refresh_at": _iso(self.last_refresh_at),
            "last_refresh_error": self.last_refresh_error,
            "last_used_at": _iso(self.last_used_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
