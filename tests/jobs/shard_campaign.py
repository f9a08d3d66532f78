"""The kill -9 campaign of a sharded job on an engine (tests/test_dask.py, tests/test_ray.py).

`kill_at_gates` runs the job (tests/jobs/shard_work.py's `LoggedWork`) on the engine in a
thread and kills with SIGKILL each worker that reaches a gate, as it reaches it: the test
reads the worker's pid from the gate's FIFO, so the kill lands in a body the test knows of,
and no sleep stands in for the wait. `check_redone_within_the_bound` reads the effects log.

The bound per kill, and why it holds: the killed run's bodies that its state does not
count are the items to redo. ``NPolicy(n)`` saves as soon as n items are counted since the
last save, before the next body starts, so at most n - 1 counted items wait for a save,
plus the body the kill landed in: at most n items are done twice per kill, all of them in
the killed worker's shard, and nothing is lost.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from resumable import Shard, inspect

from jobs.harness import TIMEOUT
from jobs.shard_work import LoggedWork

EVERY = 10  # NPolicy(EVERY)


def logged(log: Path) -> list[tuple[int, int]]:
    """The effects log's lines, as (item, pid)."""
    if not log.exists():
        return []
    lines = (line.split() for line in log.read_text().splitlines())
    return [(int(item), int(pid)) for _, item, pid in lines]


def kill_at_gates(
    run: Callable[[LoggedWork], list[tuple[int, int]]],
    tmp_path: Path,
    parts: list[Shard[int]],
    gate_items: list[int],
    is_worker: Callable[[int], bool],
    lease_patience: float = 0.0,
) -> tuple[list[tuple[int, int]], list[int]]:
    """Run the job (``run(work)`` on the engine), kill with SIGKILL the worker at each gate
    as it reaches it; return the effects log as (item, pid) and the pids killed. Checks
    that the job completed, every shard finished."""
    gates = tmp_path / "gates"
    gates.mkdir()
    fifos = {}
    for item in gate_items:
        os.mkfifo(gates / str(item))
        fifos[os.open(gates / str(item), os.O_RDONLY | os.O_NONBLOCK)] = item
    log = tmp_path / "effects.log"
    work = LoggedWork(
        str(log),
        every=EVERY,
        gates=str(gates),
        gate_items=frozenset(gate_items),
        lease_patience=lease_patience,
    )
    killed: list[int] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(run, work)
            waiting = set(fifos)
            while waiting:
                ready, _, _ = select.select(list(waiting), [], [], TIMEOUT)
                assert ready, f"no worker reached the gates of items {[fifos[f] for f in waiting]}"
                for fifo in ready:
                    waiting.discard(fifo)
                    pid = int(os.read(fifo, 64).split()[0])
                    assert is_worker(pid), "the gate's pid is no worker's"
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            results = job.result(timeout=120 + lease_patience)
    finally:
        for fifo in fifos:
            os.close(fifo)
    assert results == [(part.index, len(part.items)) for part in parts]
    for part in parts:
        snapshot = inspect(part.state)
        assert snapshot.finished
        assert snapshot.position == len(part.items)
    return logged(log), killed


def check_redone_within_the_bound(
    lines: list[tuple[int, int]], items: list[int], killed: list[int], gate_items: list[int]
) -> set[int]:
    """Every item's effect is logged; each kill leaves at most EVERY items to redo, all in
    the shard it killed, the gated body among them. Returns the items redone."""
    runs: dict[int, list[int]] = {}
    for item, pid in lines:
        runs.setdefault(item, []).append(pid)
    assert set(runs) == set(items), "an item's effect was never logged"
    redone = {item for item, pids in runs.items() if len(pids) > 1}
    assert set(gate_items) <= redone, "the body a kill landed in was counted done"
    for pid in killed:
        left = {item for item in redone if pid in runs[item][:-1]}
        assert len(left) <= EVERY, f"a kill left {len(left)} items to redo with NPolicy({EVERY})"
    for item in redone:
        # Every run of an item but its last was cut short by a kill.
        assert all(pid in killed for pid in runs[item][:-1]), f"item {item} redone unkilled"
    return redone
