"""Start-up proof that the key file is the one this database was sealed with (B4).

``key_checks`` holds one known value sealed under each key the broker has sealed with. Before
any write, :func:`verify_keys` opens each of them and checks that every key id used in
``sealed_secrets`` is in the key file; a mismatch stops the broker. Only then does
:func:`ensure_key_check` record a check for the active key.
"""

from __future__ import annotations

import hmac
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.db.schema import key_checks, sealed_secrets
from tokenbroker.db.sql import insert_if_missing
from tokenbroker.errors import CredentialCorrupt, KeyError_
from tokenbroker.vault.envelope import Envelope, SealContext

CHECK_PLAINTEXT: Final = b"tokenbroker key check"
_MISMATCH: Final = "the key file does not match this database"


def check_context(key_id: str) -> SealContext:
    return SealContext("-", "-", "key_check", key_id, "check")


async def verify_keys(conn: AsyncConnection, envelope: Envelope) -> None:
    """Raise :class:`KeyError_` if the key ring cannot open what this database holds.

    Reads only. Checks for retired keys are skipped (their values were re-wrapped before the
    retirement); every key id still used by a sealed value must be open-able.
    """
    ring = envelope.keyring()
    rows = (await conn.execute(select(key_checks.c.key_id, key_checks.c.blob))).all()
    for row in rows:
        key_id: str = row.key_id
        if key_id in ring.retired_ids:
            continue
        if ring.entry(key_id) is None:
            raise KeyError_(f"{_MISMATCH}: key {key_id} is not in the key file")
        try:
            opened = envelope.open(row.blob, check_context(key_id))
        except CredentialCorrupt:
            opened = b""
        if not hmac.compare_digest(opened, CHECK_PLAINTEXT):
            raise KeyError_(
                f"{_MISMATCH}: key {key_id} in the key file is not the key this database "
                "was sealed with"
            )
    used = (await conn.execute(select(sealed_secrets.c.key_id).distinct())).scalars().all()
    for key_id in sorted(used):
        if not ring.can_open(key_id):
            state = "retired in" if key_id in ring.retired_ids else "not in"
            raise KeyError_(
                f"{_MISMATCH}: key {key_id} seals stored values but is {state} the key file"
            )


async def ensure_key_check(
    conn: AsyncConnection, envelope: Envelope, *, clock: Clock | None = None
) -> bool:
    """Record the check value for the active key if it is missing; True if one was written."""
    key_id = envelope.keyring().active_id
    exists = (
        await conn.execute(select(key_checks.c.key_id).where(key_checks.c.key_id == key_id))
    ).first()
    if exists is not None:
        return False
    now = (clock if clock is not None else SystemClock()).now()
    blob = envelope.seal(CHECK_PLAINTEXT, check_context(key_id))
    if envelope.key_id_of(blob) != key_id:  # the key file was promoted meanwhile: next time
        return False
    values = {"key_id": key_id, "blob": blob, "created_at": now}
    return await insert_if_missing(conn, key_checks, values, keys=("key_id",))
