"""The key file on disk: loading, refusals, atomic 0600 edits, live reloading."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenbroker.errors import KeyError_
from tokenbroker.vault.keyring import (
    ReloadingKeyRing,
    add_key,
    create_key_file,
    load_keyring,
    promote_key,
    read_key_file,
    retire_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    create_key_file(path, now=datetime(2026, 11, 29, tzinfo=UTC))
    return path


def test_create_writes_0600_with_one_active_key(key_file: Path) -> None:
    assert _mode(key_file) == 0o600
    ring = load_keyring(key_file, None)
    assert ring.active_id.startswith("k-20261129-")
    assert len(ring.kek(ring.active_id)) == 32
    assert [p.name for p in key_file.parent.iterdir()] == ["keys.json"]  # no temp file left


def test_create_refuses_to_overwrite(key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(KeyError_, match="already exists"):
        create_key_file(key_file)
    assert key_file.read_bytes() == before


def test_env_value_wins_over_file(key_file: Path) -> None:
    env = base64.b64encode(b"\x01" * 32).decode()
    ring = load_keyring(key_file, env)
    assert ring.active_id == "env-1"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(KeyError_) as info:
        load_keyring(path, None)
    assert str(info.value) == (
        f"key file {path} not found: run `tokenbroker init` or set TOKENBROKER_KEYS"
    )
    with pytest.raises(KeyError_, match="no keys configured"):
        load_keyring(None, None)


def test_mode_0644_refused(key_file: Path) -> None:
    key_file.chmod(0o644)
    with pytest.raises(KeyError_, match=r"mode 0644.*chmod 600"):
        load_keyring(key_file, None)
    key_file.chmod(0o400)
    assert load_keyring(key_file, None).active_id


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(key_file: Path) -> None:
    key_file.chmod(0o000)
    with pytest.raises(KeyError_, match="cannot be read"):
        load_keyring(key_file, None)


def test_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(KeyError_, match="not valid JSON"):
        load_keyring(path, None)


def test_errors_never_show_material(key_file: Path) -> None:
    doc = json.loads(key_file.read_text())
    material = doc["keys"][0]["material"]
    doc["keys"][0]["material"] = material[:-4]
    key_file.write_text(json.dumps(doc))
    with pytest.raises(KeyError_) as info:
        load_keyring(key_file, None)
    assert material[:8] not in str(info.value)


def test_add_promote_retire_keep_0600(key_file: Path) -> None:
    first = read_key_file(key_file).active_id
    second = add_key(key_file)
    assert _mode(key_file) == 0o600
    ring = read_key_file(key_file)
    assert ring.active_id == first
    assert ring.entry(second).state == "decrypt_only"  # type: ignore[union-attr]

    promote_key(key_file, second)
    assert _mode(key_file) == 0o600
    ring = read_key_file(key_file)
    assert ring.active_id == second
    assert ring.entry(first).state == "decrypt_only"  # type: ignore[union-attr]

    with pytest.raises(KeyError_, match="still seals 1 value"):
        retire_key(key_file, first, in_use=1)
    with pytest.raises(KeyError_, match="is the active key"):
        retire_key(key_file, second, in_use=0)
    assert read_key_file(key_file).can_open(first)

    retire_key(key_file, first, in_use=0)
    assert _mode(key_file) == 0o600
    ring = read_key_file(key_file)
    assert ring.entry(first).state == "retired"  # type: ignore[union-attr]
    assert "material" not in json.loads(key_file.read_text())["keys"][0]
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["keys.json"]


def test_edits_refuse_a_loose_file(key_file: Path) -> None:
    key_file.chmod(0o644)
    with pytest.raises(KeyError_, match="mode 0644"):
        add_key(key_file)


def test_reloading_picks_up_a_promoted_key(key_file: Path) -> None:
    clock = FakeClock()
    keys = ReloadingKeyRing(key_file, clock=clock)
    first = keys.current().active_id
    second = add_key(key_file)
    promote_key(key_file, second)
    clock.now += 1.0
    assert keys.current().active_id == first  # checked at most every 2 s
    clock.now += 1.5
    assert keys.current().active_id == second
    assert keys.current().can_open(first)


def test_reloading_keeps_last_good_ring_on_a_broken_file(key_file: Path) -> None:
    clock = FakeClock()
    keys = ReloadingKeyRing(key_file, clock=clock)
    good = keys.current()
    key_file.write_text("{broken")
    clock.now += 3
    assert keys.current() == good


def test_reload_now_at_most_once_a_minute_per_unknown_id(key_file: Path) -> None:
    clock = FakeClock()
    keys = ReloadingKeyRing(key_file, clock=clock)
    second = add_key(key_file)
    assert keys.current().entry(second) is None  # not yet: checked every 2 s
    first_try = keys.reload_now("k-unknown")
    assert first_try.entry(second) is not None
    third = add_key(key_file)
    clock.now += 30
    assert keys.reload_now("k-unknown").entry(third) is None  # rate-limited
    assert keys.reload_now("k-other").entry(third) is not None  # another id: allowed
    clock.now += 31
    assert keys.reload_now("k-unknown").entry(third) is not None


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="not a regular file"):
        load_keyring(tmp_path, None)


def test_create_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="cannot write key file"):
        create_key_file(tmp_path / "missing" / "keys.json")


def test_symlinked_key_file_is_followed_and_edited_in_place(key_file: Path) -> None:
    link = key_file.parent / "link.json"
    link.symlink_to(key_file)
    first = load_keyring(link, None).active_id
    second = add_key(link)
    assert link.is_symlink()
    assert read_key_file(key_file).entry(second) is not None
    assert read_key_file(link).active_id == first
