"""The key ring as a value: validation, the document form, pure edits, redaction."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from vault_helpers import make_ring

from tokenbroker.errors import KeyError_
from tokenbroker.vault.keydoc import (
    KeyRing,
    parse_env_value,
    promoted,
    retired,
    ring_from_document,
    ring_to_document,
    with_new_key,
)


def _doc(**overrides: object) -> dict[str, object]:
    key = {
        "id": "k-1",
        "material": base64.b64encode(secrets.token_bytes(32)).decode(),
        "created_at": "2026-01-01T00:00:00+00:00",
        "state": "active",
    }
    doc: dict[str, object] = {"version": 1, "active": "k-1", "keys": [key]}
    doc.update(overrides)
    return doc


def test_document_roundtrip() -> None:
    ring = make_ring("k-1", "k-2")
    assert ring_from_document(ring_to_document(ring), "test") == ring


def test_kek_unknown_id_names_only_the_id() -> None:
    ring = make_ring("k-1")
    with pytest.raises(KeyError_, match="key k-9 is not in the key file"):
        ring.kek("k-9")


def test_repr_hides_material() -> None:
    ring = make_ring("k-1", "k-2")
    for entry in ring.entries:
        assert entry.material is not None
        for shown in (repr(ring), str(ring), repr(entry), repr(ring.entries)):
            assert entry.material.hex() not in shown
            assert base64.b64encode(entry.material).decode() not in shown
            assert repr(entry.material) not in shown


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 2}, "unsupported version"),
        ({"keys": []}, "non-empty list"),
        ({"active": None}, "no active key"),
        ({"active": "k-2"}, "no active key"),
    ],
)
def test_bad_documents(doc: dict[str, object], message: str) -> None:
    with pytest.raises(KeyError_, match=message):
        ring_from_document(_doc(**doc), "key file /x")


def test_wrong_key_length() -> None:
    doc = _doc()
    doc["keys"][0]["material"] = base64.b64encode(b"short").decode()  # type: ignore[index]
    with pytest.raises(KeyError_, match="32 bytes, got 5") as info:
        ring_from_document(doc, "key file /x")
    assert "c2hvcnQ" not in str(info.value)


def test_bad_base64() -> None:
    doc = _doc()
    doc["keys"][0]["material"] = "not base64!!"  # type: ignore[index]
    with pytest.raises(KeyError_, match="not valid base64") as info:
        ring_from_document(doc, "key file /x")
    assert "not base64!!" not in str(info.value)


def test_duplicate_ids() -> None:
    doc = _doc()
    key = dict(doc["keys"][0])  # type: ignore[index]
    key["state"] = "decrypt_only"
    doc["keys"].append(key)  # type: ignore[attr-defined]
    with pytest.raises(KeyError_, match="more than once"):
        ring_from_document(doc, "key file /x")


def test_two_active_keys_refused() -> None:
    doc = _doc()
    key = dict(doc["keys"][0])  # type: ignore[index]
    key["id"] = "k-2"
    doc["keys"].append(key)  # type: ignore[attr-defined]
    with pytest.raises(KeyError_, match="exactly one key"):
        ring_from_document(doc, "key file /x")


def test_env_single_key() -> None:
    material = secrets.token_bytes(32)
    ring = parse_env_value(base64.b64encode(material).decode() + "\n")
    assert ring.active_id == "env-1"
    assert ring.kek("env-1") == material


def test_env_document() -> None:
    ring = parse_env_value(json.dumps(_doc()))
    assert ring.active_id == "k-1"
    with pytest.raises(KeyError_, match="TOKENBROKER_KEYS: not valid JSON"):
        parse_env_value("{nope")
    with pytest.raises(KeyError_, match="TOKENBROKER_KEYS: material must be 32 bytes"):
        parse_env_value(base64.b64encode(b"x" * 16).decode())


def test_add_promote_retire() -> None:
    ring = make_ring("k-1")
    added = with_new_key(ring, "k-2", secrets.token_bytes(32), "now")
    assert added.active_id == "k-1"
    assert added.entry("k-2").state == "decrypt_only"  # type: ignore[union-attr]
    promo = promoted(added, "k-2")
    assert promo.active_id == "k-2"
    assert promo.entry("k-1").state == "decrypt_only"  # type: ignore[union-attr]
    with pytest.raises(KeyError_, match="still seals 3 value"):
        retired(promo, "k-1", in_use=3)
    with pytest.raises(KeyError_, match="is the active key"):
        retired(promo, "k-2", in_use=0)
    done = retired(promo, "k-1", in_use=0)
    assert done.entry("k-1").state == "retired"  # type: ignore[union-attr]
    assert done.entry("k-1").material is None  # type: ignore[union-attr]
    assert "material" not in ring_to_document(done)["keys"][0]
    assert not done.can_open("k-1")
    with pytest.raises(KeyError_, match="k-1 is retired"):
        done.kek("k-1")
    with pytest.raises(KeyError_, match="cannot become active"):
        promoted(done, "k-1")
    assert isinstance(ring_from_document(ring_to_document(done), "t"), KeyRing)
