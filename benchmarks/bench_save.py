"""One durable save, ``r.save()``, against the bare system calls such a save needs.

The bare sequence writes the same bytes: os.open a temp file, os.write, os.fsync, os.close,
os.replace over the target, then open, fsync and close the directory. resumable also keeps
the previous file as ``<path>.bak`` (the old backup unlinked, then a hard link made before
the replace) and serialises
the state; a third variant adds that link to the bare calls, so the table shows what the
backup costs apart from Python. All variants write in the same directory, interleaved,
each timed call by call.

Run: ``python benchmarks/bench_save.py [--quick]``
"""

from __future__ import annotations

import contextlib
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
    median,
    parse_args,
    print_header,
    print_load_at_end,
    table,
    target_line,
)

from resumable import Resumable
from resumable._store import document as state_document
from resumable._store import durable
from resumable._store.document import StateDocument

LIMIT = 1.25  # ours at most this times the bare calls, by the medians
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
        with Resumable(state_path, policy=None) as r:
            r.state = SMALL_STATE
            r.save()
            data = state_path.read_bytes()
            print(f"state file: {len(data)} bytes, {repeats} saves per variant, interleaved.")
            print()

            bare_target = directory / "bare.state"
            linked_target = directory / "linked.state"
            durable_target = directory / "durable.state"
            for target in (bare_target, linked_target, durable_target):
                target.write_bytes(data)
            variants: dict[str, Timer] = {
                "r.save()": call_timer(r.save),
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
    for name, values in samples.items():
        ordered = sorted(values)
        rows.append(
            [
                name,
                fmt_time(ordered[0]),
                fmt_time(median(values)),
                fmt_time(ordered[int(len(ordered) * 0.9)]),
                fmt_ratio(median(values) / bare),
            ]
        )
    print(f"### One save, {repeats} interleaved repeats")
    print()
    print(table(["variant", "min", "median", "p90", "median ÷ bare calls"], rows))
    print()
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
    print_load_at_end()
    ratio = ours / bare
    print(
        target_line(
            "2",
            ratio <= LIMIT,
            f"r.save() median {fmt_time(ours)} = {ratio:.3f} x the bare calls' "
            f"{fmt_time(bare)}; limit {LIMIT} x",
        )
    )


if __name__ == "__main__":
    main()
