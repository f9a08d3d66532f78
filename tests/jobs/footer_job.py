"""A job with a header, one JSON line per item and a footer in four writes, in lockstep
with the test, for kill -9 campaigns over the code before, in and after the loop.

    python footer_job.py STATE OUT --items N

After each write it prints one flushed line (``header``, ``half <i>``, ``item <i>``,
``footer <k>``) and waits for a line on stdin, so the test kills it at a step it chose;
with stdin closed it runs on to its end. ``done <position> <finished>`` after the with
block. Saves with NPolicy(3); the footer's writes reach the file in the middle of the
footer (the second is longer than the sink's buffer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import resumable


def step(name: str) -> None:
    """Say where the job is, and wait for the test (or for stdin's end)."""
    print(name, flush=True)
    sys.stdin.readline()


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parsed = parser.parse_args()
    with resumable.Resumable(parsed.state, policy=resumable.NPolicy(3)) as job:
        out = job.sink(parsed.out)
        if out.length == 0:
            out.write("header\n")
            step("header")
        for item in job.iterate(range(parsed.items)):
            out.write(f"{item}:")
            step(f"half {item}")
            out.write_json({"item": item, "pad": "x" * (item * 397 % 3000)})
            step(f"item {item}")
        for part in range(4):
            out.write(f"footer {part} {'f' * (part * 5000)}\n")
            step(f"footer {part}")
    print(f"done {job.position} {job.finished}", flush=True)


if __name__ == "__main__":
    main()
