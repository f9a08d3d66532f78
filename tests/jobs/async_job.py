"""A job under ``asyncio.run`` for the tests of signals and saves under asyncio.

    python async_job.py STATE MODE

MODE ``stop``: ``r.amap`` over ``range(100000)`` with 4 worker tasks, each call awaiting
one turn of the event loop; the body prints ``end <i>`` (flushed) for each result and asks
for the next. It prints ``ready`` first. A test stops it with a signal.

MODE ``after``: a job of 10 items with ``r.amap``, then prints ``same-handler <bool>``
(whether the SIGINT handler after the job is the one before it: asyncio.run's own from
Python 3.11) and ``waiting``, and awaits forever: a test's ctrl+c then meets asyncio.run
as it would without the library.

MODE ``heartbeat``: ``r.amap`` over 6 items with ``NPolicy(2)``, while a heartbeat task
calls ``os.getppid()`` at every turn of the event loop until the job ends: under strace,
its calls show whether the loop ran while a save waited for fsync.

MODE ``asave-amap`` / ``asave-aiterate``: a keyed loop over 3,000 items (``NPolicy(10**9)``)
while another task calls ``await job.asave()`` (8 times); then a second run of the
same job with a call that notes its item, and prints ``called-again <n>``. Under strace's
fsync delay, each save lasts long enough for many items to be counted while it runs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import resumable


async def one_turn(item: int) -> int:
    await asyncio.sleep(0)
    return item


async def stop(state: Path) -> None:
    async with resumable.Resumable(state, policy=resumable.NPolicy(10**9)) as job:
        print("ready", flush=True)
        async for item in job.amap(one_turn, range(100_000), concurrency=4):
            print(f"end {item}", flush=True)


async def after(state: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    async with resumable.Resumable(state) as job:
        async for _ in job.amap(one_turn, range(10)):
            pass
    print(f"same-handler {signal.getsignal(signal.SIGINT) is before}", flush=True)
    print("waiting", flush=True)
    await asyncio.Event().wait()


async def heartbeat(state: Path) -> None:
    running = True

    async def beat() -> None:
        while running:
            os.getppid()  # a system call strace logs, with the thread that made it
            await asyncio.sleep(0)

    beating = asyncio.create_task(beat())
    async with resumable.Resumable(state, policy=resumable.NPolicy(2)) as job:
        async for _ in job.amap(one_turn, range(6), concurrency=2):
            pass
    running = False
    await beating
    print(f"saves {job.saves}", flush=True)


async def asave_beside(state: Path, loop: str) -> None:
    count = 3000
    async with resumable.Resumable(state, policy=resumable.NPolicy(10**9)) as job:
        looping = True

        async def saver() -> None:
            for _ in range(8):  # each lasts some 50 ms under the fsync delay
                if not looping:
                    break
                await job.asave()

        saving = asyncio.create_task(saver())
        if loop == "amap":
            async for _ in job.amap(one_turn, range(count), key=str, concurrency=4):
                await asyncio.sleep(0)
        else:
            async for _ in job.aiterate(range(count), key=str):
                await asyncio.sleep(0)
        looping = False
        await saving
    called: list[int] = []

    async def noted(item: int) -> int:
        called.append(item)
        return item

    async with resumable.Resumable(state) as again:
        async for _ in again.amap(noted, range(count), key=str):
            pass
    print(f"called-again {len(called)}", flush=True)


if __name__ == "__main__":
    modes: dict[str, Callable[[Path], Coroutine[Any, Any, None]]] = {
        "stop": stop,
        "after": after,
        "heartbeat": heartbeat,
        "asave-amap": functools.partial(asave_beside, loop="amap"),
        "asave-aiterate": functools.partial(asave_beside, loop="aiterate"),
    }
    asyncio.run(modes[sys.argv[2]](Path(sys.argv[1])))
