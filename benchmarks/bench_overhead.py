"""Per-item overhead of ``r.iterate(items)``, against plain loops, tqdm and other packages.

The overhead of a variant is its time per item minus that of a plain ``for`` loop over the
same input, all measured in one run with interleaved best-of-N repeats. resumable runs
with policies under which no save falls due during the loop; the run's fixed costs (enter,
the completion save with its fsyncs, exit) stay inside the timed region and are also
reported on their own.

Run: ``python benchmarks/bench_overhead.py [--quick]``
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from _timing import (
    Timer,
    best,
    fmt_ratio,
    fmt_time,
    interleaved,
    loopz_loop,
    median,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
    timed,
    verdict,
)
from tqdm import tqdm

from resumable import NPolicy, Policy, Resumable, TimePolicy

T = TypeVar("T")
Loop = Callable[[Iterable[Any]], None]

TQDM_LIMIT = 0.25  # resumable's overhead at most this times tqdm's
CHECKPOINT_LIMIT = 0.5  # and at most this times the hand-written checkpoint loop's
SAVE_EVERY = 1000  # items between saves for the packages driven to save by count

POLICIES: dict[str, Callable[[], Policy | None]] = {
    "default (TimePolicy(1))": lambda: None,
    "NPolicy(10**9)": lambda: NPolicy(10**9),
    "TimePolicy(3600)": lambda: TimePolicy(3600),
    "NPolicy(10**9) | TimePolicy(3600)": lambda: NPolicy(10**9) | TimePolicy(3600),
}
DEFAULT_POLICY = "default (TimePolicy(1))"
BASELINES = ("plain loop", "checkpoint loop", "time-check loop", "tqdm", "counting generator")


@dataclass(frozen=True)
class Input:
    """One kind of input; `open` makes a fresh one before each repeat, untimed."""

    name: str
    open: Callable[[], AbstractContextManager[Iterable[Any]]]


# -- the loops being compared ------------------------------------------------------------


def _no_save() -> None:
    """The save of the hand-written loops: a call that does nothing."""


def _empty_body(item: object) -> None:
    """The loop body of the packages whose API calls a function per item."""


def plain_loop(items: Iterable[Any]) -> None:
    for _ in items:
        pass


def checkpoint_loop(items: Iterable[Any]) -> None:
    for i, _ in enumerate(items):
        if i % 1000 == 999:
            _no_save()


def time_check_loop(items: Iterable[Any]) -> None:
    last = time.monotonic()
    for _ in items:
        if time.monotonic() - last > 1.0:
            _no_save()
            last = time.monotonic()


def tqdm_loop(sink: TextIO) -> Loop:
    def loop(items: Iterable[Any]) -> None:
        for _ in tqdm(items, file=sink, mininterval=0.1):
            pass

    return loop


def counting(items: Iterable[T]) -> Iterator[T]:
    """The bare way to know how far a loop got: a generator that counts what it yields."""
    n = 0
    for x in items:
        yield x
        n += 1  # noqa: SIM113 - a hand-kept count is what this baseline measures


def counting_loop(items: Iterable[Any]) -> None:
    for _ in counting(items):
        pass


def calling_loop(items: Iterable[Any]) -> None:
    """A plain loop that calls an empty function per item, as loopz's API does."""
    for item in items:
        _empty_body(item)


def resumable_loop(state: Path, policy: Callable[[], Policy | None], saves: list[int]) -> Loop:
    def loop(items: Iterable[Any]) -> None:
        with Resumable(state, policy=policy()) as r:
            for _ in r.iterate(items):
                pass
        saves.append(r.saves)

    return loop


def batchledger_loop(database: Path) -> Loop | None:
    """batchledger 0.1: `Ledger.map(fn, items)` commits two SQLite transactions per item
    (WAL, synchronous=FULL: an fsync each), one before and one after the call; there is
    no setting for saving less often."""
    try:
        ledger_class = importlib.import_module("batchledger").Ledger
    except ImportError:
        return None

    def loop(items: Iterable[Any]) -> None:
        with ledger_class(database, namespace="bench", version="1") as ledger:
            for _ in ledger.map(_empty_body, items):
                pass

    return loop


# -- running them ------------------------------------------------------------------------


def remove_files(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def job_files(state: Path) -> tuple[Path, ...]:
    return (state, state.with_name(state.name + ".bak"), state.with_name(state.name + ".lock"))


class FixedCost:
    """Repeats of a run over no items, timed part by part: what every run pays once."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.parts: dict[str, list[int]] = {
            "Resumable(path)": [],
            "__enter__: lock, load, signal handlers": [],
            "r.iterate([]) to its end: the completion save": [],
            "__exit__: unlock, handlers back": [],
        }

    def run(self) -> int:
        remove_files(*job_files(self.state))
        gc.collect()
        start = time.perf_counter_ns()
        r = Resumable(self.state)
        made = time.perf_counter_ns()
        r.__enter__()
        entered = time.perf_counter_ns()
        for _ in r.iterate([]):
            pass
        looped = time.perf_counter_ns()
        r.__exit__(None, None, None)
        left = time.perf_counter_ns()
        for times, ns in zip(
            self.parts.values(),
            (made - start, entered - made, looped - entered, left - looped),
            strict=True,
        ):
            times.append(ns)
        return left - start


def make_timer(source: Input, loop: Loop, fresh: tuple[Path, ...] = ()) -> Timer:
    """A repeat: remove `fresh` (a new job each time), open the input, time the loop."""

    def run() -> int:
        remove_files(*fresh)
        with source.open() as items:
            return timed(lambda: loop(items))

    return run


def write_lines(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(f"line {i}\n" for i in range(count))


@dataclass
class Row:
    """What one variant measured."""

    ns_per_item: float
    items: int
    saves: str = ""


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 300_000 if args.quick else 3_000_000
    repeats = 3 if args.quick else 7
    ledger_n = 100 if args.quick else 2_000
    print_header("bench_overhead: per-item overhead of r.iterate()")
    print(
        f"{n:,} items per input, best of {repeats} interleaved repeats; "
        f"batchledger on {ledger_n:,} items."
    )
    print()

    items = list(range(n))
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w", encoding="utf-8") as sink:
        directory = Path(tmp)
        lines = directory / "lines.txt"
        write_lines(lines, n)
        inputs = [
            Input("list", lambda: contextlib.nullcontext(items)),
            Input("range", lambda: contextlib.nullcontext(range(n))),
            Input("generator", lambda: contextlib.nullcontext(i for i in range(n))),
            # make_timer enters it as a context manager, which closes the file.
            Input("file", lambda: open(lines, encoding="utf-8")),  # noqa: SIM115
        ]
        baselines: dict[str, Loop] = {
            "plain loop": plain_loop,
            "checkpoint loop": checkpoint_loop,
            "time-check loop": time_check_loop,
            "tqdm": tqdm_loop(sink),
            "counting generator": counting_loop,
        }
        variants: dict[str, Timer] = {}
        saves: dict[str, list[int]] = {}
        for source in inputs:
            for name, loop in baselines.items():
                variants[f"{source.name}/{name}"] = make_timer(source, loop)
            for name, policy in POLICIES.items():
                key = f"{source.name}/{name}"
                state = directory / f"{source.name}-{len(variants)}.state"
                saves[key] = []
                loop = resumable_loop(state, policy, saves[key])
                variants[key] = make_timer(source, loop, job_files(state))

        # The fixed cost of a run: enter, the completion save and exit, on no items.
        fixed_cost = FixedCost(directory / "empty.state")
        variants["fixed"] = fixed_cost.run

        # Other packages, on the list input.
        list_input = inputs[0]
        few = Input("list prefix", lambda: contextlib.nullcontext(items[:ledger_n]))
        variants["others/calling loop"] = make_timer(list_input, calling_loop)
        state = directory / "every-1000.state"
        saves["others/resumable NPolicy(1000)"] = []
        variants["others/resumable NPolicy(1000)"] = make_timer(
            list_input,
            resumable_loop(
                state, lambda: NPolicy(SAVE_EVERY), saves["others/resumable NPolicy(1000)"]
            ),
            job_files(state),
        )
        loopz = loopz_loop(directory / "loopz", SAVE_EVERY)
        if loopz is not None:
            variants["others/loopz"] = make_timer(list_input, loopz)
        database = directory / "ledger.sqlite"
        ledger = batchledger_loop(database)
        if ledger is not None:
            sidecars = ("-wal", "-shm", ".lock")
            fresh = (database, *(database.with_name(database.name + s) for s in sidecars))
            variants["others/batchledger"] = make_timer(few, ledger, fresh)

        samples = interleaved(variants, repeats)

    def row(key: str, count: int = n) -> Row:
        recorded = sorted(set(saves.get(key, [])))
        return Row(best(samples[key]) / count, count, ", ".join(f"{value:,}" for value in recorded))

    # -- table 1: resumable against the baselines, per input ------------------------------
    rows: list[list[object]] = []
    worst_tqdm: tuple[float, str] = (float("-inf"), "")
    worst_checkpoint: tuple[float, str] = (float("-inf"), "")
    for source in inputs:
        plain = row(f"{source.name}/plain loop").ns_per_item
        tqdm_overhead = row(f"{source.name}/tqdm").ns_per_item - plain
        checkpoint_overhead = row(f"{source.name}/checkpoint loop").ns_per_item - plain
        for name in BASELINES:
            measured = row(f"{source.name}/{name}")
            overhead = measured.ns_per_item - plain
            cells: list[object] = [source.name, name, f"{measured.ns_per_item:.1f}"]
            rows.append([*cells, f"{overhead:.1f}", *["—"] * 5])
        for name in POLICIES:
            measured = row(f"{source.name}/{name}")
            overhead = measured.ns_per_item - plain
            to_tqdm = overhead / tqdm_overhead
            to_checkpoint = overhead / checkpoint_overhead
            where = f"{source.name}, {name}"
            worst_tqdm = max(worst_tqdm, (to_tqdm, where))
            worst_checkpoint = max(worst_checkpoint, (to_checkpoint, where))
            rows.append(
                [
                    source.name,
                    f"resumable {name}",
                    f"{measured.ns_per_item:.1f}",
                    f"{overhead:.1f}",
                    fmt_ratio(to_tqdm),
                    fmt_ratio(to_checkpoint),
                    verdict(to_tqdm <= TQDM_LIMIT),
                    verdict(to_checkpoint <= CHECKPOINT_LIMIT),
                    measured.saves,
                ]
            )
    print(f"### Per item, {n:,} items, best of {repeats}")
    print()
    print(
        table(
            [
                "input",
                "variant",
                "ns/item",
                "overhead ns/item",
                "÷ tqdm overhead",
                "÷ checkpoint overhead",
                f"≤ {TQDM_LIMIT} x tqdm",
                f"≤ {CHECKPOINT_LIMIT} x checkpoint",
                "saves per run",
            ],
            rows,
        )
    )
    print()
    print(
        "overhead = ns/item minus the plain loop's over the same input. The resumable rows "
        "time the whole with block, so they include the fixed cost below; "
        "'saves per run' counts the completion save."
    )
    print()

    # -- table 2: the fixed cost of a run ------------------------------------------------
    fixed = samples["fixed"]
    print(f"### Fixed cost of a run (resumable, default policy, empty list), {repeats} repeats")
    print()
    fixed_rows: list[list[object]] = [
        [part, fmt_time(best(times)), fmt_time(median(times)), ""]
        for part, times in fixed_cost.parts.items()
    ]
    fixed_rows.append(
        [
            "total",
            fmt_time(best(fixed)),
            fmt_time(median(fixed)),
            f"{best(fixed) / n:.1f} ns/item over {n:,} items",
        ]
    )
    print(table(["part", "best", "median", "spread over the items (best)"], fixed_rows))
    print()

    # -- table 3: other packages on the list input ---------------------------------------
    plain = row("list/plain loop").ns_per_item
    ours = row(f"list/{DEFAULT_POLICY}")
    ours_overhead = ours.ns_per_item - plain
    others: list[list[object]] = []

    def other(name: str, setting: str, measured: Row, saves_text: str) -> None:
        overhead = measured.ns_per_item - plain
        others.append(
            [
                name,
                setting,
                f"{measured.items:,}",
                saves_text,
                f"{measured.ns_per_item:.1f}",
                f"{overhead:.1f}",
                fmt_ratio(overhead / ours_overhead),
            ]
        )

    other("plain loop", "—", row("list/plain loop"), "—")
    other("plain loop calling an empty function", "—", row("others/calling loop"), "—")
    other("resumable", DEFAULT_POLICY, ours, ours.saves + " (completion)")
    every = row("others/resumable NPolicy(1000)")
    other("resumable", f"NPolicy({SAVE_EVERY})", every, every.saves + " (fsync'd)")
    missing: list[str] = []
    if "others/loopz" in samples:
        other(
            "loopz 1.0.0",
            f"save_every={SAVE_EVERY}",
            row("others/loopz"),
            f"{n // SAVE_EVERY + 1:,} (no fsync)",
        )
    else:
        missing.append("loopz")
    if "others/batchledger" in samples:
        other(
            "batchledger 0.1.0",
            "every item (fixed)",
            row("others/batchledger", ledger_n),
            f"{2 * ledger_n:,} commits (fsync'd)",
        )
    else:
        missing.append("batchledger")
    print(f"### Other packages, list input, best of {repeats}")
    print()
    print(
        table(
            [
                "package",
                "setting",
                "items",
                "saves in the run",
                "ns/item",
                "overhead ns/item",
                "overhead ÷ resumable default's",
            ],
            others,
        )
    )
    print()
    if missing:
        print(f"not installed, so not measured: {', '.join(missing)}")
    print(
        f"loopz calls a function per item (compare with the 'calling' row) and copies the "
        f"input into a list; batchledger ran on the first {ledger_n:,} items only, as it "
        "commits to SQLite twice per item."
    )
    print()
    print_load_at_end()
    passed = worst_tqdm[0] <= TQDM_LIMIT and worst_checkpoint[0] <= CHECKPOINT_LIMIT
    print(
        target_line(
            "1",
            passed,
            f"worst overhead {worst_tqdm[0]:.3f} x tqdm's ({worst_tqdm[1]}; limit "
            f"{TQDM_LIMIT}), worst {worst_checkpoint[0]:.3f} x the checkpoint loop's "
            f"({worst_checkpoint[1]}; limit {CHECKPOINT_LIMIT})",
        )
    )


if __name__ == "__main__":
    main()
