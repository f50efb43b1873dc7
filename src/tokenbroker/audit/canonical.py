"""The canonical encoding of an audit record, and its hash (SHA-256, hex).

A record's hash covers every stored column except ``id`` (a storage detail, assigned after
the hash is computed) and ``hash`` itself: JSON with sorted keys, no whitespace, ASCII only,
``at`` as ISO 8601 UTC with microseconds, ``detail`` as the JSON object. ``prev_hash`` is one
of the columns, so each record commits to every record before it in its tenant's chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

GENESIS: Final = "0" * 64
HASHED_COLUMNS: Final = (
    "tenant_id",
    "seq",
    "prev_hash",
    "at",
    "type",
    "actor",
    "user_id",
    "user_ref",
    "agent_id",
    "provider",
    "connection_id",
    "outcome",
    "detail",
)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: Mapping[str, Any]) -> bytes:
    doc = {name: row.get(name) for name in HASHED_COLUMNS}
    doc["at"] = iso(row["at"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def record_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


def encode_detail(detail: Mapping[str, Any]) -> str:
    """``detail`` exactly as :func:`canonical` encodes it inside the record."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def record_hash_with(row: Mapping[str, Any], detail_json: str) -> str:
    """:func:`record_hash` for a row whose ``detail`` is already encoded (the writer's path).

    The keys are sorted and always all present, so ``detail`` sits right before ``outcome``:
    splicing its encoding there gives the very bytes :func:`canonical` would produce.
    """
    doc = {name: row.get(name) for name in HASHED_COLUMNS if name != "detail"}
    doc["at"] = iso(row["at"])
    head, sep, tail = json.dumps(doc, sort_keys=True, separators=(",", ":")).partition(
        ',"outcome":'
    )
    assert sep, "outcome is always a column"
    data = f'{head},"detail":{detail_json}{sep}{tail}'
    return hashlib.sha256(data.encode("ascii")).hexdigest()
