"""One running task per key: callers asking for a key while its task runs share that task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

_K = TypeVar("_K")
_T = TypeVar("_T")


class SharedTasks(Generic[_K, _T]):
    """A task per key, forgotten when it ends; its exception is marked retrieved then (every
    caller that awaited it re-raises it, and a task nobody awaits any more logs nothing)."""

    def __init__(self) -> None:
        self._tasks: dict[_K, asyncio.Task[_T]] = {}

    def join(
        self,
        key: _K,
        start: Callable[[], Coroutine[Any, Any, _T]],
        *,
        on_done: Callable[[asyncio.Task[_T]], object] | None = None,
    ) -> asyncio.Task[_T]:
        """The key's running task, or a new one running ``start()`` (``on_done`` is called
        when a new one ends)."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(start())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
            if on_done is not None:
                task.add_done_callback(on_done)
        return task

    def _forget(self, key: _K, task: asyncio.Task[_T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()
