"""r.amap beside the two bare asyncio loops a user writes by hand, and how long the event
loop stands still while a job saves.

Targets from issue 14, measured side by side in one run:

- 10,000 coroutines that each sleep 10 ms, 100 at a time: r.amap's wall time at most
  1.05 x the fastest of ``gather`` with a semaphore and 100 worker tasks pulling from an
  ``asyncio.Queue`` (two ways: ``get_nowait`` until it is empty, and the asyncio
  documentation's ``get``/``task_done``/``join``);
- 100,000 coroutines that return at once: time per item at most 1.25 x that same bare loop.

The stall: a heartbeat task notes the longest gap between its turns of the event loop
during r.amap with a save every 100 items, beside one save's time (``r.save()`` in a
plain with block, in the same run). Saves are made in a thread of their own, so the
longest gap should be far below a save.

Run: ``python benchmarks/bench_amap.py [--quick]``
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _timing import (
    Timer,
    best,
    fmt_ratio,
    fmt_time,
    interleaved,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
    timed,
)

from resumable import NPolicy, Resumable

_STATES = iter(range(10**9))  # a new job for every repeat of every variant
Call = Callable[[int], Awaitable[int]]


async def instant(number: int) -> int:
    return number


async def sleepy(number: int) -> int:
    await asyncio.sleep(0.01)  # a network call's wait, as the benchmark's workload
    return number


def gather_semaphore(fn: Call, size: int, concurrency: int) -> Timer:
    async def loop() -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(number: int) -> int:
            async with limit:
                return await fn(number)

        for _ in await asyncio.gather(*(one(n) for n in range(size))):
            pass

    return lambda: timed(lambda: asyncio.run(loop()))


def queue_workers(fn: Call, size: int, concurrency: int) -> Timer:
    async def loop() -> None:
        todo: asyncio.Queue[int] = asyncio.Queue()
        for number in range(size):
            todo.put_nowait(number)
        results: list[int] = []

        async def worker() -> None:
            while not todo.empty():
                results.append(await fn(todo.get_nowait()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return lambda: timed(lambda: asyncio.run(loop()))


def queue_join(fn: Call, size: int, concurrency: int) -> Timer:
    """The worker pattern of the asyncio documentation: ``await queue.get()``,
    ``task_done()``, ``await queue.join()``, then the workers cancelled."""

    async def loop() -> None:
        todo: asyncio.Queue[int] = asyncio.Queue()
        for number in range(size):
            todo.put_nowait(number)
        results: list[int] = []

        async def worker() -> None:
            while True:
                number = await todo.get()
                results.append(await fn(number))
                todo.task_done()

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await todo.join()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    return lambda: timed(lambda: asyncio.run(loop()))


def resumable_amap(fn: Call, size: int, concurrency: int, directory: Path, ordered: bool) -> Timer:
    async def loop() -> None:
        state = directory / f"amap-{next(_STATES)}.state"
        async with Resumable(state) as r:
            async for _ in r.amap(fn, range(size), concurrency=concurrency, ordered=ordered):
                pass

    return lambda: timed(lambda: asyncio.run(loop()))


def longest_stall(directory: Path, size: int, job: bool) -> float:
    """The longest gap, in seconds, between two turns of a heartbeat task during r.amap
    over `size` calls of 1 ms with NPolicy(100) (`job`), or during the same calls made by
    10 bare worker tasks: what the machine itself stalls."""

    async def loop() -> float:
        longest, running = 0.0, True

        async def beat() -> None:
            nonlocal longest
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now

        async def call(number: int) -> int:
            await asyncio.sleep(0.001)
            return number

        beating = asyncio.create_task(beat())
        if job:
            state = directory / f"stall-{next(_STATES)}.state"
            async with Resumable(state, policy=NPolicy(100)) as r:
                async for _ in r.amap(call, range(size), concurrency=10):
                    pass
        else:
            numbers = iter(range(size))

            async def worker() -> None:
                for number in numbers:
                    await call(number)

            await asyncio.gather(*(worker() for _ in range(10)))
        running = False
        await beating
        return longest

    return asyncio.run(loop())


def one_save(directory: Path, repeats: int) -> float:
    """The best time of one explicit save, in seconds, in a plain with block."""
    with Resumable(directory / "save.state", min_interval=0) as r:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            r.save()
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 2 if args.quick else 5
    print_header("bench_amap: r.amap beside gather + semaphore and a queue of worker tasks")
    cases = [
        ("10,000 calls of 10 ms, 100 at once", sleepy, 2_000 if args.quick else 10_000, 1.05),
        ("100,000 instant calls, 100 at once", instant, 20_000 if args.quick else 100_000, 1.25),
    ]
    rows, targets = [], []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for label, fn, size, limit in cases:
            variants: dict[str, Timer] = {
                "gather + semaphore": gather_semaphore(fn, size, 100),
                "100 workers + Queue": queue_workers(fn, size, 100),
                "100 workers + Queue, get/task_done/join": queue_join(fn, size, 100),
                "r.amap": resumable_amap(fn, size, 100, directory, ordered=True),
                "r.amap(ordered=False)": resumable_amap(fn, size, 100, directory, False),
            }
            samples = interleaved(variants, repeats)
            base = min(best(found) for name, found in samples.items() if "r.amap" not in name)
            for name, found in samples.items():
                rows.append(
                    [label, name, fmt_time(best(found) / size), fmt_ratio(best(found) / base)]
                )
            ratio = best(samples["r.amap"]) / base
            targets.append(
                target_line(
                    f"{label}: r.amap <= {limit} x the faster bare loop",
                    ratio <= limit,
                    fmt_ratio(ratio),
                )
            )
        calls = 1_000 if args.quick else 5_000
        stall = max(longest_stall(directory, calls, job=True) for _ in range(3))
        bare_stall = max(longest_stall(directory, calls, job=False) for _ in range(3))
        save = one_save(directory, 50)
    print(table(["case", "variant", "per item", "x bare"], rows))
    for line in targets:
        print(line)
    print(
        f"longest event-loop stall during r.amap saving every 100 items: {stall * 1e3:.2f} ms; "
        f"during the same calls without a job: {bare_stall * 1e3:.2f} ms; "
        f"one save (r.save(), median): {save * 1e3:.2f} ms"
    )
    print_load_at_end()


if __name__ == "__main__":
    main()
