"""The decision engine: pure, given what the gateway loaded; it returns a recorded Decision.

Order (the gateway's error contract): the connection (missing, ``needs_reauth``, or lacking
scopes the operation needs → ``authorization_required``), then the grant (none, expired,
revoked, or an operation/scope beyond it → ``insufficient_grant``). A request that matches no
declared operation is refused unless the grant says ``"operations": ["*"]`` (raw access within
the grant's scopes, recorded as raw); operations marked ``explicit`` (batch, GraphQL) must be
named by the grant even then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from tokenbroker.providers.model import Operation

RAW = "*"


@dataclass(frozen=True)
class GrantView:
    id: str
    connection_id: str
    scopes: frozenset[str]
    operations: frozenset[str] | None  # None: any declared operation within the scopes
    expires_at: datetime | None


# ConnectionView and Decision are named tuples: the gateway builds one of each per request, and
# a frozen dataclass costs several times more to build (object.__setattr__ per field).
class ConnectionView(NamedTuple):
    id: str
    status: str
    scopes: frozenset[str]


class Decision(NamedTuple):
    allowed: bool
    code: str | None = None  # authorization_required | insufficient_grant
    reason: str = "allowed"
    operation: str | None = None
    raw: bool = False
    grant_id: str | None = None
    missing_scopes: tuple[str, ...] = ()
    missing_operation: str | None = None


def decide(
    *,
    operation: Operation | None,
    connection: ConnectionView | None,
    grants: Sequence[GrantView],
    now: datetime,
) -> Decision:
    op_name = operation.name if operation else None
    needed = frozenset(operation.scopes) if operation else frozenset()
    if connection is None:
        return Decision(False, "authorization_required", "no_connection", op_name)
    if connection.status == "needs_reauth":
        return Decision(False, "authorization_required", "needs_reauth", op_name)
    never_granted = tuple(sorted(needed - connection.scopes))
    if never_granted:
        return Decision(
            False,
            "authorization_required",
            "scopes_not_granted_by_provider",
            op_name,
            missing_scopes=never_granted,
        )
    live = [
        g
        for g in grants
        if g.connection_id == connection.id and (g.expires_at is None or g.expires_at > now)
    ]
    if not live:
        return Decision(
            False,
            "insufficient_grant",
            "no_grant",
            op_name,
            missing_scopes=tuple(sorted(needed)),
            missing_operation=op_name or RAW,
        )
    best: Decision | None = None
    for grant in live:
        verdict = _against(grant, operation, needed)
        if verdict.allowed:
            return verdict
        best = best or verdict
    assert best is not None
    return best


def _against(grant: GrantView, operation: Operation | None, needed: frozenset[str]) -> Decision:
    ops = grant.operations
    if operation is None:
        if ops is not None and RAW in ops:
            return Decision(True, reason="raw", raw=True, grant_id=grant.id)
        return Decision(
            False,
            "insufficient_grant",
            "undeclared_operation",
            None,
            grant_id=grant.id,
            missing_operation=RAW,
        )
    missing = tuple(sorted(needed - grant.scopes))
    if missing:
        return Decision(
            False,
            "insufficient_grant",
            "scope_not_granted",
            operation.name,
            grant_id=grant.id,
            missing_scopes=missing,
        )
    listed = ops is not None and operation.name in ops
    if operation.explicit and not listed:
        return Decision(
            False,
            "insufficient_grant",
            "explicit_operation_not_granted",
            operation.name,
            grant_id=grant.id,
            missing_operation=operation.name,
        )
    if ops is not None and not listed and RAW not in ops:
        return Decision(
            False,
            "insufficient_grant",
            "operation_not_granted",
            operation.name,
            grant_id=grant.id,
            missing_operation=operation.name,
        )
    return Decision(True, operation=operation.name, grant_id=grant.id)
