"""r.map beside a bare ThreadPoolExecutor.map over the same calls.

Two targets from issue 14, measured side by side in one run:

- 1,000 calls that each sleep 20 ms on 16 threads: wall time at most 1.05 x the bare map;
- 100,000 calls that return at once on 8 threads: time per item at most 1.25 x the bare map.

tqdm's ``thread_map`` (progress only, no resume) is in the table too when tqdm is there.

Run: ``python benchmarks/bench_map.py [--quick]``
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

from resumable import Resumable

_STATES = iter(range(10**9))  # a new job for every repeat of every variant


def instant(number: int) -> int:
    return number


def sleepy(number: int) -> int:
    time.sleep(0.02)  # a network call's wait, as the benchmark's workload
    return number


def bare(fn: Callable[[int], int], size: int, workers: int) -> Timer:
    def run() -> int:
        def loop() -> None:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(fn, range(size)):
                    pass

        return timed(loop)

    return run


def resumable_map(
    fn: Callable[[int], int], size: int, workers: int, directory: Path, ordered: bool
) -> Timer:
    def run() -> int:
        state = directory / f"map-{next(_STATES)}.state"

        def loop() -> None:
            with Resumable(state) as r:
                for _ in r.map(fn, range(size), workers=workers, ordered=ordered):
                    pass

        return timed(loop)

    return run


def tqdm_map(fn: Callable[[int], int], size: int, workers: int) -> Timer | None:
    try:
        from tqdm.contrib.concurrent import thread_map
    except ImportError:
        return None

    def run() -> int:
        return timed(lambda: thread_map(fn, range(size), max_workers=workers, disable=True))

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 2 if args.quick else 5
    print_header("bench_map: r.map beside a bare ThreadPoolExecutor.map")
    cases = [
        ("1,000 calls of 20 ms, 16 threads", sleepy, 200 if args.quick else 1_000, 16, 1.05),
        ("100,000 instant calls, 8 threads", instant, 10_000 if args.quick else 100_000, 8, 1.25),
    ]
    rows, targets = [], []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for label, fn, size, workers, limit in cases:
            variants: dict[str, Timer] = {
                "ThreadPoolExecutor.map": bare(fn, size, workers),
                "r.map": resumable_map(fn, size, workers, directory, ordered=True),
                "r.map(ordered=False)": resumable_map(fn, size, workers, directory, False),
            }
            progress_only = tqdm_map(fn, size, workers)
            if progress_only is not None:
                variants["tqdm thread_map"] = progress_only
            samples = interleaved(variants, repeats)
            base = best(samples["ThreadPoolExecutor.map"])
            for name, found in samples.items():
                rows.append(
                    [label, name, fmt_time(best(found) / size), fmt_ratio(best(found) / base)]
                )
            ratio = best(samples["r.map"]) / base
            targets.append(
                target_line(f"{label}: r.map <= {limit} x bare", ratio <= limit, fmt_ratio(ratio))
            )
    print(table(["case", "variant", "per item", "x bare"], rows))
    for line in targets:
        print(line)
    print_load_at_end()


if __name__ == "__main__":
    main()
