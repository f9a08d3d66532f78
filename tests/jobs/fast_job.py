"""A job that runs its items as fast as its saves allow, for kill -9 and signal storms.

    python fast_job.py STATE EFFECTS --items N --every K [--keyed [--shuffle SEED]]
        [--fail-every F [--fail-first-run]]

It prints one flushed line per event: ``ready <position> <runs>`` once inside the with
block; per item, ``saved <i>`` first when a save completed since the previous item (the
file then holds position ``i``), then it appends ``<i>`` to the effects log (one O_APPEND
write) and prints ``end <i>``; after the with block ``done <position> <finished>``.
SIGINT, SIGTERM and SIGHUP start at Python's defaults. With ``--keyed`` progress is kept by
key (the item itself), and ``--shuffle SEED`` hands the items out in an order of its own.
With ``--fail-every F`` the items divisible by F print ``failed <i>`` and raise inside
``r.attempt()``, with ``on_error="record"``: recorded, never in the effects log; with
``--fail-first-run`` only in the job's first run, so that the next run's retries succeed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from pathlib import Path
from typing import Literal

import resumable


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", help="the state file, or the URL of a state object")
    parser.add_argument("effects", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="policy NPolicy(EVERY)")
    parser.add_argument("--keyed", action="store_true", help="iterate(..., key=int)")
    parser.add_argument("--shuffle", type=int, default=None, help="shuffle with this seed")
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        help="items divisible by this raise inside r.attempt(), recorded (on_error='record')",
    )
    parser.add_argument(
        "--fail-first-run", action="store_true", help="--fail-every in the first run only"
    )
    parsed = parser.parse_args()
    items, every = int(parsed.items), int(parsed.every)
    order = list(range(items))
    if parsed.shuffle is not None:
        random.Random(int(parsed.shuffle)).shuffle(order)
    key = int if parsed.keyed else None

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

    effects = os.open(parsed.effects, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with resumable.Resumable(parsed.state, policy=resumable.NPolicy(every)) as job:
        print(f"ready {job.position} {job.runs}", flush=True)
        saves = job.saves
        fail_every = int(parsed.fail_every)
        on_error: Literal["raise", "record"] = "record" if fail_every else "raise"
        if parsed.fail_first_run and job.runs > 1:
            fail_every = 0  # the failed items of the first run succeed when retried
        for item in job.iterate(order, key=key, on_error=on_error, max_attempts=1000):
            if job.saves != saves:
                saves = job.saves
                print(f"saved {item}", flush=True)
            with job.attempt():
                if fail_every and item % fail_every == 0:
                    print(f"failed {item}", flush=True)
                    raise ValueError(f"item {item} fails")
                os.write(effects, f"{item}\n".encode())
            print(f"end {item}", flush=True)
    print(f"done {job.position} {job.finished}", flush=True)


if __name__ == "__main__":
    main()
