"""The key journal of keyed progress: the cost of an append, of a read, and of a key in memory.

An append writes only the keys finished since the last save, so its cost should not depend
on how many keys are done already: appends of 100 new keys to a journal of 1,000 keys and to
one of 1,000,000 are timed interleaved, fsync included. Reading back 1,000,000 keys is
timed for URL-like str keys and for int keys, folded (records of 65,536 keys) and as the
records many saves leave (100 keys or 10 keys each), with the garbage collector on, as
when a job resumes. tracemalloc measures what the loaded set of keys holds per key, and a
fresh interpreter the growth of its resident memory when it loads them.

Run: ``python benchmarks/bench_journal.py [--quick]``
"""

from __future__ import annotations

import gc
import itertools
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from _timing import (
    Timer,
    fmt_ratio,
    fmt_time,
    interleaved,
    median,
    parse_args,
    print_header,
    print_load_at_end,
    run_python,
    table,
    target_line,
)

from resumable._keys import Key
from resumable._store.journal_codec import encode_records
from resumable._store.journal_files import JournalWriter, fold, read_journal

APPEND_LIMIT = 2.0  # an append with 1,000,000 keys done, at most this times one with 1,000
READ_LIMIT_S = 2.0  # reading 1,000,000 keys
BATCH = 100  # keys per append
DONE_FEW, DONE_MANY = 1_000, 1_000_000


def url(number: int) -> str:
    """A URL-like key of about 60 characters."""
    return f"https://shop.example.com/catalogue/item/{number:010d}?ref=list&p={number % 97}"


def int_key(number: int) -> int:
    """An int key beyond the small ints CPython caches, as ids from a database are."""
    return 10**12 + number


def write_journal(path: Path, keys: list[Key], per_record: int | None) -> int:
    """A journal of `keys`: folded when `per_record` is None, else as appends of that many
    keys each (written without one fsync per record, which only the set-up would pay)."""
    if per_record is None:
        return fold(path, keys)
    with path.open("wb") as file:
        for start in range(0, len(keys), per_record):
            file.write(encode_records(keys[start : start + per_record]))
    return path.stat().st_size


def read_seconds(path: Path, length: int, repeats: int) -> tuple[float, int]:
    """The best wall time of `repeats` reads, with the garbage collector on; and the
    number of records."""
    best = float("inf")
    records = 0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        contents = read_journal(path, length)
        best = min(best, time.perf_counter() - start)
        records = contents.records
        del contents
    return best, records


def memory_per_key(path: Path, length: int, count: int) -> tuple[float, float]:
    """Bytes per key that the loaded set holds, and the peak per key while loading."""
    gc.collect()
    tracemalloc.start()
    try:
        contents = read_journal(path, length)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(contents.keys) == count
    del contents
    return held / count, peak / count


RSS_CHILD = """
import sys
from pathlib import Path
from resumable._store.journal_files import read_journal

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

before = rss_kib()
contents = read_journal(Path(sys.argv[1]), int(sys.argv[2]))
print(rss_kib() - before, len(contents.keys))
"""


def rss_per_key(path: Path, length: int) -> str:
    """Growth of the resident memory per key of a fresh process that loads the journal
    and keeps the keys (Linux only: it reads /proc/self/status)."""
    if not Path("/proc/self/status").exists():
        return "—"
    kib, count = (int(field) for field in run_python(RSS_CHILD, str(path), str(length)).split())
    return f"{kib * 1024 / count:.0f} B"


def append_timer(writer: JournalWriter, fresh: Iterator[int]) -> Timer:
    """Time one append of BATCH new URL keys (made before the clock starts)."""

    def run() -> int:
        keys: list[Key] = [url(next(fresh)) for _ in range(BATCH)]
        start = time.perf_counter_ns()
        writer.append(keys)
        return time.perf_counter_ns() - start

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    appends = 40 if args.quick else 300
    read_repeats = 1 if args.quick else 3
    many = 200_000 if args.quick else DONE_MANY
    print_header("bench_journal: appends, reads and memory of the key journal")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        # -- appends ----------------------------------------------------------------------
        few_path = directory / "few.state.keys-0"
        many_path = directory / "many.state.keys-0"
        few_length = fold(few_path, [url(n) for n in range(DONE_FEW)])
        start = time.perf_counter()
        many_keys: list[Key] = [url(n) for n in range(many)]
        many_length = fold(many_path, many_keys)
        fold_seconds = time.perf_counter() - start
        fresh = itertools.count(10**9)
        with (
            JournalWriter.open(few_path, few_length) as few,
            JournalWriter.open(many_path, many_length) as lots,
        ):
            samples = interleaved(
                {
                    f"append {BATCH} keys, {DONE_FEW:,} done": append_timer(few, fresh),
                    f"append {BATCH} keys, {many:,} done": append_timer(lots, fresh),
                },
                appends,
                progress=False,
            )
        batch: list[Key] = [url(n) for n in range(BATCH)]
        encode_ns = min(
            _ns(lambda: encode_records(batch)) for _ in range(200 if args.quick else 2_000)
        )

        print(f"### One append of {BATCH} new URL keys, fsync included ({appends} each)")
        print()
        names = list(samples)
        base = median(samples[names[0]])
        rows = []
        for name in names:
            ordered = sorted(samples[name])
            rows.append(
                [
                    name,
                    fmt_time(ordered[0]),
                    fmt_time(median(ordered)),
                    fmt_time(ordered[int(len(ordered) * 0.9)]),
                    fmt_ratio(median(ordered) / base),
                ]
            )
        print(table(["variant", "min", "median", "p90", "median ÷ first"], rows))
        print()
        print(
            f"of which encoding the {BATCH} keys (CPU only, best of many): {fmt_time(encode_ns)}. "
            f"For comparison, rewriting all {many:,} keys (a fold, fsync included) took "
            f"{fold_seconds * 1e3:,.0f} ms: what every save would cost without the journal."
        )
        print()
        append_ratio = median(samples[names[1]]) / base
        del many_keys

        # -- reads ------------------------------------------------------------------------
        kinds: dict[str, Callable[[int], Key]] = {
            "str (URL, ~60 chars)": url,
            "int (> 10**12)": int_key,
        }
        layouts: dict[str, int | None] = {
            "folded": None,
            "records of 100 keys": 100,
            "records of 10 keys": 10,
        }
        read_rows: list[list[object]] = []
        memory_rows: list[list[object]] = []
        slowest_ok = 0.0
        for kind, make in kinds.items():
            keys: list[Key] = [make(n) for n in range(many)]
            for layout, per_record in layouts.items():
                path = directory / f"read-{len(read_rows)}.keys-0"
                length = write_journal(path, keys, per_record)
                seconds, records = read_seconds(path, length, read_repeats)
                if per_record is None or per_record >= 100:
                    slowest_ok = max(slowest_ok, seconds)
                read_rows.append(
                    [
                        kind,
                        layout,
                        f"{records:,}",
                        f"{length / len(keys):.1f}",
                        fmt_time(seconds * 1e9),
                        fmt_time(seconds * 1e9 / len(keys)),
                    ]
                )
                if per_record != 10:
                    held, peak = memory_per_key(path, length, len(keys))
                    rss = rss_per_key(path, length)
                    memory_rows.append([kind, layout, f"{held:.0f} B", f"{peak:.0f} B", rss])
                path.unlink()
            del keys

    print(f"### Reading {many:,} keys (best of {read_repeats}, garbage collector on)")
    print()
    print(
        table(
            ["keys", "journal", "records", "bytes on disk per key", "read", "per key"],
            read_rows,
        )
    )
    print()
    print(f"### Memory of the loaded keys, {many:,} of them")
    print()
    print(
        "tracemalloc counts what Python allocates (the set, the keys; peak: during the "
        "read); the last column is the growth of the resident memory of a fresh "
        "interpreter that loads the journal and keeps the keys (allocator overhead included)."
    )
    print()
    print(
        table(
            [
                "keys",
                "journal",
                "held per key (the set)",
                "peak per key while reading",
                "RSS growth per key, fresh process",
            ],
            memory_rows,
        )
    )
    print()
    print_load_at_end()
    print(
        target_line(
            "append",
            append_ratio <= APPEND_LIMIT,
            f"an append of {BATCH} keys with {many:,} done = {append_ratio:.3f} x one with "
            f"{DONE_FEW:,} done (medians); limit {APPEND_LIMIT} x",
        )
    )
    print(
        target_line(
            "read",
            slowest_ok < READ_LIMIT_S,
            f"slowest read of {many:,} keys, folded or in records of 100: "
            f"{slowest_ok:.2f} s; limit {READ_LIMIT_S} s",
        )
    )


def _ns(function: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - start


if __name__ == "__main__":
    main()
