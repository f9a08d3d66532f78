"""The readers that take items ahead of the loop body, and the check that refuses them.

An item is done when the loop asks for the next one, so whatever stands between
``r.iterate()`` and the body must not ask early. Some readers do:

- ``Executor.map`` (concurrent.futures; tqdm's ``thread_map``) reads the whole input
  before the first result: its code is the frame that asks the loop for items.
- ``ProcessPoolExecutor.map`` reads it chunk by chunk ahead of the results: its
  ``_get_chunks`` asks.
- multiprocessing's ``Pool.map`` and ``starmap`` make a list of it first: ``_map_async``
  asks.
- ``Pool.imap`` and prefetching wrappers read it in another thread: the thread asking is
  not the one that called ``iterate``.
- ``itertools.batched`` and hand-written batchers take the next n items before the body
  runs: not caught, as the asking frame is C code or the caller's own.

The library looks at its caller only when a chunk ends (at most every 1024 items), never
per item: ``sys._getframe(1)`` there is the frame that asked for the next item.

The correct way to hand items out n at a time is ``iterate(items, batch=n)``: lists of up
to n items, done together when the loop asks for the next list.
"""

from __future__ import annotations

import sys
from types import CodeType, FrameType
from typing import Any

from resumable._errors import UsageError

_BATCH_PATTERN = "for batch in r.iterate(items, batch=16): results = list(pool.map(fetch, batch))"


def readers_ahead() -> dict[CodeType, str]:
    """The code of the standard library's readers that take their whole input (or a
    chunk of it) before handing out results, by the name a user knows them by.

    Only modules already imported are looked at: a pool that is not imported cannot be
    the caller.
    """
    found: dict[CodeType, str] = {}
    futures = sys.modules.get("concurrent.futures._base")
    if futures is not None:
        _add_code(found, getattr(futures.Executor, "map", None), "concurrent.futures' Executor.map")
    process = sys.modules.get("concurrent.futures.process")
    if process is not None:
        _add_code(found, getattr(process, "_get_chunks", None), "ProcessPoolExecutor.map")
    pool = sys.modules.get("multiprocessing.pool")
    if pool is not None:
        for name in ("_map_async", "_get_tasks", "_guarded_task_generation"):
            _add_code(found, getattr(pool.Pool, name, None), "multiprocessing's Pool.map")
    return found


def _add_code(found: dict[CodeType, str], function: Any, name: str) -> None:
    """The code of `function` and of the comprehensions inside it (their own frames before
    Python 3.12)."""
    code = getattr(function, "__code__", None)
    pending = [code] if isinstance(code, CodeType) else []
    while pending:
        code = pending.pop()
        found[code] = name
        pending.extend(const for const in code.co_consts if isinstance(const, CodeType))


def read_ahead_error(caller: FrameType | None, readers: dict[CodeType, str]) -> UsageError:
    """The error for a reader found taking the items of ``r.iterate()`` ahead of the body."""
    name = readers.get(caller.f_code) if caller is not None else None
    if name is None:
        return UsageError(
            "the items of r.iterate() were asked for from another thread than the one that "
            "called iterate(): a reader there (multiprocessing's Pool.imap, a prefetching "
            "wrapper) takes items ahead of your loop body, and they would count as done "
            "before they ran. Loop over r.iterate() in the thread that called it; to run "
            f"items in a pool, hand it one batch at a time: `{_BATCH_PATTERN}`."
        )
    return UsageError(
        f"r.iterate() was handed to {name}, which reads its input ahead of the results: "
        "every item it read would count as done before your loop body ran, and a crash "
        "would lose them. Hand the pool one batch at a time, which is done when the loop "
        f"asks for the next: `{_BATCH_PATTERN}`."
    )
