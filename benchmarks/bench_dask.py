"""A sharded resumable job on a 2-worker Dask cluster beside bare ``client.map``.

Side by side in one run, on one ``LocalCluster(n_workers=2, processes=True,
threads_per_worker=1)``, over the same items:

- ``client.map`` per item: one Dask task per item, no resuming (what Dask users write first);
- ``client.map`` per shard: the same split as `shards`, each task a plain for-loop over its
  shard, no resuming: the cost of Dask alone;
- ``resumable.dask.run``: each task a ``Resumable`` over its shard (default policy,
  ``signals=()``), its state in a local folder: what resuming adds.

Two workloads: items that take 0.5 ms each (a short request, as ``time.sleep``), and
items that take no time (the overhead alone; without the task per item, which would take
minutes).

Run: ``python benchmarks/bench_dask.py [--quick]``
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from collections.abc import Callable
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
    timed,
)
from distributed import Client, LocalCluster, wait

import resumable.dask
from resumable import Resumable, Shard, shards

SHARDS = 16
_JOBS = itertools.count()  # a new job folder for every repeat


def instant(item: int) -> int:
    return item


def short_request(item: int) -> int:
    time.sleep(0.0005)  # the workload: a short request's wait
    return item


def per_item(client: Client, fn: Callable[[int], int], items: list[int]) -> Timer:
    def run() -> int:
        def job() -> None:
            futures = client.map(fn, items, pure=False)
            wait(futures)  # type: ignore[no-untyped-call]

        return timed(job)

    return run


def plain_shard(fn: Callable[[int], int]) -> Callable[[Shard[int]], int]:
    def work(part: Shard[int]) -> int:
        for item in part.items:
            fn(item)
        return len(part.items)

    return work


def resumable_shard(fn: Callable[[int], int]) -> Callable[[Shard[int]], int]:
    def work(part: Shard[int]) -> int:
        with Resumable(part.state, signals=()) as r:
            for item in r.iterate(part.items):
                fn(item)
        return len(part.items)

    return work


def per_shard(client: Client, fn: Callable[[int], int], items: list[int], base: Path) -> Timer:
    def run() -> int:
        parts = shards(items, SHARDS, job=base / f"plain-{next(_JOBS)}")
        work = plain_shard(fn)
        return timed(lambda: client.gather(client.map(work, parts, pure=False)))  # type: ignore[no-untyped-call]

    return run


def sharded(client: Client, fn: Callable[[int], int], items: list[int], base: Path) -> Timer:
    def run() -> int:
        parts = shards(items, SHARDS, job=base / f"job-{next(_JOBS)}")
        work = resumable_shard(fn)
        return timed(lambda: resumable.dask.run(work, parts, client=client))

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 2 if args.quick else 3
    print_header("bench_dask: a sharded resumable job beside bare client.map, 2 workers")
    cases = [
        ("items of 0.5 ms", short_request, 1_600 if args.quick else 8_000, True),
        ("instant items", instant, 8_000 if args.quick else 80_000, False),
    ]
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,  # the workers' goodbyes at the end
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        for label, fn, size, task_per_item in cases:
            items = list(range(size))
            variants: dict[str, Timer] = {
                "client.map per shard": per_shard(client, fn, items, Path(tmp)),
                "resumable.dask.run": sharded(client, fn, items, Path(tmp)),
            }
            if task_per_item:
                variants["client.map per item"] = per_item(client, fn, items)
            samples = interleaved(variants, repeats)
            base = best(samples["client.map per shard"])
            for name, found in samples.items():
                rows.append(
                    [
                        f"{label} x {size:,}",
                        name,
                        fmt_time(best(found)),
                        fmt_time(best(found) / size),
                        fmt_ratio(best(found) / base),
                    ]
                )
    print(table(["case", "variant", "wall", "per item", "x per shard"], rows))
    print(f"{SHARDS} shards; best of {repeats} interleaved rounds")
    print_load_at_end()


if __name__ == "__main__":
    main()
