"""The canonical encoding of an audit record, and its hash (SHA-256, hex).

A record's hash covers every stored column except ``id`` (a storage detail, assigned after
the hash is computed) and ``hash`` itself: JSON with sorted keys, no whitespace, ASCII only,
``at`` as ISO 8601 UTC with microseconds, ``detail`` as the JSON object. ``prev_hash`` is one
of the columns, so each record commits to every record before it in its tenant's chain.
"""

from __future__ import annotations

import functools
import hashlib
import json
import json.encoder
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
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
    """``at`` as ISO 8601 UTC with microseconds and ``Z`` (what :func:`canonical` hashes)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def posix_time(seconds: float) -> tuple[datetime, str]:
    """A POSIX time (not before 1970) as a datetime, to the microsecond, and as :func:`iso`
    writes it: the second's text (cached) and the microseconds, a third of what ``iso``
    costs; the audit writer formats every record's time."""
    at = datetime.fromtimestamp(seconds, UTC)
    whole = int(seconds)
    if at.microsecond == 0 and seconds - whole > 0.5:  # rounded up into the next second
        whole += 1
    return at, "%s.%06dZ" % (_second(whole), at.microsecond)  # noqa: UP031 (faster)


@functools.lru_cache(maxsize=64)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def canonical(row: Mapping[str, Any]) -> bytes:
    doc = {name: row.get(name) for name in HASHED_COLUMNS}
    doc["at"] = iso(row["at"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def record_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


# One encoder, built once: ``json.dumps`` with arguments builds a new one per call.
_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _detail_encoder() -> Callable[[Mapping[str, Any]], str]:
    """``_ENCODER.encode`` without its Python layers: the C encoder it would build for a
    one-shot dict anyway, built once, and no circular-reference bookkeeping (a detail holds
    only scalars)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    chunks = make(
        None, _ENCODER.default, encode_basestring_ascii, None, ":", ",", True, False, True
    )
    return lambda detail: "".join(chunks(detail, 0))


_encode_detail: Final = _detail_encoder()


def encode_detail(detail: Mapping[str, Any]) -> str:
    """``detail`` exactly as :func:`canonical` encodes it inside the record."""
    return _encode_detail(detail)


def _json(value: Any) -> str:
    """One column value exactly as :func:`canonical` encodes it (strings in C, no dict)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    return _ENCODER.encode(value)


def record_hash_with(row: Mapping[str, Any], detail_json: str) -> str:
    """:func:`record_hash` for a row whose ``detail`` is already encoded (the writer's path)."""
    get = row.get
    return hash_columns(
        get("actor"),
        get("agent_id"),
        iso(row["at"]),
        get("connection_id"),
        detail_json,
        get("outcome"),
        get("prev_hash"),
        get("provider"),
        get("seq"),
        get("tenant_id"),
        get("type"),
        get("user_id"),
        get("user_ref"),
    )


def hash_columns(
    actor: Any,
    agent_id: Any,
    at_iso: str,
    connection_id: Any,
    detail_json: str,
    outcome: Any,
    prev_hash: Any,
    provider: Any,
    seq: Any,
    tenant_id: Any,
    type_: Any,
    user_id: Any,
    user_ref: Any,
) -> str:
    """The record hash from its column values in sorted-name order, ``at`` already as
    :func:`iso` and ``detail`` already encoded: each value is written as :func:`canonical`'s
    ``json.dumps`` would, without building and sorting a document per record
    (``tests/audit_trail/test_canonical_fast_path.py`` checks the bytes are the same).

    The runs of columns between the per-record values (time, detail, previous hash, seq)
    repeat from record to record in a batch, so their encodings are cached.
    """
    data = "".join(
        (
            _run_actor(actor, agent_id), at_iso,
            _run_connection(connection_id), detail_json,
            _run_outcome(outcome), _json(prev_hash),
            _run_provider(provider), _json(seq),
            _run_tail(tenant_id, type_, user_id, user_ref),
        )
    )  # fmt: skip
    return hashlib.sha256(data.encode("ascii")).hexdigest()


@functools.lru_cache(maxsize=4096, typed=True)
def _run_actor(actor: Any, agent_id: Any) -> str:
    return f'{{"actor":{_json(actor)},"agent_id":{_json(agent_id)},"at":"'


@functools.lru_cache(maxsize=4096, typed=True)
def _run_connection(connection_id: Any) -> str:
    return f'","connection_id":{_json(connection_id)},"detail":'


@functools.lru_cache(maxsize=1024, typed=True)
def _run_outcome(outcome: Any) -> str:
    return f',"outcome":{_json(outcome)},"prev_hash":'


@functools.lru_cache(maxsize=1024, typed=True)
def _run_provider(provider: Any) -> str:
    return f',"provider":{_json(provider)},"seq":'


@functools.lru_cache(maxsize=4096, typed=True)
def _run_tail(tenant_id: Any, type_: Any, user_id: Any, user_ref: Any) -> str:
    return (
        f',"tenant_id":{_json(tenant_id)},"type":{_json(type_)},'
        f'"user_id":{_json(user_id)},"user_ref":{_json(user_ref)}}}'
    )
