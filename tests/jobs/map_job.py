"""A job that runs ``r.map`` in a pool of threads as fast as its saves allow, for kill -9.

    python map_job.py STATE LOG --items N --every K --workers T --window W
        [--ordered] [--keyed]

It maps over ``range(N)`` with ``NPolicy(K)``, ``workers=T``, ``window=W``, results as the
calls finish (``ordered=False``) unless ``--ordered``, progress by key (the item itself)
with ``--keyed``. The function appends ``called <i>`` to LOG and fsyncs it before it
returns; the body appends ``done <i>`` and fsyncs it, then prints ``end <i>``. Both go
through one O_APPEND descriptor, so each line is one write, whole, in the order the writes
happened. It prints one flushed line per event: ``ready <position> <runs>`` once inside the
with block; per result, ``saved <position>`` first when a save completed since the previous
result (the file then holds `position` items), then ``end <i>``; after the with block
``done <position> <finished>``.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import resumable


def cut_torn_line(path: Path, log: int) -> None:
    """Cut off a line the last run's kill tore: a write that crosses a page boundary can
    stop at it under SIGKILL. Its call never returned (its fsync never ran), so it is not
    a line of the log, and the next line must not be appended to it."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.ftruncate(log, data.rfind(b"\n") + 1)


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="policy NPolicy(EVERY)")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--ordered", action="store_true", help="results in input order")
    parser.add_argument("--keyed", action="store_true", help="map(..., key=int)")
    parsed = parser.parse_args()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

    log = os.open(parsed.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    cut_torn_line(parsed.log, log)

    def call(item: int) -> int:
        os.write(log, f"called {item}\n".encode())
        os.fsync(log)
        return item

    with resumable.Resumable(parsed.state, policy=resumable.NPolicy(parsed.every)) as job:
        print(f"ready {job.position} {job.runs}", flush=True)
        saves = job.saves
        results = job.map(
            call,
            range(parsed.items),
            workers=parsed.workers,
            window=parsed.window,
            ordered=parsed.ordered,
            key=int if parsed.keyed else None,
        )
        for item in results:
            if job.saves != saves:
                saves = job.saves
                print(f"saved {job.position}", flush=True)
            os.write(log, f"done {item}\n".encode())
            os.fsync(log)
            print(f"end {item}", flush=True)
    print(f"done {job.position} {job.finished}", flush=True)


if __name__ == "__main__":
    main()
