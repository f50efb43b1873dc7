"""Signed chain heads: HMAC-SHA256 with a key the database never holds.

The signing key is derived with HKDF-SHA256 from a key-encryption key of the key ring
(info ``b"tokenbroker audit signing v1"``); a checkpoint names the key id it was signed with.
Whoever can edit the tables but has no key file cannot produce a valid signature, so a chain
recomputed after an edit no longer matches its signed heads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenbroker.audit.canonical import iso
from tokenbroker.errors import KeyError_
from tokenbroker.vault.envelope import KeyRingProvider

INFO: Final = b"tokenbroker audit signing v1"


@dataclass(frozen=True)
class Head:
    """What a checkpoint signs: a tenant's chain up to ``seq`` ends in ``hash``."""

    tenant_id: str
    seq: int
    hash: str
    at: datetime
    kind: str  # periodic | export | retention

    def message(self) -> bytes:
        doc = {
            "tenant_id": self.tenant_id,
            "seq": self.seq,
            "hash": self.hash,
            "at": iso(self.at),
            "kind": self.kind,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _derive(kek: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(kek)


class Signer:
    def __init__(self, keys: KeyRingProvider) -> None:
        self._keys = keys
        self._derived: dict[str, bytes] = {}

    def _key(self, key_id: str) -> bytes | None:
        if key_id not in self._derived:
            ring = self._keys.current()
            if not ring.can_open(key_id):
                ring = self._keys.reload_now(key_id)
            try:
                self._derived[key_id] = _derive(ring.kek(key_id))
            except KeyError_:
                return None
        return self._derived[key_id]

    @property
    def active_key_id(self) -> str:
        return self._keys.current().active_id

    def sign(self, head: Head) -> tuple[str, str]:
        """``(key_id, signature hex)`` with the active key."""
        key_id = self.active_key_id
        key = self._key(key_id)
        assert key is not None
        return key_id, hmac.new(key, head.message(), hashlib.sha256).hexdigest()

    def check(self, head: Head, key_id: str, signature: str) -> bool | None:
        """True or False; None when the key is not in the ring (retired or unknown)."""
        key = self._key(key_id)
        if key is None:
            return None
        expected = hmac.new(key, head.message(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)
