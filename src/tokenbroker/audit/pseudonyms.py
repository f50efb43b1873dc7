"""Keyed pseudonyms: audit records name a user only as ``HMAC-SHA256(user key, user id)``.

Each (tenant, user) has a random 32-byte key in ``audit_user_keys``, sealed by the vault's
envelope (context: tenant, user, ``audit_user``, ``pseudonym``, ``pseudonym_key``), so the
table alone does not reveal it. Keys are created inside the chain's commit transaction, after
the tenant's head row is locked, so two replicas never create two keys for one user. A key
sealed under a key-encryption key that is no longer active is rewrapped under the active one
when next used. Queries by user compute the pseudonym; erasure deletes the key, after which no
record can be tied to the person and none had to be rewritten. Detail fields that name a
person (``PERSONAL_FIELDS``) are pseudonymized with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.clock import utcnow
from tokenbroker.db.schema import audit_user_keys
from tokenbroker.db.sql import upsert_statement
from tokenbroker.errors import CredentialCorrupt
from tokenbroker.records import Scalar
from tokenbroker.vault.envelope import Envelope, SealContext

PERSONAL_FIELDS: Final = frozenset({"user_id", "account_id", "account_label", "email"})
log = logging.getLogger("tokenbroker.audit")
_k = audit_user_keys.c


_KEYS = select(_k.user_id, _k.key_id, _k.blob).where(
    _k.tenant_id == bindparam("tenant"), _k.user_id.in_(bindparam("users", expanding=True))
)  # built once: the audit writer runs it at every commit


def _ctx(tenant_id: str, user_id: str) -> SealContext:
    return SealContext(tenant_id, user_id, "audit_user", "pseudonym", "pseudonym_key")


def user_ref(key: bytes, user_id: str) -> str:
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def scrub(key: bytes | None, detail: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """The detail with personal fields replaced by their pseudonyms (dropped without a key)."""
    out: dict[str, Scalar] = {}
    for name, value in detail.items():
        if name in PERSONAL_FIELDS and value is not None:
            if key is None:
                continue
            tagged = f"{name}:{value}".encode()
            value = "ref:" + hmac.new(key, tagged, hashlib.sha256).hexdigest()[:32]
        out[name] = value
    return out


class Pseudonyms:
    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._opened: dict[tuple[str, str, bytes], bytes] = {}  # (tenant, user, blob) -> key

    async def keys(
        self, conn: AsyncConnection, tenant_id: str, user_ids: Iterable[str], *, create: bool
    ) -> dict[str, bytes]:
        return await conn.run_sync(self.keys_in, tenant_id, user_ids, create=create)

    def keys_in(
        self, conn: Connection, tenant_id: str, user_ids: Iterable[str], *, create: bool
    ) -> dict[str, bytes]:
        """The users' keys; missing ones are created when ``create`` (call with the head
        locked) and left out otherwise. Synchronous: the audit chain's commit calls it."""
        wanted = set(user_ids)
        if not wanted:
            return {}
        rows = conn.execute(_KEYS, {"tenant": tenant_id, "users": sorted(wanted)})
        active = self._envelope.keyring().active_id
        found: dict[str, bytes] = {}
        for row in rows.all():
            try:
                found[row.user_id] = self._open(bytes(row.blob), tenant_id, row.user_id)
            except CredentialCorrupt:
                log.warning("an audit pseudonym key does not open; the user gets a new one")
                continue
            if create and row.key_id != active:
                self._store(conn, tenant_id, row.user_id, found[row.user_id])
        if create:
            for user in wanted - set(found):
                found[user] = secrets.token_bytes(32)
                self._store(conn, tenant_id, user, found[user])
        return found

    async def ref(self, conn: AsyncConnection, tenant_id: str, user_id: str) -> str | None:
        """The pseudonym queries by ``user_id`` look for; None if the user has no key."""
        key = (await self.keys(conn, tenant_id, [user_id], create=False)).get(user_id)
        return None if key is None else user_ref(key, user_id)

    async def erase(self, conn: AsyncConnection, tenant_id: str, user_id: str) -> bool:
        result = await conn.execute(
            delete(audit_user_keys).where(_k.tenant_id == tenant_id, _k.user_id == user_id)
        )
        self._opened.clear()
        return bool(result.rowcount)

    def _open(self, blob: bytes, tenant_id: str, user_id: str) -> bytes:
        cached = (tenant_id, user_id, blob)
        key = self._opened.get(cached)
        if key is None:
            key = bytes.fromhex(self._envelope.open(blob, _ctx(tenant_id, user_id)).decode())
            if len(self._opened) > 50_000:
                self._opened.clear()
            self._opened[cached] = key
        return key

    def _store(self, conn: Connection, tenant_id: str, user_id: str, key: bytes) -> None:
        blob = self._envelope.seal(key.hex().encode(), _ctx(tenant_id, user_id))
        values = {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "key_id": self._envelope.key_id_of(blob),
            "blob": blob,
            "created_at": utcnow(),
        }
        keys = ("tenant_id", "user_id")
        conn.execute(upsert_statement(conn.dialect.name, audit_user_keys, values, keys=keys))


async def rewrap_keys(engine: AsyncEngine, envelope: Envelope) -> int:
    """``keys rewrap`` for the pseudonym keys: move each onto the active key-encryption key
    (compare-and-swap on the old key id, so a concurrent write is never overwritten)."""
    active = envelope.keyring().active_id
    changed = 0
    async with engine.begin() as conn:
        rows = await conn.execute(
            select(_k.tenant_id, _k.user_id, _k.key_id, _k.blob).where(_k.key_id != active)
        )
        for row in rows.all():
            old = bytes(row.blob)
            try:
                blob = envelope.rewrap(old, _ctx(row.tenant_id, row.user_id))
            except CredentialCorrupt:
                log.warning("an audit pseudonym key does not open; it was not re-wrapped")
                continue
            result = await conn.execute(
                update(audit_user_keys)
                .where(
                    _k.tenant_id == row.tenant_id,
                    _k.user_id == row.user_id,
                    _k.key_id == row.key_id,
                )
                .values(key_id=envelope.key_id_of(blob), blob=blob)
            )
            changed += result.rowcount
    return changed


async def count_keys_by_kek(engine: AsyncEngine) -> dict[str, int]:
    """Pseudonym keys per key-encryption key (``keys retire`` refuses a key still in use)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(_k.key_id, func.count()).group_by(_k.key_id))
        return {key_id: int(count) for key_id, count in rows}
