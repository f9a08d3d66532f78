"""Keyed progress against a model, over random runs: inputs that change, breaks,
exceptions, recorded failures, ctrl+c and crashes (a run dropped without its exit)."""

from __future__ import annotations

import gc
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import NPolicy, Resumable, inspect

UNIVERSE = [f"k{n}" for n in range(12)]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what a Resumable handles


class FailingError(Exception):
    """An item's body failed (recorded with on_error="record")."""


class StopError(Exception):
    """An exception that ends the loop (not recorded)."""


@dataclass(frozen=True)
class Run:
    items: list[str]
    end: str  # "exhausted", "break", "raise", "ctrl+c", "crash"
    at: int  # the index of the item where the run ends (unless exhausted)
    failing: frozenset[str]  # items whose body fails inside r.attempt()
    every: int  # NPolicy(every)


runs = st.builds(
    Run,
    items=st.lists(st.sampled_from(UNIVERSE), unique=True, max_size=12),
    end=st.sampled_from(["exhausted", "break", "raise", "ctrl+c", "crash"]),
    at=st.integers(0, 11),
    failing=st.frozensets(st.sampled_from(UNIVERSE), max_size=3),
    every=st.integers(1, 4),
)


ESCAPES = {"raise": StopError, "ctrl+c": KeyboardInterrupt}  # what ends the with block


def play(path: Path, run: Run, completed: set[str]) -> list[str]:
    """One run; returns the items it handed out. `completed` gets the items whose body
    ran to its end in this run."""
    handed: list[str] = []
    ended: list[str] = []  # the run's end, once it came (the input may run out first)
    job = Resumable(path, policy=NPolicy(run.every), quiet=True)
    if run.end == "crash":
        handlers = [signal.getsignal(signum) for signum in SIGNALS]
        job.__enter__()  # and no exit: the run ends as kill -9 would end it
        body(job, run, handed, completed, ended)  # if the input runs out first, after it
        # Dropped: its safety net frees the lock and the handlers, and saves nothing, as
        # the kernel frees a killed process's lock. Collected at once if need be: from
        # Python 3.12 on, a failure recorded by attempt() leaves a reference cycle.
        del job
        if [signal.getsignal(signum) for signum in SIGNALS] != handlers:
            gc.collect()
        assert [signal.getsignal(signum) for signum in SIGNALS] == handlers
        return handed
    escaped: BaseException | None = None
    try:
        with job:  # the real exit, handed whatever the body raised
            body(job, run, handed, completed, ended)
    except (StopError, KeyboardInterrupt) as error:
        escaped = error
    expected = ESCAPES.get(ended[0]) if ended else None
    assert (type(escaped) if escaped else None) is expected, (run, escaped)
    return handed


def body(
    job: Resumable, run: Run, handed: list[str], completed: set[str], ended: list[str]
) -> None:
    """The loop of one run, ended as `run` says."""
    for index, item in enumerate(job.iterate(run.items, key=str, on_error="record")):
        handed.append(item)
        if index == run.at and run.end != "exhausted":
            ended.append(run.end)
            if run.end == "break":
                break
            if run.end == "raise":
                raise StopError(item)
            if run.end == "ctrl+c":
                signal.raise_signal(signal.SIGINT)  # first signal: the item finishes
            if run.end == "crash":
                return  # no exit: `play` drops the job
        ran_to_the_end = False
        with job.attempt():
            if item in run.failing:
                raise FailingError(item)
            ran_to_the_end = True
        if ran_to_the_end:
            completed.add(item)


@settings(max_examples=60, deadline=None)
@given(st.lists(runs, min_size=1, max_size=6))
def test_keyed_progress_matches_the_model(plan: list[Run]) -> None:
    check(plan)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(st.lists(runs, min_size=1, max_size=10))
def test_keyed_progress_matches_the_model_in_long_runs(plan: list[Run]) -> None:
    check(plan)


def check(plan: list[Run]) -> None:
    """Play the runs of `plan` on one job; after each, compare the job with the model."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "job.state"
        completed: set[str] = set()  # bodies that ran to their end, over all runs
        saved_done: set[str | int] = set()  # what the state file committed at the last check
        for run in plan:
            completed_now: set[str] = set()
            handed = play(path, run, completed_now)
            completed |= completed_now
            # Never hands out an item already done as of this run's start.
            assert not set(handed) & saved_done, (run, handed, saved_done)
            if not path.exists():
                continue
            snapshot = inspect(path)
            done = skipped_by_a_next_run(path)
            # Saved progress never exceeds completed work.
            assert done <= completed, (done - completed, run)
            assert snapshot.position == len(done)
            if run.end != "crash":
                # After a graceful end, every completed item of this run is saved.
                assert completed_now <= done, (run, completed_now, done)
            saved_done = done


def skipped_by_a_next_run(path: Path) -> set[str | int]:
    """The keys a next run over `UNIVERSE` would skip as done, found by running it on a
    copy of the job's files (the run saves what it does: the job itself stays as it is).
    Failed items are all retried, however often they failed."""
    with tempfile.TemporaryDirectory() as directory:
        for file in path.parent.iterdir():
            shutil.copy2(file, directory)
        with Resumable(Path(directory) / path.name, signals=(), quiet=True) as r:
            handed = set(r.iterate(UNIVERSE, key=str, max_attempts=1000))
    return set[str | int](UNIVERSE) - handed
