"""Time as a seam: protocol and policy code take ``now``; services take a :class:`Clock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time(), UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
