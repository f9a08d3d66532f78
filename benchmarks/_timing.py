"""Shared helpers of the benchmark scripts: timing, interleaved rounds, tables, targets.

Every benchmark compares variants measured side by side in one process run, because
absolute times on a small shared machine drift from minute to minute. A *round* runs each
variant once, in an order that rotates from round to round, so that a slow patch of the
machine hits every variant alike; a variant's figure is then its best (or median) sample.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: One repeat of a variant: does its own untimed set-up, returns the ns of its timed region.
Timer = Callable[[], int]


def parse_args(description: str) -> argparse.Namespace:
    """The command line every benchmark script accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer items and repeats; the numbers mean little",
    )
    return parser.parse_args()


def timed(function: Callable[[], object]) -> int:
    """Nanoseconds that one call of `function` takes, with the garbage collector paused.

    A full collection runs first, so that no variant pays for the garbage of another.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        function()
        return time.perf_counter_ns() - start
    finally:
        if was_enabled:
            gc.enable()


def interleaved(
    variants: Mapping[str, Timer], repeats: int, *, progress: bool = True
) -> dict[str, list[int]]:
    """Run every variant `repeats` times, one round at a time; return the samples in ns.

    Round k starts at variant k (mod the number of variants), so no variant is always
    first or always last, and drift in the machine's speed spreads over all of them.
    """
    names = list(variants)
    samples: dict[str, list[int]] = {name: [] for name in names}
    for round_number in range(repeats):
        start = round_number % len(names)
        for name in names[start:] + names[:start]:
            samples[name].append(variants[name]())
        if progress:
            print(f"  round {round_number + 1}/{repeats} done", file=sys.stderr, flush=True)
    return samples


def best(samples: Sequence[int]) -> int:
    """The fastest sample: what the code costs when nothing else gets in the way."""
    return min(samples)


def median(samples: Sequence[int]) -> float:
    """The middle sample: what a typical call costs on this machine, noise included."""
    return float(statistics.median(samples))


def fmt_time(ns: float) -> str:
    """A duration with a unit that keeps three significant digits or so."""
    magnitude = abs(ns)
    if magnitude >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if magnitude >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if magnitude >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.1f} ns"


def fmt_ratio(value: float | None) -> str:
    """A ratio such as ``0.123 x``, or a dash when there is none.

    Three decimals, so that a ratio just over a limit never prints as the limit itself.
    """
    if value is None:
        return "—"
    return f"{value:.3f} x" if abs(value) < 10 else f"{value:,.1f} x"


def verdict(passed: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if passed else "FAIL"


def target_line(label: str, passed: bool, measured: str) -> str:
    """The last-lines summary of one target, in a fixed form to grep for."""
    return f"target {label}: {verdict(passed)} (measured {measured})"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table, aligned so that it also reads well in a terminal.

    Columns whose cells all look numeric (digits, units, ratios) are right-aligned.
    """
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    numeric = [
        bool(cells) and all(_looks_numeric(row[index]) for row in cells)
        for index in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(widths[index]) if numeric[index] else value.ljust(widths[index])
            for index, value in enumerate(values)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (widths[index] - 1) + ":" if numeric[index] else "-" * widths[index]
        for index in range(len(headers))
    ]
    return "\n".join([line(headers), line(rule), *(line(row) for row in cells)])


def _looks_numeric(cell: str) -> bool:
    return cell in ("—", "") or cell.lstrip("-+")[:1].isdigit()


def print_header(title: str) -> None:
    """The script's title and the facts a reader needs to weigh its numbers."""
    print(f"## {title}")
    print()
    for line in machine_lines():
        print(line)
    print()


def machine_lines() -> list[str]:
    """Date, machine, Python and library version, and the load at the start."""
    import resumable  # here, so that a missing install fails with the script's name in it

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {_cpu_model()}, {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"resumable-loop {resumable.__version__}",
        f"- load average at start (1, 5, 15 min): {load}",
    ]


def print_load_at_end() -> None:
    """The load average when the script ends: other work on the machine adds noise."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average at end (1, 5, 15 min): {load}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_python(code: str, *args: str) -> str:
    """Run `code` in a fresh interpreter (this one's executable); return its stdout.

    The interpreter is forked by a shell, not by this process. Linux carries a process's
    peak RSS (``ru_maxrss``) across exec, and a child that Python spawns directly starts
    from this process's memory, so its ``ru_maxrss`` would never report less than this
    process's peak. A small shell in between forks with a fresh count; ``exit $?`` after
    the command keeps the shell from replacing itself with the interpreter.
    """
    command = [sys.executable, "-c", code, *args]
    if os.path.exists("/bin/sh"):
        script = 'exe=$1; shift; "$exe" "$@"; exit $?'
        command = ["/bin/sh", "-c", script, "sh", *command]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return completed.stdout


def _empty_body(item: object) -> None:
    pass


def loopz_loop(cache: Path, save_every: int) -> Callable[[Iterable[Any]], None] | None:
    """loopz 1.0, if installed (`nox -s bench` installs it): a decorator that runs an empty
    function once per item and checkpoints every `save_every` items (a JSON file written
    and renamed under `cache`, no fsync) plus once at the end, with a tqdm bar on stderr
    that cannot be turned off (here sent to /dev/null)."""
    try:
        loopz: Any = importlib.import_module("loopz")
        tracker: Any = importlib.import_module("loopz.tracker")
    except ImportError:
        return None
    tracker.CACHE_DIR = cache  # it writes under ~/.loopz otherwise
    tracked = loopz.track("bench", save_every=save_every)(_empty_body)

    def loop(items: Iterable[Any]) -> None:
        with (
            open(os.devnull, "w", encoding="utf-8") as sink,
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            tracked(items)

    return loop
