"""Envelope encryption: roundtrip, binding to the row, tamper detection, unknown keys, rewrap."""

from __future__ import annotations

import dataclasses

import pytest
from vault_helpers import SwitchableKeys, make_ring

from tokenbroker.errors import CredentialCorrupt
from tokenbroker.vault.envelope import Envelope, SealContext, SealOpenError
from tokenbroker.vault.keyring import StaticKeyRing

CTX = SealContext("default", "alice", "connection", "c-1", "refresh_token")
CANARY = b"rt-canary-7f3c2a9d"


def test_roundtrip(envelope: Envelope) -> None:
    blob = envelope.seal(CANARY, CTX)
    assert envelope.open(blob, CTX) == CANARY
    assert CANARY not in blob
    assert envelope.key_id_of(blob) == "k-1"


def test_empty_and_large_values(envelope: Envelope) -> None:
    for value in (b"", b"x" * 100_000):
        assert envelope.open(envelope.seal(value, CTX), CTX) == value


def test_same_plaintext_seals_differently(envelope: Envelope) -> None:
    blobs = {envelope.seal(CANARY, CTX) for _ in range(20)}
    assert len(blobs) == 20


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "other"},
        {"user_id": "mallory"},
        {"owner_kind": "connect_session"},
        {"owner_id": "c-2"},
        {"field": "access_token"},
    ],
)
def test_blob_moved_to_another_row_fails(envelope: Envelope, change: dict[str, str]) -> None:
    blob = envelope.seal(CANARY, CTX)
    other = dataclasses.replace(CTX, **change)
    with pytest.raises(CredentialCorrupt) as info:
        envelope.open(blob, other)
    assert info.value.code == "credential_corrupt"
    assert other.owner_id in str(info.value)
    assert other.field in str(info.value)
    assert "canary" not in str(info.value)


def test_context_encoding_is_unambiguous() -> None:
    a = SealContext("ab", "c", "connection", "x", "f")
    b = SealContext("a", "bc", "connection", "x", "f")
    assert a.encode() != b.encode()
    assert (
        SealContext("a|b", "", "k", "i", "f").encode()
        != SealContext("a", "b", "k", "i", "f").encode()
    )


def test_every_flipped_byte_fails(envelope: Envelope) -> None:
    blob = envelope.seal(CANARY, CTX)
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            with pytest.raises(CredentialCorrupt):
                envelope.open(bytes(bad), CTX)


def test_truncated_or_extended_fails(envelope: Envelope) -> None:
    blob = envelope.seal(CANARY, CTX)
    for cut in range(len(blob)):
        with pytest.raises(CredentialCorrupt):
            envelope.open(blob[:cut], CTX)
    with pytest.raises(CredentialCorrupt):
        envelope.open(blob + b"\x00", CTX)
    with pytest.raises(CredentialCorrupt):
        envelope.key_id_of(b"\x02garbage")


def test_unknown_key_fails_after_one_reload() -> None:
    keys = SwitchableKeys(make_ring("k-1"))
    sealed = Envelope(StaticKeyRing(make_ring("k-9"))).seal(CANARY, CTX)
    with pytest.raises(SealOpenError) as info:
        Envelope(keys).open(sealed, CTX)
    assert info.value.reason == "unknown_key"
    assert "k-9" in str(info.value)
    assert keys.reloads == ["k-9"]


def test_unknown_key_found_by_reload() -> None:
    old = make_ring("k-1")
    writer = Envelope(StaticKeyRing(make_ring("k-1", "k-2", active="k-2")))
    reader_keys = SwitchableKeys(old)
    reader_keys.on_reload = writer.keyring()
    blob = writer.seal(CANARY, CTX)
    assert Envelope(reader_keys).open(blob, CTX) == CANARY
    assert reader_keys.reloads == ["k-2"]


def test_same_id_different_material_fails() -> None:
    blob = Envelope(StaticKeyRing(make_ring("k-1"))).seal(CANARY, CTX)
    with pytest.raises(SealOpenError) as info:
        Envelope(StaticKeyRing(make_ring("k-1"))).open(blob, CTX)
    assert info.value.reason == "tampered"


def test_rewrap_moves_only_the_dek() -> None:
    keys = SwitchableKeys(make_ring("k-1"))
    envelope = Envelope(keys)
    blob = envelope.seal(CANARY, CTX)
    assert envelope.rewrap(blob, CTX) is blob  # already on the active key: no-op
    k1 = keys.ring.entry("k-1")
    k2 = make_ring("k-2").entry("k-2")
    assert k1 is not None
    assert k2 is not None
    keys.ring = dataclasses.replace(
        keys.ring,
        active_id="k-2",
        entries=(dataclasses.replace(k1, state="decrypt_only"), k2),
    )
    moved = envelope.rewrap(blob, CTX)
    assert envelope.key_id_of(moved) == "k-2"
    assert moved[-(12 + len(CANARY) + 16) :] == blob[-(12 + len(CANARY) + 16) :]
    assert envelope.open(moved, CTX) == CANARY
    with pytest.raises(CredentialCorrupt):
        envelope.rewrap(blob, dataclasses.replace(CTX, user_id="mallory"))
