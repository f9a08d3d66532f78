"""One durable save, ``r.save()``, against the bare system calls such a save needs.

A save of progress alone appends a record to the progress log (docs/state-file.md), so
its floor is the **append floor**: os.write of a record of the same size to a file already
open, then os.fdatasync. A save after ``r.state`` changed rewrites the state file (a
compaction); its floor is the bare rename sequence. Both are measured in one run, with
the ratios, and how often a compaction comes when nothing forces one. A keyed save of 100
new URL keys rides the log too (the keys in the record, one flush): it is measured beside
an append floor of a record of its size.

The bare rename sequence writes the same bytes: os.open a temp file, os.write, os.fsync, os.close,
os.replace over the target, then open, fsync and close the directory. resumable also keeps
the previous file as ``<path>.bak`` (the old backup unlinked, then a hard link made before
the replace) and serialises
the state; a third variant adds that link to the bare calls, so the table shows what the
backup costs apart from Python. All variants write in the same directory, interleaved,
each timed call by call.

A last table runs empty-body loops that save every 100 items: resumable with
``NPolicy(100)``, and hand-written loops that save the position every 100 items by an
append + fdatasync (durable) and by rewriting a JSON file without fsync (as loopz and resu
do), against the plain loop.

Run: ``python benchmarks/bench_save.py [--quick]``; to compare two checkouts, run it with
each one first on ``PYTHONPATH`` (an older checkout has no log: its ``r.save()`` rewrites).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _timing import (
    Timer,
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
)

from resumable import NPolicy, Resumable
from resumable._store import document as state_document
from resumable._store import durable
from resumable._store.document import StateDocument

LIMIT = 1.25  # ours at most this times the bare calls, by the medians
APPEND_LIMIT = 1.25  # a progress save at most this times the append floor (issue 18)
EVERY = 100  # items between saves in the per-item table
KEYS_PER_SAVE = 100  # new keys in each keyed save
WRITER = "resumable-loop bench"
SMALL_STATE = {
    "last_url": "https://example.org/catalogue/items/000123456?page=42",
    "bytes_written": 52_311_004,
    "errors": ["timeout at item 1203", "HTTP 503 at item 5512"],
    "note": "a few hundred bytes of user state, as a typical job keeps",
    "counts": {"ok": 120_331, "skipped": 211, "retried": 17},
}
ITEM_TIMES_NS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def bare_save(target: Path, data: bytes, backup: Path | None = None) -> None:
    """The system calls of a durable replace, with no checks and no Python wrapping;
    with `backup`, also the hard link that keeps the previous file."""
    temp = target.with_name(f".{target.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    if backup is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup)
        os.link(target, backup)
    os.replace(temp, target)
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(directory)
    os.close(directory)


def append_floor(fd: int, record: bytes) -> None:
    """The least a durable append costs: the record written to a file already open, then
    flushed."""
    os.write(fd, record)
    os.fdatasync(fd)


def record_size(state_path: Path) -> int:
    """The size of the last record of the job's progress log (0 when it has none)."""
    log = state_path.with_name(state_path.name + ".log")
    data = log.read_bytes() if log.exists() else b""
    offset = last = 0
    while offset + 9 <= len(data):
        last = 9 + int.from_bytes(data[offset + 1 : offset + 5], "little")
        offset += last
    return last


def keyed_save_timer(job: Resumable) -> Timer:
    """Time `job.save()` after KEYS_PER_SAVE more items of a keyed loop are done (the
    items handed out untimed)."""
    urls = (f"https://example.org/catalogue/items/{n:09d}" for n in itertools.count())
    items = iter(job.iterate(urls, key=str))

    def run() -> int:
        for _ in range(KEYS_PER_SAVE):
            next(items)
        start = time.perf_counter_ns()
        job.save()
        return time.perf_counter_ns() - start

    return run


def compaction_bound() -> int | None:
    """How many progress saves the log holds before a save rewrites (None: no log)."""
    try:
        from resumable._store import progress_log  # absent in older checkouts
    except ImportError:
        return None
    return progress_log.MAX_RECORDS


# -- loops that save every EVERY items ------------------------------------------------------


def plain_loop(items: range, directory: Path) -> None:
    for _ in items:
        pass


def resumable_loop(items: range, directory: Path) -> None:
    with Resumable(directory / "loop.state", policy=NPolicy(EVERY), signals=()) as r:
        for _ in r.iterate(items):
            pass


def hand_written_append(items: range, directory: Path) -> None:
    """The position appended and fdatasync'd every EVERY items: durable."""
    fd = os.open(directory / "hand.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        for n, _ in enumerate(items, 1):
            if n % EVERY == 0:
                os.write(fd, b"%d\n" % n)
                os.fdatasync(fd)
    finally:
        os.close(fd)


def hand_written_no_fsync(items: range, directory: Path) -> None:
    """The position written to a JSON file every EVERY items, never flushed: a power cut
    can lose or tear it (as loopz and resu keep theirs)."""
    target = directory / "hand.json"
    for n, _ in enumerate(items, 1):
        if n % EVERY == 0:
            target.write_text(f'{{"position": {n}}}')


def loop_timer(loop: Callable[[range, Path], None], items: range, directory: Path) -> Timer:
    def run() -> int:
        for leftover in directory.iterdir():
            leftover.unlink()
        start = time.perf_counter_ns()
        loop(items, directory)
        return time.perf_counter_ns() - start

    return run


def call_timer(function: Callable[[], object]) -> Timer:
    """Time one call of `function`, with nothing set up around it."""

    def run() -> int:
        start = time.perf_counter_ns()
        function()
        return time.perf_counter_ns() - start

    return run


def cpu_part(function: Callable[[], object], calls: int) -> list[int]:
    """Per-call times of a CPU-only part, each sample the mean over a batch of calls."""
    samples = []
    for _ in range(calls // 100):
        start = time.perf_counter_ns()
        for _ in range(100):
            function()
        samples.append((time.perf_counter_ns() - start) // 100)
    return samples


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 50 if args.quick else 500
    print_header("bench_save: one durable save against the bare system calls")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        state_path = directory / "job.state"
        rewritten_path = directory / "rewritten.state"
        with (
            Resumable(state_path, policy=None) as r,
            Resumable(rewritten_path, policy=None) as rewritten,
            Resumable(directory / "keyed.state", policy=None, signals=()) as keyed,
        ):
            r.state = SMALL_STATE
            r.save()
            data = state_path.read_bytes()
            r.save()  # the first save of a run rewrites; the next ones append, if they can
            size = record_size(state_path) or 250
            print(
                f"state file: {len(data)} bytes; a record of the log: {size} bytes; "
                f"{repeats} saves per variant, interleaved."
            )
            print()
            rewritten.state = dict(SMALL_STATE, saves=0)

            def rewrite() -> None:
                rewritten.state["saves"] += 1  # r.state changed: the save rewrites the file
                rewritten.save()

            floor_fd = os.open(directory / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            record = b"S" * size
            keyed_save = keyed_save_timer(keyed)
            keyed_save()  # the run's first save rewrites; the next ones append
            keyed_save()
            keyed_size = record_size(directory / "keyed.state") or 4_000
            keyed_record = b"S" * keyed_size
            print(f"a keyed save's record, {KEYS_PER_SAVE} new keys: {keyed_size} bytes.")
            print()

            bare_target = directory / "bare.state"
            linked_target = directory / "linked.state"
            durable_target = directory / "durable.state"
            for target in (bare_target, linked_target, durable_target):
                target.write_bytes(data)
            variants: dict[str, Timer] = {
                "r.save()": call_timer(r.save),
                "append floor: os.write + os.fdatasync, file open": call_timer(
                    lambda: append_floor(floor_fd, record)
                ),
                f"keyed r.save(), {KEYS_PER_SAVE} new keys": keyed_save,
                "append floor, a record of the keyed save's size": call_timer(
                    lambda: append_floor(floor_fd, keyed_record)
                ),
                "r.save() after r.state changed (a rewrite)": call_timer(rewrite),
                "bare calls": call_timer(lambda: bare_save(bare_target, data)),
                "bare calls + backup link": call_timer(
                    lambda: bare_save(
                        linked_target, data, linked_target.with_name("linked.state.bak")
                    )
                ),
                "durable.replace_durably(..., keep_previous_as=...)": call_timer(
                    lambda: durable.replace_durably(
                        durable_target, data, durable_target.with_name("durable.state.bak")
                    )
                ),
            }
            samples = interleaved(variants, repeats, progress=False)
            os.close(floor_fd)

            # The CPU-only parts of r.save(), timed on their own.
            progress = {"kind": "position", "position": 123_456, "finished": False}
            document = StateDocument(
                progress, r.state, 3, state_document.now_iso(), state_document.now_iso()
            )
            link_source = directory / "link-source"
            link_source.write_bytes(data)
            link_target = directory / "link.bak"

            def keep_backup() -> None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link_target)
                os.link(link_source, link_target)

            calls = 2_000 if args.quick else 20_000
            parts = {
                "serialise: state_document.encode(document)": cpu_part(
                    lambda: state_document.encode(document, WRITER), calls
                ),
                "fingerprint: state_document.fingerprint(progress, state)": cpu_part(
                    lambda: state_document.fingerprint(progress, r.state), calls
                ),
                "timestamp: state_document.now_iso()": cpu_part(state_document.now_iso, calls),
                "temp name: durable.temp_name(path)": cpu_part(
                    lambda: durable.temp_name(state_path), calls
                ),
                "backup alone: os.unlink + os.link (no fsync)": cpu_part(keep_backup, calls // 10),
            }

    rows: list[list[object]] = []
    bare = median(samples["bare calls"])
    floor = median(samples["append floor: os.write + os.fdatasync, file open"])
    for name, values in samples.items():
        ordered = sorted(values)
        rows.append(
            [
                name,
                fmt_time(ordered[0]),
                fmt_time(median(values)),
                fmt_time(ordered[int(len(ordered) * 0.9)]),
                fmt_ratio(median(values) / floor),
                fmt_ratio(median(values) / bare),
            ]
        )
    print(f"### One save, {repeats} interleaved repeats")
    print()
    print(
        table(
            ["variant", "min", "median", "p90", "median ÷ append floor", "median ÷ bare calls"],
            rows,
        )
    )
    print()
    keyed_cost = median(samples[f"keyed r.save(), {KEYS_PER_SAVE} new keys"])
    keyed_floor = median(samples["append floor, a record of the keyed save's size"])
    print(
        f"a keyed save of {KEYS_PER_SAVE} new keys: {fmt_time(keyed_cost)} = "
        f"{keyed_cost / keyed_floor:.3f} x the append floor of a record its size "
        f"({fmt_time(keyed_floor)}), {keyed_cost / floor:.3f} x a positional record's."
    )
    print()
    rewrite_cost = median(samples["r.save() after r.state changed (a rewrite)"])
    bound = compaction_bound()
    if bound is None:
        print("this checkout has no progress log: every save rewrites the state file.")
    else:
        print(
            f"a rewrite (compaction) comes after at most {bound:,} progress saves (or 4 MiB of "
            f"records), at the end of a run, and whenever r.state changed: with r.state "
            f"unchanged it adds {fmt_time(rewrite_cost / bound)} per save."
        )
    print()

    per_item = loops_every_100(args.quick)
    print("### Parts of r.save() measured apart (CPU only; medians of 100-call means)")
    print()
    print(
        table(
            ["part", "median", "share of r.save() median"],
            [
                [
                    name,
                    fmt_time(median(values)),
                    f"{100 * median(values) / median(samples['r.save()']):.1f} %",
                ]
                for name, values in parts.items()
            ],
        )
    )
    print()

    ours = median(samples["r.save()"])
    print("### What one save costs in items (from the r.save() median)")
    print()
    rows = []
    for item_ns in ITEM_TIMES_NS:
        # NPolicy(n) spends save / (save + n * item) of the loop saving: 1 % needs
        # n >= 99 * save / item.
        at_one_percent = max(1, round(99 * ours / item_ns))
        rows.append(
            [
                fmt_time(item_ns),
                f"{ours / item_ns:,.0f}" if ours >= 10 * item_ns else f"{ours / item_ns:.2f}",
                f"{at_one_percent:,}",
                f"{100 * ours / (ours + item_ns):.1f} %",
            ]
        )
    print(
        table(
            [
                "time per item",
                "items one save costs",
                "NPolicy(n) for ≤ 1 % saving: n ≥",
                "NPolicy(1): time saving",
            ],
            rows,
        )
    )
    print()
    print(
        f"the default TimePolicy(1.0) saves about once a second: {fmt_time(ours)} "
        f"= {100 * ours / 1e9:.2f} % of each second, whatever the time per item."
    )
    print()
    print(f"### Empty-body loops saving every {EVERY} items (best of the repeats)")
    print()
    print(table(["loop", "per item", "overhead per item (vs plain)"], per_item))
    print()
    print_load_at_end()
    # Target 2 is the rewrite against the bare rename sequence: with a progress log, the
    # save of a changed r.state; without one (an older checkout), every r.save().
    rewrite_median = ours if bound is None else rewrite_cost
    ratio = rewrite_median / bare
    print(
        target_line(
            "2",
            ratio <= LIMIT,
            f"a rewriting save median {fmt_time(rewrite_median)} = {ratio:.3f} x the bare "
            f"calls' {fmt_time(bare)}; limit {LIMIT} x",
        )
    )
    print(
        target_line(
            "18",
            ours / floor <= APPEND_LIMIT,
            f"r.save() of progress median {fmt_time(ours)} = {ours / floor:.3f} x the append "
            f"floor's {fmt_time(floor)}; limit {APPEND_LIMIT} x",
        )
    )


def loops_every_100(quick: bool) -> list[list[object]]:
    """Rows of the per-item table: each loop's best time per item, and the plain loop's
    subtracted."""
    items = range(20_000 if quick else 200_000)
    loops: dict[str, Callable[[range, Path], None]] = {
        "plain loop": plain_loop,
        f"resumable, NPolicy({EVERY})": resumable_loop,
        f"hand-written: append + fdatasync every {EVERY}": hand_written_append,
        f"hand-written: JSON file every {EVERY}, no fsync": hand_written_no_fsync,
    }
    with tempfile.TemporaryDirectory() as tmp:
        loopz = loopz_loop(Path(tmp) / "loopz", EVERY)
        if loopz is not None:
            name = f"loopz 1.0.0, save_every={EVERY} (no fsync; a call per item)"
            loops[name] = lambda items, directory: loopz(items)  # its own directory
        timers = {}
        for index, (name, loop) in enumerate(loops.items()):
            directory = Path(tmp) / str(index)
            directory.mkdir()
            timers[name] = loop_timer(loop, items, directory)
        samples = interleaved(timers, 3 if quick else 7, progress=False)
    plain = min(samples["plain loop"]) / len(items)
    rows: list[list[object]] = []
    for name, values in samples.items():
        each = min(values) / len(items)
        rows.append([name, fmt_time(each), "" if name == "plain loop" else fmt_time(each - plain)])
    return rows


if __name__ == "__main__":
    main()
