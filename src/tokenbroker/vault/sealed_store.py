"""Sealed values in ``sealed_secrets``: one envelope-encrypted blob per (owner, field).

The caller passes the :class:`AsyncConnection` and owns the transaction, so a token write and
the row that refers to it commit together. Values are :class:`~tokenbroker.secret.Secret`;
they are opened here and handed back still wrapped.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.db.schema import sealed_secrets
from tokenbroker.db.sql import upsert
from tokenbroker.secret import Secret
from tokenbroker.vault.envelope import Envelope, Owner, SealContext, SealOpenError

_OWNER_KEYS = ("owner_kind", "owner_id", "field")
_t = sealed_secrets.c


def _owner(ref: Owner | SealContext) -> Owner:
    return ref.owner if isinstance(ref, SealContext) else ref


class SealedStore:
    """Reads and writes sealed values through an :class:`Envelope`."""

    def __init__(self, envelope: Envelope, *, clock: Clock | None = None) -> None:
        self._envelope = envelope
        self._clock: Clock = clock if clock is not None else SystemClock()

    async def put(self, conn: AsyncConnection, ctx: SealContext, value: Secret) -> None:
        """Seal ``value`` under the active key and insert or replace the (owner, field) row."""
        blob = self._envelope.seal(value.reveal().encode("utf-8"), ctx)
        await self._write(conn, ctx, blob)

    async def get(self, conn: AsyncConnection, ctx: SealContext) -> Secret | None:
        """The value, ``None`` if absent; :class:`CredentialCorrupt` if it does not open."""
        row = (
            await conn.execute(
                select(_t.blob).where(
                    _t.owner_kind == ctx.owner_kind,
                    _t.owner_id == ctx.owner_id,
                    _t.field == ctx.field,
                )
            )
        ).first()
        return None if row is None else self._open(row.blob, ctx)

    async def get_many(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        user_id: str,
        owner_kind: str,
        owner_id: str,
        fields: Iterable[str],
    ) -> dict[str, Secret]:
        """The present ``fields`` of one owner, by field name (absent ones are left out)."""
        wanted = list(fields)
        if not wanted:
            return {}
        owner = Owner(tenant_id, user_id, owner_kind, owner_id)
        rows = await conn.execute(
            select(_t.field, _t.blob).where(
                _t.owner_kind == owner_kind, _t.owner_id == owner_id, _t.field.in_(wanted)
            )
        )
        return {row.field: self._open(row.blob, owner.context(row.field)) for row in rows}

    async def delete_owner(self, conn: AsyncConnection, owner_kind: str, owner_id: str) -> int:
        """Delete every sealed field of one owner; returns how many rows went."""
        result = await conn.execute(
            delete(sealed_secrets).where(_t.owner_kind == owner_kind, _t.owner_id == owner_id)
        )
        return result.rowcount

    async def delete_field(
        self, conn: AsyncConnection, owner_kind: str, owner_id: str, field: str
    ) -> int:
        """Delete one sealed field of one owner; returns how many rows went (0 or 1)."""
        result = await conn.execute(
            delete(sealed_secrets).where(
                _t.owner_kind == owner_kind, _t.owner_id == owner_id, _t.field == field
            )
        )
        return result.rowcount

    async def move_owner(
        self,
        conn: AsyncConnection,
        from_ctx_base: Owner | SealContext,
        to_ctx_base: Owner | SealContext,
    ) -> int:
        """Re-seal every field of one owner for another (a ``SealContext``'s field is ignored).

        Each value is opened with the old context and sealed afresh with the new one; the old
        rows are deleted. Call it inside the transaction that creates the new owner.
        """
        src, dst = _owner(from_ctx_base), _owner(to_ctx_base)
        rows = (
            await conn.execute(
                select(_t.field, _t.blob).where(
                    _t.owner_kind == src.owner_kind, _t.owner_id == src.owner_id
                )
            )
        ).all()
        for row in rows:
            plaintext = self._envelope.open(row.blob, src.context(row.field))
            ctx = dst.context(row.field)
            await self._write(conn, ctx, self._envelope.seal(plaintext, ctx))
        if src.owner_kind != dst.owner_kind or src.owner_id != dst.owner_id:
            await self.delete_owner(conn, src.owner_kind, src.owner_id)
        return len(rows)

    async def _write(self, conn: AsyncConnection, ctx: SealContext, blob: bytes) -> None:
        values = {
            "tenant_id": ctx.tenant_id,
            "user_id": ctx.user_id,
            "owner_kind": ctx.owner_kind,
            "owner_id": ctx.owner_id,
            "field": ctx.field,
            "key_id": self._envelope.key_id_of(blob),
            "blob": blob,
            "updated_at": self._clock.now(),
        }
        await upsert(conn, sealed_secrets, values, keys=_OWNER_KEYS)

    def _open(self, blob: bytes, ctx: SealContext) -> Secret:
        plaintext = self._envelope.open(blob, ctx)
        try:
            return Secret(plaintext.decode("utf-8"))
        except UnicodeDecodeError:
            raise SealOpenError(
                f"sealed {ctx.describe()} is not text", reason="malformed"
            ) from None
