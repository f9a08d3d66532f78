"""r.map in a process pool a real child job makes: signals to the job and to its whole
process group, and what the pool's worker processes do when the job dies.

The job is tests/jobs/map_job.py with ``--processes METHOD``: a ``ProcessPoolExecutor(2)``
made with that start method, passed as ``executor=``, and ``NPolicy(1000)``, so only a stop
saves. It runs in a session of its own: its process group is the job and its pool, as a
terminal's foreground group is. Its calls log ``called <i>`` and its bodies ``done <i>``,
each with an fsync (jobs/map_log.py), so the log says which calls ran to their end.

Where the calls are when a signal comes is known, not guessed. With ``window=8`` the loop
submits items 0 to 7 before it hands out its first result, so the line ``end 1`` (the body
of item 1) proves all eight were submitted. Items 0 and 2 have a gate (a FIFO), where their
calls wait, after a ``call <i>`` line, until the test opens it: once ``call 0``, ``call 2``
and ``end 1`` have come, both workers wait at a gate and items 3 to 7 wait in the pool's
queue, and nothing past item 7 can be submitted while item 0 holds the watermark.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from jobs.harness import Child, Job, running_in_group, wait_until_group_ended
from jobs.map_log import counted, log_lines, log_of

# "fork": the default start method on Linux up to Python 3.13; "forkserver": from 3.14.
METHODS = ["fork", "forkserver"]
ITEMS = 40
HELD = (0, 2)  # the items whose calls wait at a gate
QUEUED = frozenset(range(3, 8))  # submitted behind them, waiting for a worker


class Gates:
    """FIFOs where the calls of chosen items wait until the test opens them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self._held_open: list[int] = []

    def hold(self, *items: int) -> None:
        """Make the gates: calls for `items` will wait there."""
        for item in items:
            os.mkfifo(self.directory / str(item))

    def release(self, *items: int) -> None:
        """Open the gates of `items` for good: the calls waiting there go on, and later
        calls pass (a reader's open returns at once while a writer holds the FIFO)."""
        for item in items:
            # O_RDWR does not wait for a reader, as O_WRONLY would.
            self._held_open.append(os.open(self.directory / str(item), os.O_RDWR))

    def close(self) -> None:
        """Close the test's ends of the gates."""
        for fd in self._held_open:
            os.close(fd)


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    made = Gates(tmp_path / "gates")
    try:
        yield made
    finally:
        made.close()


def start_job(job: Job, gates: Gates, method: str, *options: str) -> Child:
    """map_job.py over range(ITEMS) in a process pool of 2, in a session of its own."""
    return Child(
        "map_job.py",
        job.state,
        log_of(job),
        *("--items", str(ITEMS), "--every", "1000", "--workers", "2", "--window", "8"),
        *("--gates", str(gates.directory), "--processes", method, *options),
        new_session=True,
    )


def read_until(child: Child, *expected: str) -> None:
    """Read the child's lines until each of `expected` has come, in any order."""
    waiting = set(expected) - set(child.seen)
    while waiting:
        line = child.read_line()
        assert line is not None, child.describe(f"ended before {sorted(waiting)}")
        waiting.discard(line)


def calls_wait_at_the_gates(child: Child) -> None:
    """Return once both workers wait at the gates of HELD and QUEUED wait behind them."""
    read_until(child, *(f"call {item}" for item in HELD), "end 1")


def read_stopped(child: Child) -> int:
    """Read until the job's ``stopped <position>`` line; the position."""
    while not (line := child.read_line() or "").startswith("stopped "):
        assert line, child.describe("ended without a 'stopped' line")
    return int(line.split()[1])


def handed(child: Child) -> list[int]:
    """The items whose results the child's body got, in order."""
    return [int(line.split()[1]) for line in child.seen if line.startswith("end ")]


def run_to_the_end(job: Job, gates: Gates, method: str) -> None:
    """Run the job again, every gate open, to its end."""
    gates.release(*(int(gate.name) for gate in gates.directory.iterdir()))
    with start_job(job, gates, method) as child:
        result = child.finish()
    assert result.returncode == 0, child.describe("the run to the end")
    assert child.seen[-1] == f"done {ITEMS} True", child.describe("the run to the end")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("signum", "to_the_group"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGINT", "SIGTERM", "ctrl+c at a terminal, workers ignoring it"],
)
def test_one_signal_lets_the_calls_in_the_pool_finish_and_no_call_runs_twice(
    tmp_path: Path, gates: Gates, method: str, signum: int, to_the_group: bool
) -> None:
    """A signal to the job while two calls wait in the workers and five in the pool's
    queue: all seven finish, their results go to the body, the progress is saved, and the
    job ends by the signal. The next run calls only the rest: no call runs twice. Sent to
    the whole group (what ctrl+c at a terminal does), the same, when the workers ignore
    SIGINT (the pool's initializer: docs/concurrent.md)."""
    job = Job(tmp_path)
    gates.hold(*HELD)
    options = ["--ignore-ctrl-c"] if to_the_group else []
    with start_job(job, gates, method, *options) as child:
        calls_wait_at_the_gates(child)
        if to_the_group:
            os.killpg(child.pid, signum)
            child.wait_not_pending(signum)
        else:
            child.send_signal(signum)
        gates.release(*HELD)
        result = child.finish()
    assert result.returncode == -signum, child.describe("stopped")
    assert sorted(handed(child)) == list(range(8)), child.describe("the calls in flight")
    assert job.snapshot().position == 8
    first_run = log_lines(job)
    assert counted(first_run, "called") == counted(first_run, "done") == Counter(range(8))
    run_to_the_end(job, gates, method)
    lines = log_lines(job)
    assert counted(lines, "called") == Counter(range(ITEMS))
    assert counted(lines, "done") == Counter(range(ITEMS))


@pytest.mark.parametrize("method", METHODS)
def test_a_second_ctrl_c_stops_at_once_while_a_call_runs_in_a_worker(
    tmp_path: Path, gates: Gates, method: str
) -> None:
    """After the first ctrl+c the calls that end go to the body; a second one stops the loop
    while item 0's call still waits in its worker. Item 0 is not done: its call ends in the
    background (the pool's shutdown waits for it) and runs again on the next run."""
    job = Job(tmp_path)
    gates.hold(*HELD)
    with start_job(job, gates, method) as child:
        calls_wait_at_the_gates(child)
        child.send_signal(signal.SIGINT)
        gates.release(2)
        # Bodies ran after the first signal, so its handler has run: the next one is second.
        read_until(child, *(f"end {item}" for item in {2} | QUEUED))
        child.send_signal(signal.SIGINT)
        position = read_stopped(child)
        gates.release(0)
        result = child.finish()
    assert result.returncode == -signal.SIGINT, child.describe("stopped")
    bodies = handed(child)
    assert sorted(bodies) == list(range(1, 8))
    # Seven done; or six, if the second ctrl+c came as the last body ended, before the loop
    # counted it: that item was still in the body, and is not done either.
    redone = Counter([0]) + Counter(bodies[-1:] if position == 6 else [])
    assert position in (6, 7), child.describe("stopped")
    assert job.snapshot().position == position
    run_to_the_end(job, gates, method)
    lines = log_lines(job)
    assert counted(lines, "called") == Counter(range(ITEMS)) + redone
    assert counted(lines, "done") == Counter(range(ITEMS)) + redone - Counter([0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_workers_of_a_pool_outlive_a_job_that_died_by_a_signal_and_hold_no_lock(
    tmp_path: Path, gates: Gates, method: str, signum: int
) -> None:
    """A worker of a process pool waits for its next call forever: when the job dies by
    kill -9, or by SIGTERM after its stop (the pool is never shut down), the workers stay
    (``--orphans``: they do not watch the job). They hold no lock: the next run starts at
    once and runs to its end while they are still there."""
    job = Job(tmp_path)
    gates.hold(30)
    with start_job(job, gates, method, "--orphans") as child, ending_the_group(child.pid):
        read_until(child, "call 30")  # the job cannot end before the signal
        workers = {int(line.split()[1]) for line in child.seen if line.startswith("worker ")}
        child.send_signal(signum)
        gates.release(30)  # after SIGTERM, the stop waits for the calls in flight
        assert child.process.wait() == -signum
        assert workers, child.describe("no worker started")
        left = set(running_in_group(child.pid))
        assert workers <= left, child.describe(f"workers {sorted(workers)}; running: {left}")
        assert job.lock_is_free()
        run_to_the_end(job, gates, method)
        # Still there after a whole run: CPython's workers do not notice their job died.
        assert workers <= set(running_in_group(child.pid)), child.describe("workers ended")


@contextmanager
def ending_the_group(pgid: int) -> Iterator[None]:
    """On the way out, pass or fail, kill what is left of process group `pgid` (the workers
    of a job started in a session of its own) and wait until it has ended."""
    try:
        yield
    finally:
        if running_in_group(pgid):
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        wait_until_group_ended(pgid)


# -- a signal to the whole process group: the workers get it too -------------------------


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_at_a_terminal_reaching_the_workers_stops_once_and_reruns_no_call_that_ended(
    tmp_path: Path, gates: Gates, method: str
) -> None:
    """ctrl+c to the whole group, the workers taking it too: the two calls at the gates are
    cut by a KeyboardInterrupt inside `fn` and are not done. The five queued calls then run
    in the same workers (each caught its KeyboardInterrupt) and end: as after any first
    ctrl+c, their results go to the body, and the loop stops with its own KeyboardInterrupt,
    not the workers'. No call that ran to its end runs again."""
    job = Job(tmp_path)
    gates.hold(*HELD)
    with start_job(job, gates, method) as child:
        calls_wait_at_the_gates(child)
        os.killpg(child.pid, signal.SIGINT)
        child.wait_not_pending(signal.SIGINT)
        result = child.finish()
    assert result.returncode == -signal.SIGINT, child.describe("stopped")
    assert "_RemoteTraceback" not in result.stderr, child.describe("the worker's exception")
    assert "During handling of the above exception" not in result.stderr, child.describe(
        "a second KeyboardInterrupt"
    )
    first_run = log_lines(job)
    assert counted(first_run, "called") == counted(first_run, "done"), child.describe(
        "calls that ended without their result going to the body"
    )
    assert sorted(handed(child)) == sorted({1} | QUEUED)
    run_to_the_end(job, gates, method)
    lines = log_lines(job)
    assert counted(lines, "called") == Counter(range(ITEMS))
    assert counted(lines, "done") == Counter(range(ITEMS))


@pytest.mark.parametrize("method", METHODS)
def test_sigterm_to_the_whole_group_records_no_call_as_failed(
    tmp_path: Path, gates: Gates, method: str
) -> None:
    """SIGTERM to the job and its workers (a service manager stopping the whole group): the
    workers die of it, and the broken pool fails every call in flight with
    BrokenProcessPool. That is the stop, not the items' failure: with on_error="record"
    none is recorded, none is done, and the next run calls each of them once."""
    job = Job(tmp_path)
    gates.hold(*HELD)
    with start_job(job, gates, method, "--record") as child:
        calls_wait_at_the_gates(child)
        os.killpg(child.pid, signal.SIGTERM)
        child.wait_not_pending(signal.SIGTERM)
        result = child.finish()
    assert result.returncode == -signal.SIGTERM, child.describe("stopped")
    snapshot = job.snapshot()
    assert snapshot.failed == (), child.describe(f"recorded failed: {snapshot.failed}")
    assert snapshot.position == 1
    run_to_the_end(job, gates, method)
    lines = log_lines(job)
    assert counted(lines, "called") == Counter(range(ITEMS))
    assert counted(lines, "done") == Counter(range(ITEMS))
