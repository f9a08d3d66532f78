"""Resuming: how long a restarted job takes to reach its first item, or its end.

A list is entered at the saved position directly, so resuming at the end of a
10,000,000-item list should cost about what opening the state file costs. A generator has
to be advanced past its done prefix; that should cost about what
``next(itertools.islice(gen, n, n), None)`` costs on the same kind of generator.

Each saved state is made the way a user makes one, by running the loop once and leaving
it with ``break`` (which saves the position of the item it breaks at), and its bytes are
put back before every repeat.

Run: ``python benchmarks/bench_resume.py [--quick]``
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from _timing import (
    Timer,
    best,
    fmt_ratio,
    fmt_time,
    interleaved,
    median,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
    verdict,
)

from resumable import Resumable

OPEN_LIMIT_NS = 1_000_000  # open + iterate + first next under 1 ms
SKIP_LIMIT = 1.2  # generator skip at most this times islice's
TAIL = 1_000  # items a resumed generator has after its saved position


def make_state(path: Path, items: Iterable[int], stop_at: int | None) -> bytes:
    """Run a loop once, leaving it by ``break`` at item `stop_at` (or running it to the
    end); return the state file's bytes."""
    with Resumable(path) as r:
        for item in r.iterate(items):
            if item == stop_at:
                break
    return path.read_bytes()


def put_back(path: Path, saved: bytes) -> None:
    """Make the state file hold `saved` again, with no backup beside it."""
    path.write_bytes(saved)
    with contextlib.suppress(FileNotFoundError):
        path.with_name(path.name + ".bak").unlink()


class Resume:
    """Repeats of one resume: the time to open, and the time of iterate + first next."""

    def __init__(self, path: Path, saved: bytes, items: Callable[[], Iterable[int]]) -> None:
        self.path = path
        self.saved = saved
        self.items = items
        self.open_ns: list[int] = []
        self.first_ns: list[int] = []
        self.results: set[str] = set()

    def run(self) -> int:
        put_back(self.path, self.saved)
        items = self.items()
        start = time.perf_counter_ns()
        r = Resumable(self.path)
        r.__enter__()
        opened = time.perf_counter_ns()
        try:
            first = next(r.iterate(items), None)
            done = time.perf_counter_ns()
        finally:
            r.__exit__(None, None, None)
        self.open_ns.append(opened - start)
        self.first_ns.append(done - opened)
        self.results.add("StopIteration" if first is None else f"item {first:,}")
        return done - start

    def skip_timer(self) -> Timer:
        """A timer whose result is iterate + first next alone."""

        def run() -> int:
            self.run()
            return self.first_ns[-1]

        return run


def islice_timer(make: Callable[[], Iterator[int]], position: int) -> Timer:
    """The bare skip: consume `position` items with islice, then take the next one."""

    def run() -> int:
        generator = make()
        start = time.perf_counter_ns()
        next(itertools.islice(generator, position, position), None)
        next(generator)
        return time.perf_counter_ns() - start

    return run


def generator_of(count: int) -> Callable[[], Iterator[int]]:
    return lambda: (i for i in range(count))


def main() -> None:
    args = parse_args(__doc__ or "")
    size = 1_000_000 if args.quick else 10_000_000
    position = 100_000 if args.quick else 1_000_000
    repeats = 7 if args.quick else 30
    crowd = 1_000 if args.quick else 10_000
    print_header("bench_resume: from a restart to the first item")
    # The finished case logs a warning; keep it off the terminal at the usual cost.
    library_logger = logging.getLogger("resumable")
    library_logger.addHandler(logging.NullHandler())
    library_logger.propagate = False

    items: Sequence[int] = list(range(size))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        one_left = directory / "one-left.state"
        none_left = directory / "none-left.state"
        finished = directory / "finished.state"
        generator = directory / "generator.state"
        list_cases = {
            f"list of {size:,}, 1 item left (position {size - 1:,})": Resume(
                one_left, make_state(one_left, items, size - 1), lambda: items
            ),
            # Position = length, not marked finished: as after a stop during the last item.
            # Made on a one-longer input, as no break can leave a loop after its last item;
            # a generator, so that the state records no length for the list to differ from.
            f"list of {size:,}, none left (position {size:,}, not finished)": Resume(
                none_left, make_state(none_left, iter(range(size + 1)), size), lambda: items
            ),
            f"list of {size:,}, finished job": Resume(
                finished, make_state(finished, items, None), lambda: items
            ),
        }
        # Not a target: opening also lists the state file's directory (for temp files
        # an earlier crash left), so a crowded directory makes every open slower.
        crowded = directory / "crowded" / "one-left.state"
        crowded.parent.mkdir()
        for index in range(crowd):
            (crowded.parent / f"output-{index}.json").touch()
        info_cases = {
            f"the first case, {crowd:,} other files in the directory (not a target)": Resume(
                crowded, make_state(crowded, items, size - 1), lambda: items
            )
        }
        make_generator = generator_of(position + TAIL)
        ours = Resume(generator, make_state(generator, make_generator(), position), make_generator)
        variants: dict[str, Timer] = {
            name: case.run for name, case in (list_cases | info_cases).items()
        }
        variants["generator: r.iterate + first next"] = ours.skip_timer()
        variants["generator: islice skip + next"] = islice_timer(make_generator, position)
        samples = interleaved(variants, repeats)

    rows: list[list[object]] = []
    slowest = (0.0, "")
    for name, case in (list_cases | info_cases).items():
        total = median(samples[name])
        if name in list_cases:
            slowest = max(slowest, (total, name))
        rows.append(
            [
                name,
                ", ".join(sorted(case.results)),
                fmt_time(median(case.open_ns)),
                fmt_time(median(case.first_ns)),
                fmt_time(total),
                fmt_time(best(samples[name])),
                verdict(total < OPEN_LIMIT_NS) if name in list_cases else "—",
            ]
        )
    print(f"### Resuming a list: medians of {repeats} interleaved repeats")
    print()
    print(
        table(
            [
                "case",
                "first next gives",
                "open: Resumable() + enter",
                "r.iterate + first next",
                "total",
                "total (best)",
                "< 1 ms",
            ],
            rows,
        )
    )
    print()
    print(
        "'none left' reaches the end inside the first next, which then makes the "
        "completion save (write, fsync, rename, directory fsync) before it raises."
    )
    print()

    skip = samples["generator: r.iterate + first next"]
    bare = samples["generator: islice skip + next"]
    ratio = best(skip) / best(bare)
    print(f"### Resuming a generator at position {position:,}: {repeats} interleaved repeats")
    print()
    print(
        table(
            ["variant", "best", "median", "best ÷ islice's"],
            [
                [
                    "r.iterate(gen) + first next",
                    fmt_time(best(skip)),
                    fmt_time(median(skip)),
                    fmt_ratio(ratio),
                ],
                [
                    "next(islice(gen, n, n), None) + next(gen)",
                    fmt_time(best(bare)),
                    fmt_time(median(bare)),
                    fmt_ratio(1.0),
                ],
                [
                    "open (Resumable() + enter), for reference",
                    "",
                    fmt_time(median(ours.open_ns)),
                    "",
                ],
            ],
        )
    )
    print()
    print(f"first next gives: {', '.join(sorted(ours.results))}")
    print()
    print_load_at_end()
    print(
        target_line(
            "3a",
            slowest[0] < OPEN_LIMIT_NS,
            f"slowest median open + iterate + first next {fmt_time(slowest[0])} "
            f"({slowest[1]}); limit 1 ms; per case above",
        )
    )
    print(
        target_line(
            "3b",
            ratio <= SKIP_LIMIT,
            f"generator skip of {position:,} items {fmt_time(best(skip))} = {ratio:.3f} x "
            f"islice's {fmt_time(best(bare))} (best of {repeats}); limit {SKIP_LIMIT} x",
        )
    )


if __name__ == "__main__":
    main()
