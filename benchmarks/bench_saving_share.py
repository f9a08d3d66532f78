"""The share of a loop's time spent saving, under the default policy and others.

The timing wrappers are put around ``FileStore.save`` (the durable write) and around
``Checkpoint.save`` (the whole save: snapshot, serialisation, write, book-keeping) in this
process only; the library's code is not changed. The target is on ``FileStore.save``; the
whole save is shown beside it.

Run: ``python benchmarks/bench_saving_share.py [--quick]``
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _timing import (
    fmt_time,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
)

from resumable import NPolicy, Policy, Resumable
from resumable._checkpoint import Checkpoint
from resumable._store.file import FileStore

LIMIT = 0.01  # under 1 % of the loop's time spent in FileStore.save


@dataclass
class Stopwatch:
    """Time spent in, and calls of, one wrapped function."""

    calls: int = 0
    ns: int = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                self.ns += time.perf_counter_ns() - start
                self.calls += 1

        return wrapper


@dataclass
class Scenario:
    """One loop, run several times; what each run spent saving."""

    name: str
    n: int
    policy: Callable[[], Policy | None]
    totals: list[int] = field(default_factory=list)
    store: list[Stopwatch] = field(default_factory=list)
    whole: list[Stopwatch] = field(default_factory=list)

    def run(self, state: Path) -> None:
        for path in (state, state.with_name(state.name + ".bak")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        store, whole = Stopwatch(), Stopwatch()
        original_store, original_whole = FileStore.save, Checkpoint.save
        FileStore.save = store.wrap(original_store)  # type: ignore[method-assign]
        Checkpoint.save = whole.wrap(original_whole)  # type: ignore[method-assign]
        try:
            start = time.perf_counter_ns()
            with Resumable(state, policy=self.policy()) as r:
                for _ in r.iterate(range(self.n)):
                    pass
            total = time.perf_counter_ns() - start
        finally:
            FileStore.save = original_store  # type: ignore[method-assign]
            Checkpoint.save = original_whole  # type: ignore[method-assign]
        self.totals.append(total)
        self.store.append(store)
        self.whole.append(whole)

    def median_run(self) -> int:
        """The index of the run with the median share of time in FileStore.save."""
        shares = [watch.ns / total for watch, total in zip(self.store, self.totals, strict=True)]
        middle = statistics.median_low(shares)
        return shares.index(middle)


def main() -> None:
    args = parse_args(__doc__ or "")
    scale = 10 if args.quick else 1
    repeats = 2 if args.quick else 5
    print_header("bench_saving_share: the share of the loop's time spent saving")
    target = Scenario("default policy", 10_000_000 // scale, lambda: None)
    scenarios = [
        target,
        # Long enough for the default policy to save during the loop, not only at the end.
        Scenario("default policy, long loop", 100_000_000 // scale, lambda: None),
        Scenario("NPolicy(100_000)", 10_000_000 // scale, lambda: NPolicy(100_000)),
        Scenario("NPolicy(1_000)", 1_000_000 // scale, lambda: NPolicy(1_000)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):  # interleaved, rotating
            start = repeat % len(scenarios)
            for index, scenario in enumerate(scenarios[start:] + scenarios[:start]):
                scenario.run(Path(tmp) / f"job-{index}.state")

    rows: list[list[object]] = []
    for scenario in scenarios:
        pick = scenario.median_run()
        total, store, whole = scenario.totals[pick], scenario.store[pick], scenario.whole[pick]
        rows.append(
            [
                scenario.name,
                f"range({scenario.n:,})",
                fmt_time(total),
                f"{store.calls} ({store.calls - 1} + completion)",
                fmt_time(store.ns / max(store.calls, 1)),
                f"{100 * store.ns / total:.2f} %",
                f"{100 * whole.ns / total:.2f} %",
            ]
        )
    print(f"### Empty-body loops, the median run (by FileStore.save share) of {repeats}")
    print()
    print(
        table(
            [
                "policy",
                "input",
                "total (with block)",
                "saves",
                "per save",
                "FileStore.save share",
                "whole-save share",
            ],
            rows,
        )
    )
    print()
    all_shares = ", ".join(
        f"{100 * watch.ns / total:.2f} %"
        for watch, total in zip(target.store, target.totals, strict=True)
    )
    print(f"{target.name}, every run's FileStore.save share: {all_shares}")
    print()
    print_load_at_end()
    pick = target.median_run()
    share = target.store[pick].ns / target.totals[pick]
    print(
        target_line(
            "5",
            share < LIMIT,
            f"{100 * share:.2f} % of {fmt_time(target.totals[pick])} in "
            f"{target.store[pick].calls} FileStore.save call(s), default policy over "
            f"range({target.n:,}), median of {repeats} runs; limit 1 %",
        )
    )


if __name__ == "__main__":
    main()
