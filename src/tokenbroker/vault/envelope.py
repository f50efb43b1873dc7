"""Envelope encryption: AES-256-GCM with a fresh data key (DEK) per sealed value.

Blob format, version 1 (all lengths in bytes)::

    0x01               version
    n                  length of the key id (1..64)
    key_id             n bytes, ASCII: the key-encryption key (KEK) that wraps the DEK
    nonce_w            12, random
    wrapped_dek        48: AESGCM(KEK).encrypt(nonce_w, DEK, dek_ad)
    nonce_c            12, random
    ciphertext || tag  len(plaintext) + 16: AESGCM(DEK).encrypt(nonce_c, plaintext, ctx)

    dek_ad = b"tokenbroker/dek/v1|" + key_id + ctx

``ctx`` is :meth:`SealContext.encode`: tenant, user, owner kind, owner id and field, each as a
4-byte big-endian length and its UTF-8 bytes. A blob copied to another row (another user,
connection or field) therefore fails to open, and so does any changed byte. Key ids never
contain a NUL byte and ``ctx`` starts with one, so the DEK-wrap associated data is unambiguous.

Each DEK seals exactly one value, so its nonce never repeats; each KEK wraps one DEK per seal
under a random 96-bit nonce (rotate the KEK well before 2**32 seals). Re-wrapping replaces
only the key id, ``nonce_w`` and ``wrapped_dek``: the ciphertext does not change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenbroker.errors import CredentialCorrupt
from tokenbroker.vault.keyring import KeyRing

BLOB_VERSION: Final = 0x01
NONCE_BYTES: Final = 12
DEK_BYTES: Final = 32
TAG_BYTES: Final = 16
WRAPPED_DEK_BYTES: Final = DEK_BYTES + TAG_BYTES
DEK_AD_PREFIX: Final = b"tokenbroker/dek/v1|"
_MAX_FIELD_BYTES: Final = 0xFFFF


class KeyRingProvider(Protocol):
    """Where the envelope gets its keys: :class:`~tokenbroker.vault.keyring.ReloadingKeyRing`."""

    def current(self) -> KeyRing: ...

    def reload_now(self, key_id: str | None = None) -> KeyRing: ...


@dataclass(frozen=True)
class Owner:
    """The row a set of sealed fields belongs to (a connection, a connect session...)."""

    tenant_id: str
    user_id: str
    owner_kind: str
    owner_id: str

    def context(self, field: str) -> SealContext:
        return SealContext(self.tenant_id, self.user_id, self.owner_kind, self.owner_id, field)


@dataclass(frozen=True)
class SealContext:
    """What a sealed value is bound to; bound into the AEAD associated data."""

    tenant_id: str
    user_id: str
    owner_kind: str
    owner_id: str
    field: str

    @property
    def owner(self) -> Owner:
        return Owner(self.tenant_id, self.user_id, self.owner_kind, self.owner_id)

    def encode(self) -> bytes:
        """Canonical bytes: each part as a 4-byte big-endian length then its UTF-8 bytes."""
        out = bytearray()
        for part in (self.tenant_id, self.user_id, self.owner_kind, self.owner_id, self.field):
            raw = part.encode("utf-8")
            if len(raw) > _MAX_FIELD_BYTES:
                raise ValueError("seal context part too long")
            out += len(raw).to_bytes(4, "big") + raw
        return bytes(out)

    def describe(self) -> str:
        """Names the record for error messages: ids only, never data."""
        return f"{self.owner_kind} {self.owner_id} field {self.field}"


class SealOpenError(CredentialCorrupt):
    """A sealed value did not open. ``reason``: malformed | unknown_key | retired_key | tampered."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Parsed:
    key_id: str
    nonce_w: bytes
    wrapped_dek: bytes
    body: bytes  # nonce_c || ciphertext || tag, unchanged by a re-wrap


def _parse(blob: bytes) -> _Parsed | None:
    if len(blob) < 2 or blob[0] != BLOB_VERSION:
        return None
    n = blob[1]
    start = 2 + n
    if n == 0 or len(blob) < start + NONCE_BYTES + WRAPPED_DEK_BYTES + NONCE_BYTES + TAG_BYTES:
        return None
    try:
        key_id = blob[2:start].decode("ascii")
    except UnicodeDecodeError:
        return None
    rest = start + NONCE_BYTES
    return _Parsed(
        key_id=key_id,
        nonce_w=blob[start:rest],
        wrapped_dek=blob[rest : rest + WRAPPED_DEK_BYTES],
        body=blob[rest + WRAPPED_DEK_BYTES :],
    )


def _header(key_id: str, nonce_w: bytes, wrapped_dek: bytes) -> bytes:
    raw = key_id.encode("ascii")
    return bytes((BLOB_VERSION, len(raw))) + raw + nonce_w + wrapped_dek


def _dek_ad(key_id: str, ctx: SealContext) -> bytes:
    return DEK_AD_PREFIX + key_id.encode("ascii") + ctx.encode()


def _wrap(kek: bytes, key_id: str, dek: bytes, ctx: SealContext) -> bytes:
    nonce_w = os.urandom(NONCE_BYTES)
    return _header(key_id, nonce_w, AESGCM(kek).encrypt(nonce_w, dek, _dek_ad(key_id, ctx)))


class Envelope:
    """Seals and opens values with the provider's keys: new values use the active key."""

    def __init__(self, keyring_provider: KeyRingProvider) -> None:
        self._keys = keyring_provider

    def keyring(self) -> KeyRing:
        return self._keys.current()

    def seal(self, plaintext: bytes, ctx: SealContext) -> bytes:
        ring = self._keys.current()
        dek = AESGCM.generate_key(bit_length=8 * DEK_BYTES)
        nonce_c = os.urandom(NONCE_BYTES)
        body = nonce_c + AESGCM(dek).encrypt(nonce_c, plaintext, ctx.encode())
        return _wrap(ring.kek(ring.active_id), ring.active_id, dek, ctx) + body

    def open(self, blob: bytes, ctx: SealContext) -> bytes:
        """The plaintext, or :class:`SealOpenError` (a :class:`CredentialCorrupt`)."""
        parsed = self._parse(blob, ctx)
        dek = self._unwrap(parsed, ctx)
        nonce_c, sealed = parsed.body[:NONCE_BYTES], parsed.body[NONCE_BYTES:]
        try:
            return AESGCM(dek).decrypt(nonce_c, sealed, ctx.encode())
        except InvalidTag:
            raise self._error(
                ctx, "tampered", "it was altered or belongs to another record"
            ) from None

    def key_id_of(self, blob: bytes) -> str:
        parsed = _parse(blob)
        if parsed is None:
            raise SealOpenError("sealed value is malformed", reason="malformed")
        return parsed.key_id

    def rewrap(self, blob: bytes, ctx: SealContext) -> bytes:
        """The same value with its DEK wrapped under the active key; unchanged if already so."""
        parsed = self._parse(blob, ctx)
        ring = self._keys.current()
        if parsed.key_id == ring.active_id:
            return blob
        dek = self._unwrap(parsed, ctx)
        return _wrap(ring.kek(ring.active_id), ring.active_id, dek, ctx) + parsed.body

    def _parse(self, blob: bytes, ctx: SealContext) -> _Parsed:
        parsed = _parse(blob)
        if parsed is None:
            raise self._error(ctx, "malformed", "the blob is truncated or malformed")
        return parsed

    def _unwrap(self, parsed: _Parsed, ctx: SealContext) -> bytes:
        kek = self._kek(parsed.key_id, ctx)
        try:
            return AESGCM(kek).decrypt(
                parsed.nonce_w, parsed.wrapped_dek, _dek_ad(parsed.key_id, ctx)
            )
        except InvalidTag:
            raise self._error(
                ctx, "tampered", "it was altered or belongs to another record"
            ) from None

    def _kek(self, key_id: str, ctx: SealContext) -> bytes:
        ring = self._keys.current()
        if ring.entry(key_id) is None:
            ring = self._keys.reload_now(key_id)
        entry = ring.entry(key_id)
        if entry is None:
            raise self._error(ctx, "unknown_key", f"key {key_id} is not in the key file")
        if entry.material is None:
            raise self._error(ctx, "retired_key", f"key {key_id} is retired")
        return entry.material

    @staticmethod
    def _error(ctx: SealContext, reason: str, why: str) -> SealOpenError:
        return SealOpenError(f"sealed {ctx.describe()} could not be opened: {why}", reason=reason)
