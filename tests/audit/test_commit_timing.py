"""Group commit timing: a batch's commit starts early enough to end within its window, so a
commit in flight does not, by itself, push callers into back-pressure (waiting for commits)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tokenbroker.audit.writer import ChainedRecorder
from tokenbroker.records import Event

WINDOW = 0.1
COMMIT_SECONDS = 0.03  # a slow database: each commit takes 30% of the window


class SlowDatabaseRecorder(ChainedRecorder):
    """The real writer loop over a stand-in commit that only takes time."""

    def __init__(self, commit_seconds: float = COMMIT_SECONDS) -> None:
        super().__init__(engine=None, window=WINDOW)  # type: ignore[arg-type]
        self.commit_seconds = commit_seconds
        self.batches: list[int] = []

    async def _write(self, batch: Sequence[Any]) -> None:
        await asyncio.sleep(self.commit_seconds)
        self.batches.append(len(batch))


async def test_callers_do_not_wait_for_commits_the_writer_keeps_up_with() -> None:
    recorder = SlowDatabaseRecorder()
    waited: list[float] = []
    try:
        for i in range(600):  # 1.2 s of steady traffic, one event every 2 ms
            started = time.monotonic()
            await recorder.record(Event(type="proxy.finished", tenant_id="t", detail={"i": i}))
            if len(recorder.batches) >= 3:  # once the writer has seen a few commits
                waited.append(time.monotonic() - started)
            await asyncio.sleep(0.002)
        await recorder.flush()
    finally:
        await recorder.close()
    assert sum(recorder.batches) == 600
    assert waited
    assert max(waited) < COMMIT_SECONDS / 2, "a caller waited for a commit in flight"


async def test_a_database_too_slow_for_the_window_makes_callers_wait() -> None:
    recorder = SlowDatabaseRecorder(commit_seconds=4 * WINDOW)
    waits: list[float] = []
    try:
        for i in range(300):  # 0.6 s of traffic
            started = time.monotonic()
            await recorder.record(Event(type="proxy.finished", tenant_id="t", detail={"i": i}))
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.002)
        await recorder.flush()
    finally:
        await recorder.close()
    assert sum(recorder.batches) == 300
    # Back-pressure: once the oldest uncommitted event is two windows old, callers wait for
    # the commit, so what a crash could lose stays bounded.
    assert max(waits) > WINDOW
