"""The key document: the key ring as a value, its JSON form and its pure edits.

The key file is JSON, mode 0600::

    {"version": 1, "active": "k-20261129-ab12",
     "keys": [{"id": "k-20261129-ab12", "material": "<base64 of 32 bytes>",
               "created_at": "2026-11-29T10:00:00+00:00", "state": "active"}]}

A key's ``state`` is ``active`` (the one key that seals new values), ``decrypt_only`` (opens
values, seals none: a key just added, or the previous active key) or ``retired`` (no material
left; no sealed value may use it). ``TOKENBROKER_KEYS`` may hold the same document, or a single
base64 key that becomes the active key ``env-1``.

Key material never appears in a ``repr``, an exception message or a log line. Nothing here
touches the disk: :mod:`tokenbroker.vault.keyring` reads and writes the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, cast

from tokenbroker.errors import KeyError_

KeyState = Literal["active", "decrypt_only", "retired"]

DOCUMENT_VERSION: Final = 1
KEY_BYTES: Final = 32
ENV_KEY_ID: Final = "env-1"
ENV_VAR: Final = "TOKENBROKER_KEYS"
_STATES: Final = ("active", "decrypt_only", "retired")
# ASCII only and never a NUL: the id is length-prefixed in blobs and prefixes associated data.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class KeyEntry:
    """One key of the ring. ``material`` is ``None`` once the key is retired."""

    id: str
    state: KeyState
    created_at: str
    material: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KeyRing:
    """Keys by id and the id of the active key. A value: edits return a new ring."""

    active_id: str
    entries: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        _validate_ring(self.active_id, self.entries)

    def entry(self, key_id: str) -> KeyEntry | None:
        return next((e for e in self.entries if e.id == key_id), None)

    def kek(self, key_id: str) -> bytes:
        """The material of ``key_id``; raises :class:`KeyError_` naming only the id."""
        found = self.entry(key_id)
        if found is None:
            raise KeyError_(f"key {key_id} is not in the key file")
        if found.material is None:
            raise KeyError_(f"key {key_id} is retired: its material was removed from the key file")
        return found.material

    def can_open(self, key_id: str) -> bool:
        found = self.entry(key_id)
        return found is not None and found.material is not None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    @property
    def retired_ids(self) -> frozenset[str]:
        return frozenset(e.id for e in self.entries if e.state == "retired")

    def __repr__(self) -> str:
        keys = ", ".join(f"{e.id}:{e.state}" for e in self.entries)
        return f"KeyRing(active_id={self.active_id!r}, keys=[{keys}])"

    __str__ = __repr__


def _validate_ring(active_id: str, entries: tuple[KeyEntry, ...]) -> None:
    seen: set[str] = set()
    for e in entries:
        if not _KEY_ID.fullmatch(e.id):
            raise KeyError_(f"key id {e.id!r} is invalid: use 1-64 of A-Z a-z 0-9 . _ -")
        if e.id in seen:
            raise KeyError_(f"key id {e.id} appears more than once")
        seen.add(e.id)
        if e.state not in _STATES:
            raise KeyError_(f"key {e.id} has unknown state {e.state!r}")
        if e.state == "retired" and e.material is not None:
            raise KeyError_(f"key {e.id} is retired but still has material")
        if e.state != "retired" and (e.material is None or len(e.material) != KEY_BYTES):
            raise KeyError_(f"key {e.id} must be {KEY_BYTES} bytes (base64-encoded)")
    active = [e.id for e in entries if e.state == "active"]
    if not active_id or active_id not in seen:
        raise KeyError_("no active key: `active` must name a key in `keys`")
    if active != [active_id]:
        raise KeyError_(f"exactly one key, {active_id}, must have state `active`")


def ring_from_document(doc: object, source: str) -> KeyRing:
    """Parse a key document (already JSON-decoded); ``source`` names it in error messages."""
    if not isinstance(doc, Mapping):
        raise KeyError_(f"{source}: expected a JSON object")
    if doc.get("version") != DOCUMENT_VERSION:
        raise KeyError_(f"{source}: unsupported version (expected {DOCUMENT_VERSION})")
    keys = doc.get("keys")
    active = doc.get("active")
    if not isinstance(keys, list) or not keys:
        raise KeyError_(f"{source}: `keys` must be a non-empty list")
    if not isinstance(active, str):
        raise KeyError_(f"{source}: no active key (`active` must name a key)")
    entries = tuple(_entry_from_json(k, source) for k in keys)
    try:
        return KeyRing(active_id=active, entries=entries)
    except KeyError_ as exc:
        raise KeyError_(f"{source}: {exc.message}") from None


def _entry_from_json(item: object, source: str) -> KeyEntry:
    if not isinstance(item, Mapping):
        raise KeyError_(f"{source}: each key must be a JSON object")
    key_id, state, created = item.get("id"), item.get("state"), item.get("created_at", "")
    if not isinstance(key_id, str) or not isinstance(state, str) or not isinstance(created, str):
        raise KeyError_(f"{source}: each key needs string `id`, `state` and `created_at`")
    raw = item.get("material")
    material = None if raw is None else _decode_material(raw, f"{source}: key {key_id}")
    return KeyEntry(id=key_id, state=cast(KeyState, state), created_at=created, material=material)


def _decode_material(raw: object, where: str) -> bytes:
    if not isinstance(raw, str):
        raise KeyError_(f"{where}: material must be a base64 string")
    try:
        material = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_(f"{where}: material is not valid base64") from None
    if len(material) != KEY_BYTES:
        raise KeyError_(f"{where}: material must be {KEY_BYTES} bytes, got {len(material)}")
    return material


def ring_to_document(ring: KeyRing) -> dict[str, Any]:
    keys: list[dict[str, Any]] = []
    for e in ring.entries:
        item: dict[str, Any] = {"id": e.id, "created_at": e.created_at, "state": e.state}
        if e.material is not None:
            item["material"] = base64.b64encode(e.material).decode("ascii")
        keys.append(item)
    return {"version": DOCUMENT_VERSION, "active": ring.active_id, "keys": keys}


def parse_env_value(value: str) -> KeyRing:
    """``TOKENBROKER_KEYS``: a key document, or one base64 key that becomes ``env-1``."""
    text = value.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyError_(f"{ENV_VAR}: not valid JSON (line {exc.lineno})") from None
        return ring_from_document(doc, ENV_VAR)
    material = _decode_material(text, ENV_VAR)
    entry = KeyEntry(id=ENV_KEY_ID, state="active", created_at="", material=material)
    return KeyRing(active_id=ENV_KEY_ID, entries=(entry,))


def with_new_key(ring: KeyRing, key_id: str, material: bytes, created_at: str) -> KeyRing:
    """Add a ``decrypt_only`` key: every replica can open with it before any seals with it."""
    if ring.entry(key_id) is not None:
        raise KeyError_(f"key id {key_id} already exists")
    entry = KeyEntry(id=key_id, state="decrypt_only", created_at=created_at, material=material)
    return KeyRing(active_id=ring.active_id, entries=(*ring.entries, entry))


def promoted(ring: KeyRing, key_id: str) -> KeyRing:
    """Make ``key_id`` the active key; the previous active key becomes ``decrypt_only``."""
    found = ring.entry(key_id)
    if found is None:
        raise KeyError_(f"key {key_id} is not in the key file")
    if found.state == "retired":
        raise KeyError_(f"key {key_id} is retired and cannot become active")
    if key_id == ring.active_id:
        return ring
    entries = tuple(
        replace(e, state="active")
        if e.id == key_id
        else replace(e, state="decrypt_only")
        if e.id == ring.active_id
        else e
        for e in ring.entries
    )
    return KeyRing(active_id=key_id, entries=entries)


def retired(ring: KeyRing, key_id: str, *, in_use: int) -> KeyRing:
    """Retire ``key_id`` (its material is dropped); refused while sealed values still use it."""
    found = ring.entry(key_id)
    if found is None:
        raise KeyError_(f"key {key_id} is not in the key file")
    if key_id == ring.active_id:
        raise KeyError_(
            f"key {key_id} is the active key: promote another key, run "
            "`tokenbroker keys rewrap`, then retire it"
        )
    if in_use > 0:
        raise KeyError_(
            f"key {key_id} still seals {in_use} value(s): run `tokenbroker keys rewrap` first"
        )
    if found.state == "retired":
        return ring
    entries = tuple(
        replace(e, state="retired", material=None) if e.id == key_id else e for e in ring.entries
    )
    return KeyRing(active_id=ring.active_id, entries=entries)
