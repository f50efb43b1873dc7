"""``tokenbroker audit export``: a tenant's records as JSON Lines or CSV, streamed.

The head is signed first (an ``export`` checkpoint), then records are read batch by batch
(:mod:`tokenbroker.audit.rows`) and written as they come: memory stays bounded whatever the
size of the trail. CSV carries ``detail`` as a JSON string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

from tokenbroker.audit.checkpoints import sign_head
from tokenbroker.audit.query import PUBLIC_COLUMNS, Filters, condition, public
from tokenbroker.audit.rows import iter_rows
from tokenbroker.audit.trail import trail_of
from tokenbroker.errors import BadRequest
from tokenbroker.services import Services

FORMATS = ("jsonl", "csv")


async def export_lines(
    svc: Services, tenant_id: str, fmt: str, filters: Filters
) -> AsyncIterator[str]:
    if fmt not in FORMATS:
        raise BadRequest("format must be jsonl or csv")
    trail = trail_of(svc)
    await trail.flush()
    await sign_head(svc, tenant_id, "export")
    where = await condition(svc, trail.pseudonyms, tenant_id, filters)
    if fmt == "csv":
        yield _csv_line(list(PUBLIC_COLUMNS))
    async for row in iter_rows(svc.engine, tenant_id, where=where):
        doc = public(row)
        if fmt == "jsonl":
            yield json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
        else:
            doc["detail"] = json.dumps(doc["detail"], sort_keys=True, separators=(",", ":"))
            yield _csv_line(["" if doc[c] is None else str(doc[c]) for c in PUBLIC_COLUMNS])


def _csv_line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
