"""Identifiers and single-use random values."""

from __future__ import annotations

import hashlib
import secrets


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier such as ``conn_3kTq...`` (128 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def new_secret_value(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """SHA-256 hex of a high-entropy random value (state, binding, flow id) for lookup."""
    return hashlib.sha256(value.encode()).hexdigest()
