"""``python -m resumable demo``: a slow job you can stop with ctrl+c and run again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from resumable._resumable import Resumable
from resumable._text import counted
from resumable.policies import NPolicy, TimePolicy


def run_demo(state_path: Path, items: int, delay: float, restart: bool) -> int:
    """Process `items` numbers, `delay` seconds each, keeping a running total in r.state."""
    with Resumable(state_path, policy=NPolicy(25) | TimePolicy(1), restart=restart) as r:
        if r.finished:
            print(
                f"This job already finished: {counted(r.position, 'item')}, total "
                f"{r.state.get('total')}. Run `python -m resumable demo --restart` to "
                "start over."
            )
            return 0
        if r.position:
            print(
                f"Resuming at item {r.position:,} of {items:,} (run {r.runs:,}), from {state_path}."
            )
        else:
            print(
                f"Starting a job of {counted(items, 'item')}, {delay:g} s each, its state in "
                f"{state_path}. "
                "Press ctrl+c to stop it."
            )
        for number in r.iterate(range(items)):
            time.sleep(delay)  # the "work"
            r.state["total"] = r.state.get("total", 0) + number * number
            _show(number + 1, items)
    expected = sum(n * n for n in range(items))
    verdict = "matches" if r.state["total"] == expected else "DOES NOT match"
    print(
        f"\nDone: {counted(items, 'item')} over {counted(r.runs, 'run')}. Sum of squares "
        f"{r.state['total']:,} "
        f"{verdict} an uninterrupted run. Run again to see a finished job."
    )
    return 0


def _show(done: int, total: int) -> None:
    if sys.stdout.isatty():
        sys.stdout.write(f"\r  item {done}/{total}")
        sys.stdout.flush()
    elif done % 50 == 0 or done == total:
        print(f"  item {done}/{total}", flush=True)
