"""Saves under asyncio: made in a thread of the job's own, so that the event loop runs on
while a save waits for fsync; and `to_the_end`, for what a cancellation must not cut.

A save started here is always finished, even when the task that waits for it is
cancelled meanwhile: the state file is never left to a write nobody waits for, and the
exit (which saves again, then releases the lock) comes after it. The cancellation is
raised once the save is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


async def to_the_end(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` to its end even when the task that waits is cancelled meanwhile
    (once or many times); then raise the cancellation. For what must not stop half way:
    a save, and the exit that saves and releases the job."""
    inner = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(inner)
        except asyncio.CancelledError:
            if inner.done() and inner.cancelled():
                raise  # cancelled itself (the event loop is closing down): nothing to wait for
            if inner.done():
                raise  # it raised CancelledError of its own
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


class SaveThread:
    """One thread for one job's saves, started at the first and stopped at the exit.

    Its own, not the event loop's default executor: there the program's own blocking
    calls (``asyncio.to_thread``) could keep a save waiting behind them.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[[], T]) -> T:
        """`function()` in the save thread; waits for it to end even when cancelled."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="resumable-save")
        return await to_the_end(
            asyncio.get_running_loop().run_in_executor(self._executor, function)
        )

    def close(self) -> None:
        """Stop the thread (after the save in it, if any)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
