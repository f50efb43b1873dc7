"""The audit trail and user erasure (management API, admin key).

``GET /v1/audit?user_id=&agent_id=&provider=&since=&until=&cursor=&limit=``: records of the
key's tenant in chain order, ``{"records": [...], "next_cursor": "s123" | null}``; records name
users only by pseudonym (``user_ref``); a filter by ``user_id`` computes it.
``DELETE /v1/users/{id}``: erases the user (:mod:`tokenbroker.audit.erasure`).
"""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api.http import json_response
from tokenbroker.api.keys import ADMIN_KEYS, SERVICES
from tokenbroker.audit.erasure import erase_user
from tokenbroker.audit.query import Filters, condition, cursor_of, parse_cursor, parse_time, public
from tokenbroker.audit.rows import iter_rows
from tokenbroker.audit.trail import trail_of
from tokenbroker.connect.sessions import check_user_id
from tokenbroker.errors import BadRequest

routes = web.RouteTableDef()
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return int(value)


@routes.get("/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    tenant_id = request.app[ADMIN_KEYS].tenant_for(request)
    svc = request.app[SERVICES]
    q = request.query
    filters = Filters(
        user_id=q.get("user_id") or None,
        agent_id=q.get("agent_id") or None,
        provider=q.get("provider") or None,
        since=parse_time(q.get("since"), "since"),
        until=parse_time(q.get("until"), "until"),
    )
    limit = _limit(q.get("limit"))
    after = parse_cursor(q.get("cursor"))
    where = await condition(svc, trail_of(svc).pseudonyms, tenant_id, filters)
    records = []
    async for row in iter_rows(
        svc.engine, tenant_id, after_seq=after, where=where, batch=limit + 1
    ):
        records.append(public(row))
        if len(records) > limit:
            break
    more = len(records) > limit
    records = records[:limit]
    next_cursor = cursor_of(int(records[-1]["seq"])) if more and records else None
    return json_response({"records": records, "next_cursor": next_cursor})


@routes.delete("/v1/users/{id}")
async def erase(request: web.Request) -> web.Response:
    tenant_id = request.app[ADMIN_KEYS].tenant_for(request)
    user_id = check_user_id(request.match_info["id"])
    erased = await erase_user(request.app[SERVICES], tenant_id, user_id, actor="admin")
    return json_response(
        {
            "erased": True,
            "connections": erased.connections,
            "grants": erased.grants,
            "agent_sessions": erased.sessions,
            "webhook_deliveries": erased.webhook_deliveries,
        }
    )
