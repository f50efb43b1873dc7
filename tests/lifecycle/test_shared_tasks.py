"""One running task per key, shared by the callers that ask while it runs."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tokenbroker.lifecycle.shared_tasks import SharedTasks


async def test_callers_of_one_key_share_its_task_until_it_ends() -> None:
    tasks: SharedTasks[str, int] = SharedTasks()
    started: list[str] = []
    release = asyncio.Event()

    async def work(key: str) -> int:
        started.append(key)
        await release.wait()
        return len(started)

    first = tasks.join("a", lambda: work("a"))
    assert tasks.join("a", lambda: work("a")) is first
    other = tasks.join("b", lambda: work("b"))
    assert other is not first
    await asyncio.sleep(0)  # both started
    release.set()
    assert await first == 2
    await other
    again = tasks.join("a", lambda: work("a"))
    assert again is not first
    assert await again == 3
    assert started == ["a", "b", "a"]


async def test_a_failed_task_nobody_awaits_is_forgotten_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks: SharedTasks[str, None] = SharedTasks()
    ended: list[bool] = []

    async def fail() -> None:
        raise RuntimeError("boom")

    task = tasks.join("a", fail, on_done=lambda done: ended.append(done.done()))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done()
    assert ended == [True]
    assert tasks.join("a", fail) is not task
    del task
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
    assert "never retrieved" not in caplog.text
