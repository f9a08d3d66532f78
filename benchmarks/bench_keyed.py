"""Keyed progress end to end: resuming with 1,000,000 done keys, a save as keys pile up, and
the cost per item against a plain loop and positional progress.

Issue targets: a save of 100 new keys with 1,000,000 keys done costs at most 2 x one with
1,000 done (both jobs open side by side, saves interleaved, fsync included); resuming a job
with 1,000,000 done keys takes under 2 seconds (open, read the journal, skip the 1,000,000
done items of the input by key, hand out the first new one). What the journal costs apart
from the loop is in bench_journal.py.

Run: ``python benchmarks/bench_keyed.py [--quick]``
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _timing import (
    fmt_ratio,
    fmt_time,
    median,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
)

from resumable import NPolicy, Resumable

SAVE_LIMIT = 2.0
RESUME_LIMIT_S = 2.0
BATCH = 100
DONE_FEW, DONE_MANY = 1_000, 1_000_000


def url(number: int) -> str:
    """A URL-like key of about 60 characters."""
    return f"https://shop.example.com/catalogue/item/{number:010d}?ref=list&p={number % 97}"


def make_job(path: Path, done: int) -> None:
    """A keyed job that has finished the first `done` URLs (one fold, then saved)."""
    with Resumable(path, policy=NPolicy(10**9)) as r:
        for _ in r.iterate((url(n) for n in range(done)), key=str):
            pass


def resume_seconds(path: Path, done: int) -> float:
    """Open the job, iterate its first `done` URLs plus 10 new ones, take the first new."""
    urls = [url(n) for n in range(done + 10)]
    start = time.perf_counter()
    with Resumable(path, policy=NPolicy(10**9)) as r:
        first = next(iter(r.iterate(urls, key=str)))
        elapsed = time.perf_counter() - start
        assert first == url(done), first
        return elapsed


def save_samples(few: Path, many: Path, done: int, rounds: int) -> dict[str, list[int]]:
    """r.save() after 100 new items, alternating between a job with few and many keys."""
    samples: dict[str, list[int]] = {f"{DONE_FEW:,} done": [], f"{done:,} done": []}
    fresh = itertools.count(10**9)
    with (
        Resumable(few, policy=NPolicy(10**9)) as small,
        Resumable(many, policy=NPolicy(10**9)) as large,
    ):
        loops: list[tuple[str, Resumable, Iterator[str]]] = [
            (name, job, iter(job.iterate((url(next(fresh)) for _ in itertools.count()), key=str)))
            for name, job in zip(samples, (small, large), strict=True)
        ]
        for round_number in range(rounds):
            order = loops if round_number % 2 == 0 else loops[::-1]
            for name, job, items in order:
                for _ in range(BATCH):
                    next(items)
                start = time.perf_counter_ns()
                job.save()
                samples[name].append(time.perf_counter_ns() - start)
    return samples


def per_item_ns(items: list[str], variant: str, directory: Path) -> float:
    start = time.perf_counter_ns()
    if variant == "plain loop":
        for item in items:
            str(item)
    else:
        path = directory / f"per-item-{variant}-{time.perf_counter_ns()}.state"
        with Resumable(path, policy=NPolicy(10**9)) as r:
            key = str if variant == "keyed" else None
            for item in r.iterate(items, key=key):
                str(item)  # what key=str costs the keyed loop, for a fair plain loop
    return (time.perf_counter_ns() - start) / len(items)


def main() -> None:
    args = parse_args(__doc__ or "")
    many = 100_000 if args.quick else DONE_MANY
    rounds = 20 if args.quick else 150
    print_header("bench_keyed: keyed progress end to end")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        few_path, many_path = directory / "few.state", directory / "many.state"
        make_job(few_path, DONE_FEW)
        make_job(many_path, many)

        samples = save_samples(few_path, many_path, many, rounds)
        names = list(samples)
        base = median(samples[names[0]])
        print(f"### r.save() of {BATCH} new keys ({rounds} each, interleaved)")
        print()
        print(
            table(
                ["job", "median", "ratio"],
                [
                    [name, fmt_time(median(s)), fmt_ratio(median(s) / base)]
                    for name, s in samples.items()
                ],
            )
        )
        ratio = median(samples[names[1]]) / base
        print()

        resumes = [resume_seconds(many_path, many) for _ in range(3)]
        print(
            f"### Resuming with {many + rounds * BATCH:,} done keys, {many:,} of them in "
            "the input (3 runs)"
        )
        print()
        print(table(["run", "seconds"], [[str(n + 1), f"{s:.2f}"] for n, s in enumerate(resumes)]))
        print()

        items = [url(n) for n in range(200_000 if args.quick else 1_000_000)]
        variants = ["plain loop", "positional", "keyed"]
        costs = {variant: [] for variant in variants}  # type: dict[str, list[float]]
        for _ in range(3):
            for variant in variants:
                costs[variant].append(per_item_ns(items, variant, directory))
        plain = min(costs["plain loop"])
        print("### Per item, empty body plus str(item) (best of 3; saves included)")
        print()
        print(
            table(
                ["loop", "ns per item", "over the plain loop"],
                [[v, f"{min(c):.0f}", f"{min(c) - plain:+.0f}"] for v, c in costs.items()],
            )
        )
        print()
        print(
            target_line(
                f"save with {many:,} done <= {SAVE_LIMIT} x with {DONE_FEW:,}",
                ratio <= SAVE_LIMIT,
                fmt_ratio(ratio),
            )
        )
        print(
            target_line(
                f"resume with {many:,} done keys < {RESUME_LIMIT_S} s",
                max(resumes) < RESUME_LIMIT_S,
                f"{max(resumes):.2f} s (worst)",
            )
        )
    print_load_at_end()


if __name__ == "__main__":
    main()
