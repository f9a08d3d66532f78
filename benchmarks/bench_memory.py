"""What a job keeps: the state file's size and the process's peak memory, against n.

The state file records a position, so after 10,000,000 items it should differ from the
one after 10 items only by the digits of that number. The loop holds no per-item data,
so the peak resident memory of a process that loops over ``range(n)`` should not grow
with n. Each measurement runs in a fresh interpreter, so that peaks do not carry over
(see `_timing.run_python` for how); the plain loop's interpreter imports resumable too,
so both hold the same modules.

Run: ``python benchmarks/bench_memory.py [--quick]``
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _timing import (
    parse_args,
    print_header,
    print_load_at_end,
    run_python,
    table,
    target_line,
    verdict,
)

GROWTH_LIMIT_KIB = 256  # peak growth beyond the plain loop's, from the smaller n to the larger
# "generator" is resumable over a generator of range(n): the other kind of input feed.
KINDS = ("plain", "resumable", "generator")

CHILD = """
import os, resource, sys
import resumable

kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "plain":
    for _ in range(n):
        pass
    size = 0
else:
    items = range(n) if kind == "resumable" else (i for i in range(n))
    with resumable.Resumable(path) as r:
        for _ in r.iterate(items):
            pass
    size = os.path.getsize(path)
hwm = 0
if os.path.exists("/proc/self/status"):  # Linux: the peak of this process's own memory
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm, size)
"""


@dataclass(frozen=True)
class Child:
    """What one fresh interpreter reported."""

    maxrss_kib: int  # ru_maxrss: KiB on Linux
    hwm_kib: int  # VmHWM from /proc/self/status; 0 where there is none
    state_size: int
    state: bytes


def measure(kind: str, n: int, directory: Path, tag: str) -> Child:
    state = directory / f"{kind}-{n}-{tag}.state"
    output = run_python(CHILD, kind, str(n), str(state))
    maxrss, hwm, size = (int(field) for field in output.split())
    return Child(maxrss, hwm, size, state.read_bytes() if kind != "plain" else b"")


def comparable(content: bytes) -> dict[str, Any]:
    """A state document without what differs between any two runs: the position, the
    record of the input (range(n) is another input for each n: its length, and the
    fingerprint of its first min(n, 16) items, fixed in size), the timestamps and the
    checksum."""
    document: dict[str, Any] = json.loads(content)
    for key in ("created_at", "saved_at", "checksum"):
        document.pop(key)
    document["progress"].pop("position")
    document["progress"].pop("input", None)
    return document


def main() -> None:
    args = parse_args(__doc__ or "")
    small, large = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    sizes_n = (10, small, large)
    repeats = 2 if args.quick else 5
    print_header("bench_memory: state file size and peak memory against n")

    children: dict[tuple[str, int], list[Child]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for repeat in range(repeats):  # interleaved: every kind and n once per round
            for kind in KINDS:
                for n in sizes_n:
                    child = measure(kind, n, directory, str(repeat))
                    children.setdefault((kind, n), []).append(child)

    state = {n: children["resumable", n][-1] for n in sizes_n}
    print("### State file after a finished loop over range(n)")
    print()
    print(
        table(
            ["n", "state file bytes", "digits of n"],
            [[f"{n:,}", f"{state[n].state_size:,}", len(str(n))] for n in sizes_n],
        )
    )
    print()
    for n in (10, large):
        print(f"after {n:,} items: {state[n].state.decode()}")
    print()
    size_growth = state[large].state_size - state[10].state_size
    # The position, and the input's recorded length: both are n here.
    digit_growth = 2 * (len(str(large)) - len(str(10)))
    same_otherwise = comparable(state[10].state) == comparable(state[large].state)
    print(
        "apart from the position, the timestamps and the checksum, the two files hold "
        f"{'the same' if same_otherwise else 'DIFFERENT'} data"
    )
    print()

    def maxrss(kind: str, n: int) -> int:
        return int(statistics.median(child.maxrss_kib for child in children[kind, n]))

    def hwm(kind: str, n: int) -> int:
        return int(statistics.median(child.hwm_kib for child in children[kind, n]))

    print(f"### Peak resident memory, median of {repeats} fresh processes each")
    print()
    rows = []
    for n in sizes_n:
        rows.append(
            [
                f"{n:,}",
                f"{maxrss('plain', n):,} KiB",
                f"{maxrss('resumable', n):,} KiB",
                f"{maxrss('resumable', n) - maxrss('plain', n):+,} KiB",
                f"{maxrss('generator', n):,} KiB",
                f"{hwm('plain', n):,} / {hwm('resumable', n):,} / {hwm('generator', n):,}",
            ]
        )
    print(
        table(
            [
                "n",
                "plain loop, range(n)",
                "resumable, range(n)",
                "resumable - plain",
                "resumable, generator",
                "VmHWM KiB (plain / resumable / generator)",
            ],
            rows,
        )
    )
    print()
    print("ru_maxrss columns, except the last (VmHWM, the kernel's own peak of the process).")
    ours_growth = maxrss("resumable", large) - maxrss("resumable", small)
    plain_growth = maxrss("plain", large) - maxrss("plain", small)
    generator_growth = maxrss("generator", large) - maxrss("generator", small)
    extra = ours_growth - plain_growth
    print(
        f"from n = {small:,} to n = {large:,}: resumable {ours_growth:+,} KiB, plain "
        f"{plain_growth:+,} KiB, difference {extra:+,} KiB (allowed: {GROWTH_LIMIT_KIB} KiB "
        f"of noise) {verdict(extra <= GROWTH_LIMIT_KIB)}; resumable over a generator "
        f"{generator_growth:+,} KiB"
    )
    print()
    print_load_at_end()
    print(
        target_line(
            "4a",
            size_growth == digit_growth and same_otherwise,
            f"state file {state[10].state_size} bytes after 10 items, "
            f"{state[large].state_size} after {large:,}: {size_growth:+} bytes, the digits "
            f"of the position and of the input's length {digit_growth:+}; the rest "
            f"{'the same' if same_otherwise else 'differs'}",
        )
    )
    print(
        target_line(
            "4b",
            extra <= GROWTH_LIMIT_KIB,
            f"peak RSS (ru_maxrss) growth from n = {small:,} to {large:,}: resumable "
            f"{ours_growth:+,} KiB, plain loop {plain_growth:+,} KiB; limit: "
            f"{GROWTH_LIMIT_KIB} KiB more than the plain loop's",
        )
    )


if __name__ == "__main__":
    main()
