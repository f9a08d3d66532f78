"""What a sink (``r.sink``) costs, side by side with a plain file, in one run.

- **Per save:** ``r.save()`` of a job with one sink written since the last save, against
  ``r.save()`` of a job without one, and against the bare calls that make a plain file
  durable (flush, fsync). The difference is the sink's fsync.
- **Per write:** ``sink.write(text)`` and ``sink.write_json(value)`` against the same write
  to a plain buffered file (``open(path, "a")`` / ``orjson.dumps`` to ``open(path, "ab")``).
- **Per item:** a loop of trivial items that writes one line per item, with a sink, with a
  plain file (no guarantee), and with no output: a job with sinks has an item boundary
  after every item.

Run: ``python benchmarks/bench_sink.py [--quick]``
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from _timing import (
    Timer,
    fmt_ratio,
    fmt_time,
    interleaved,
    median,
    parse_args,
    print_header,
    print_load_at_end,
    table,
)

from resumable import NPolicy, Resumable

LINE = "https://example.org/catalogue/items/000123456\t200\t5231\n"
RECORD = {"url": "https://example.org/catalogue/items/000123456", "status": 200, "size": 5231}


def per_call(function: Callable[[], object], calls: int) -> list[int]:
    """Per-call times, each sample the mean over a batch of 100 calls."""
    samples = []
    for _ in range(calls // 100):
        start = time.perf_counter_ns()
        for _ in range(100):
            function()
        samples.append((time.perf_counter_ns() - start) // 100)
    return samples


def rows_of(samples: dict[str, list[int]], base: str) -> list[list[object]]:
    """Table rows: min, median, p90 and the median's ratio to `base`'s."""
    rows: list[list[object]] = []
    reference = median(samples[base])
    for name, values in samples.items():
        ordered = sorted(values)
        rows.append(
            [
                name,
                fmt_time(ordered[0]),
                fmt_time(median(values)),
                fmt_time(ordered[int(len(ordered) * 0.9)]),
                fmt_ratio(median(values) / reference),
            ]
        )
    return rows


def saves(directory: Path, repeats: int) -> dict[str, list[int]]:
    """One save with a sink written since the last, one without, and a plain fsync."""
    with (
        Resumable(directory / "plain.state", signals=()) as plain,
        Resumable(directory / "sunk.state", signals=()) as sunk,
    ):
        sink = sunk.sink(directory / "sunk.txt")
        bare = open(directory / "bare.txt", "a")  # noqa: SIM115 (closed below)

        def save_with_sink() -> int:
            sink.write(LINE)  # untimed: what a save after one item finds
            start = time.perf_counter_ns()
            sunk.save()
            return time.perf_counter_ns() - start

        def save_without() -> int:
            start = time.perf_counter_ns()
            plain.save()
            return time.perf_counter_ns() - start

        def bare_fsync() -> int:
            bare.write(LINE)
            start = time.perf_counter_ns()
            bare.flush()
            os.fsync(bare.fileno())
            return time.perf_counter_ns() - start

        variants: dict[str, Timer] = {
            "r.save(), no sink": save_without,
            "r.save(), one sink written since the last save": save_with_sink,
            "plain file: flush + fsync (bare)": bare_fsync,
        }
        try:
            return interleaved(variants, repeats, progress=False)
        finally:
            bare.close()


def writes(directory: Path, calls: int) -> dict[str, list[int]]:
    """One write to a sink against one to a plain buffered file, text and JSON."""
    with Resumable(directory / "writes.state", signals=()) as r:
        text_sink = r.sink(directory / "sink.txt")
        json_sink = r.sink(directory / "sink.jsonl")
        with (
            open(directory / "plain.txt", "a") as text_file,
            open(directory / "plain.jsonl", "ab") as json_file,
        ):
            return {
                "plain file: write(text)": per_call(lambda: text_file.write(LINE), calls),
                "sink.write(text)": per_call(lambda: text_sink.write(LINE), calls),
                "plain file: write(orjson.dumps(value) + newline)": per_call(
                    lambda: json_file.write(orjson.dumps(RECORD) + b"\n"), calls
                ),
                "sink.write_json(value)": per_call(lambda: json_sink.write_json(RECORD), calls),
            }


def loops(directory: Path, items: int, repeats: int) -> dict[str, list[int]]:
    """A loop of `items` trivial items writing one line each: per item."""
    counter = iter(range(10**9))

    def job(kind: str) -> Timer:
        def run() -> int:
            state = directory / f"loop-{kind}-{next(counter)}.state"
            out = state.with_suffix(".txt")
            with Resumable(state, policy=NPolicy(10**9), signals=()) as r:
                if kind == "sink":
                    sink = r.sink(out)
                    start = time.perf_counter_ns()
                    for _ in r.iterate(range(items)):
                        sink.write(LINE)
                elif kind == "plain":
                    with open(out, "a") as plain:
                        start = time.perf_counter_ns()
                        for _ in r.iterate(range(items)):
                            plain.write(LINE)
                else:
                    start = time.perf_counter_ns()
                    for _ in r.iterate(range(items)):
                        pass
                elapsed = time.perf_counter_ns() - start
            return elapsed // items

        return run

    return interleaved(
        {
            "r.iterate, no output": job("none"),
            "r.iterate, plain file: write(text)": job("plain"),
            "r.iterate, sink.write(text)": job("sink"),
        },
        repeats,
        progress=False,
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    save_repeats = 30 if args.quick else 300
    calls = 20_000 if args.quick else 200_000
    items, loop_repeats = (20_000, 3) if args.quick else (200_000, 9)
    print_header("bench_sink: a sink's cost per save, per write and per item")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        saved = saves(directory, save_repeats)
        written = writes(directory, calls)
        looped = loops(directory, items, loop_repeats)
    headers = ["variant", "min", "median", "p90", "median ÷ first row"]
    print(f"### One save, {save_repeats} interleaved repeats")
    print()
    print(table(headers, rows_of(saved, "r.save(), no sink")))
    print()
    print("### One write (medians of 100-call means)")
    print()
    print(table(headers, rows_of(written, "plain file: write(text)")))
    print()
    print(f"### Per item of a loop of {items:,} trivial items, {loop_repeats} repeats")
    print()
    print(table(headers, rows_of(looped, "r.iterate, no output")))
    print()
    extra_save = median(saved["r.save(), one sink written since the last save"]) - median(
        saved["r.save(), no sink"]
    )
    print(f"a sink adds {fmt_time(extra_save)} to each save (its flush and fsync).")
    print()
    print_load_at_end()


if __name__ == "__main__":
    main()
