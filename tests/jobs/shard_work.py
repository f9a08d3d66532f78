"""The work of a sharded job on a Dask cluster, for tests/test_dask.py and the benchmark.

`LoggedWork` is picklable (a frozen dataclass of paths and numbers): the cluster's worker
processes import this module as ``jobs.shard_work`` (a spawned worker gets the test
process's ``sys.path``, which holds ``tests/``). For each item of a shard it appends
``done <item> <pid>`` to the effects log and fsyncs it, through an O_APPEND descriptor of
its own, so each line is one write, whole, in the order the writes happened.

The gates: the first run to reach an item of `gate_items` takes its gate (creates
``<gates>/<item>.taken``, O_EXCL), writes its pid to the FIFO ``<gates>/<item>`` (which the
test holds open for reading) and waits there to be killed; a later run finds the gate
taken and goes on. The kill then lands in a body, after its effect and before the loop
counts it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

from resumable import NPolicy, Resumable, Shard, StateLockedError

# How long a gated run waits to be killed before it fails the job instead of hanging.
KILL_DEADLINE = 60.0


@dataclass(frozen=True)
class LoggedWork:
    """Run one shard with ``NPolicy(every)``, logging each item's effect."""

    log: str
    every: int = 10
    gates: str | None = None
    gate_items: frozenset[int] = frozenset()
    fail_at: int = -1  # an item whose body always raises ValueError
    # How long to wait for a lease a dead run left on object storage (docs/distributed.md's
    # recipe): a run refused with StateLockedError tries again every second until then.
    lease_patience: float = 0.0

    def __call__(self, part: Shard[int]) -> tuple[int, int]:
        """The shard's index and how many items it has."""
        deadline = time.monotonic() + self.lease_patience
        while True:
            try:
                return self._run(part)
            except StateLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)  # the recipe's pause while the lease lapses

    def _run(self, part: Shard[int]) -> tuple[int, int]:
        log = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with Resumable(part.state, policy=NPolicy(self.every), signals=()) as r:
                for item in r.iterate(part.items):
                    if item == self.fail_at:
                        raise ValueError(f"item {item} fails on every run")
                    os.write(log, f"done {item} {os.getpid()}\n".encode())
                    os.fsync(log)
                    if item in self.gate_items:
                        self._wait_to_be_killed(item)
        finally:
            os.close(log)
        return part.index, len(part.items)

    def _wait_to_be_killed(self, item: int) -> None:
        assert self.gates is not None
        gate = os.path.join(self.gates, str(item))
        try:
            os.close(os.open(gate + ".taken", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return  # a later run: the kill was of an earlier one
        with contextlib.suppress(OSError), open(gate, "w") as fifo:
            fifo.write(f"{os.getpid()}\n")
        threading.Event().wait(KILL_DEADLINE)
        raise RuntimeError(f"worker {os.getpid()} waited at the gate and was not killed")


def first_item(part: Shard[str]) -> str:
    """The first item of a shard: a task whose result says which shard it ran."""
    return part.items[0]
