"""Key-encryption keys (KEKs) on disk: load the ring, edit the key file, reload it live.

The document format and the ring itself are in :mod:`tokenbroker.vault.keydoc`. Every edit
writes a temporary file (mode 0600) beside the key file, fsyncs it and renames it into place,
so a reader sees the old file or the new one, never half of one. Replicas that share the key
file pick up ``keys add`` and ``keys promote`` through :class:`ReloadingKeyRing`.

Rotation, step by step: ``keys add`` (every replica learns the new key, none seals with it),
``keys promote`` (new values are sealed with it), ``keys rewrap`` (old values move to it),
``keys retire`` of the old key (refused while any value still uses it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from tokenbroker.errors import KeyError_
from tokenbroker.vault.keydoc import (
    ENV_VAR,
    KEY_BYTES,
    KeyEntry,
    KeyRing,
    KeyState,
    parse_env_value,
    promoted,
    retired,
    ring_from_document,
    ring_to_document,
    with_new_key,
)

__all__ = [
    "ENV_VAR",
    "KeyEntry",
    "KeyRing",
    "KeyState",
    "ReloadingKeyRing",
    "StaticKeyRing",
    "add_key",
    "create_key_file",
    "load_keyring",
    "new_key_id",
    "promote_key",
    "read_key_file",
    "retire_key",
]

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS: Final = 2.0
UNKNOWN_KEY_RELOAD_SECONDS: Final = 60.0


def read_key_file(path: Path) -> KeyRing:
    """Read and check the key file: it must exist, be 0600 or stricter, and be valid."""
    try:
        fd = os.open(path, os.O_RDONLY)  # symlinks followed (Kubernetes secret volumes)
    except FileNotFoundError:
        raise KeyError_(
            f"key file {path} not found: run `tokenbroker init` or set {ENV_VAR}"
        ) from None
    except OSError as exc:
        raise KeyError_(f"key file {path} cannot be read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyError_(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & ~0o600:
            raise KeyError_(
                f"key file {path} has mode {mode:04o}, more permissive than 0600: "
                f"run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    except OSError as exc:
        raise KeyError_(f"key file {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyError_(f"key file {path} is not valid JSON") from None
    return ring_from_document(doc, f"key file {path}")


def load_keyring(path: Path | None, env_value: str | None) -> KeyRing:
    """The key ring from ``env_value`` (``TOKENBROKER_KEYS``) if given, else from ``path``."""
    if env_value:
        return parse_env_value(env_value)
    if path is None:
        raise KeyError_(f"no keys configured: run `tokenbroker init` or set {ENV_VAR}")
    return read_key_file(path)


def new_key_id(now: datetime, taken: tuple[str, ...] = ()) -> str:
    """``k-YYYYMMDD-xxxx``: the date helps operators, the random suffix keeps ids unique."""
    while True:
        key_id = f"k-{now:%Y%m%d}-{secrets.token_hex(2)}"
        if key_id not in taken:
            return key_id


def _write_atomically(path: Path, ring: KeyRing, *, exclusive: bool) -> None:
    """Temp file (0600) beside the target, fsync, then link (create) or rename (edit)."""
    if not exclusive:
        path = path.resolve()  # edit the file a symlink points to, not the link
    data = (json.dumps(ring_to_document(ring), indent=2) + "\n").encode("utf-8")
    try:
        _write(path, data, exclusive=exclusive)
    except OSError as exc:
        raise KeyError_(f"cannot write key file {path}: {exc.strerror}") from None


def _write(path: Path, data: bytes, *, exclusive: bool) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # fails if `path` exists: never overwrite a key file
            except FileExistsError:
                raise KeyError_(
                    f"key file {path} already exists: refusing to overwrite it"
                ) from None
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def create_key_file(path: Path, *, now: datetime | None = None) -> KeyRing:
    """Write a new key file (mode 0600) with one active key; refuses if ``path`` exists."""
    if path.exists() or path.is_symlink():
        raise KeyError_(f"key file {path} already exists: refusing to overwrite it")
    at = _now(now)
    key_id = new_key_id(at)
    entry = KeyEntry(key_id, "active", at.isoformat(), secrets.token_bytes(KEY_BYTES))
    ring = KeyRing(active_id=key_id, entries=(entry,))
    _write_atomically(path, ring, exclusive=True)
    return ring


def add_key(path: Path, *, now: datetime | None = None) -> str:
    """Add a new ``decrypt_only`` key to the key file and return its id."""
    ring = read_key_file(path)
    at = _now(now)
    key_id = new_key_id(at, ring.ids)
    _write_atomically(
        path,
        with_new_key(ring, key_id, secrets.token_bytes(KEY_BYTES), at.isoformat()),
        exclusive=False,
    )
    return key_id


def promote_key(path: Path, key_id: str) -> None:
    """Make ``key_id`` active; the previous active key becomes ``decrypt_only``."""
    ring = read_key_file(path)
    new = promoted(ring, key_id)
    if new != ring:
        _write_atomically(path, new, exclusive=False)


def retire_key(path: Path, key_id: str, *, in_use: int) -> None:
    """Retire ``key_id`` and drop its material; refused for the active key or while in use."""
    ring = read_key_file(path)
    new = retired(ring, key_id, in_use=in_use)
    if new != ring:
        _write_atomically(path, new, exclusive=False)


class StaticKeyRing:
    """A key ring that never changes (keys from ``TOKENBROKER_KEYS``, tests)."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def current(self) -> KeyRing:
        return self._ring

    def reload_now(self, key_id: str | None = None) -> KeyRing:
        return self._ring


class ReloadingKeyRing:
    """The key file's ring, re-read when the file changes (checked at most every 2 s).

    A file that becomes invalid keeps the last good ring in use and logs a warning; the
    constructor, however, raises :class:`KeyError_` so a bad file stops the start.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_every: float = RELOAD_CHECK_SECONDS,
        unknown_key_every: float = UNKNOWN_KEY_RELOAD_SECONDS,
    ) -> None:
        self._path = path
        self._clock = clock
        self._check_every = check_every
        self._unknown_key_every = unknown_key_every
        self._signature = self._stat()
        self._ring = read_key_file(path)
        self._checked_at = clock()
        self._unknown_tries: dict[str, float] = {}

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def current(self) -> KeyRing:
        now = self._clock()
        if now - self._checked_at >= self._check_every:
            self._checked_at = now
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                self._reload()
        return self._ring

    def reload_now(self, key_id: str | None = None) -> KeyRing:
        """Re-read the file now; for an unknown ``key_id``, at most once a minute per id."""
        now = self._clock()
        if key_id is not None:
            last = self._unknown_tries.get(key_id)
            if last is not None and now - last < self._unknown_key_every:
                return self._ring
            self._unknown_tries[key_id] = now
        self._checked_at = now
        self._signature = self._stat()
        self._reload()
        return self._ring

    def _reload(self) -> None:
        try:
            ring = read_key_file(self._path)
        except KeyError_ as exc:
            log.warning("key file not reloaded, keeping the previous keys: %s", exc.message)
            return
        if ring.active_id != self._ring.active_id or ring.ids != self._ring.ids:
            log.info("key file reloaded: %r", ring)
        self._ring = ring
