"""Processes forked inside the loop: they get the previous handlers, do not hold the job's
lock, and leave the job to the process that opened it.

The jobs are in tests/jobs/fork_job.py; they report through stdout lines and wait on stdin,
so the test knows where each process is without sleeping.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import resumable

from jobs.harness import TIMEOUT, Child, Job

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def fork_job(mode: str, job: Job) -> Child:
    """Start ``fork_job.py MODE`` on `job`."""
    return Child("fork_job.py", mode, job.state)


def opens(job: Job) -> int | resumable.StateLockedError:
    """Open `job` as a new run would: its position, or the refusal."""
    try:
        with resumable.Resumable(job.state, signals=()) as r:
            return r.position
    except resumable.StateLockedError as refused:
        return refused


def wait_until_gone(pid: int) -> None:
    """Poll /proc until process `pid` has ended (it is not our child: no waitpid)."""
    deadline = time.monotonic() + TIMEOUT
    while Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status").read_text(errors="replace")
        if "\nState:\tZ" in status:
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.001)


def test_a_fork_child_started_in_the_loop_has_the_previous_handlers_and_dies_by_sigterm(
    tmp_path: Path,
) -> None:
    """multiprocessing's Process.terminate() stops a "fork" child started inside the loop:
    the child has the handlers that were there before the job, not the job's."""
    job = Job(tmp_path)
    with fork_job("terminate", job) as parent:
        parent.expect("child handlers default_int_handler SIG_DFL")
        parent.expect(f"exitcode {-signal.SIGTERM}")
        result = parent.finish()
    assert (result.returncode, result.stderr) == (0, "")
    assert job.snapshot().position == 1


def test_a_fork_child_started_inside_nested_loops_has_the_handlers_from_before_every_job(
    tmp_path: Path,
) -> None:
    """With three jobs open at once, each installed over the one before, a fork child gets
    the handlers that were there before the outermost job, whatever order the jobs are
    undone in, and Process.terminate() stops it."""
    job = Job(tmp_path)
    with fork_job("nested", job) as parent:
        for _ in range(6):
            parent.expect("child handlers default_int_handler SIG_DFL")
            parent.expect(f"exitcode {-signal.SIGTERM}")
        result = parent.finish()
    assert (result.returncode, result.stderr) == (0, "")


def test_a_fork_child_neither_frees_the_jobs_lock_nor_keeps_it_after_the_parent_died(
    tmp_path: Path,
) -> None:
    """While the parent runs, its lock holds although the child closed its copy; once the
    parent is killed with SIGKILL and the child lives on, a new run opens the job."""
    job = Job(tmp_path)
    with fork_job("linger", job) as parent:
        line = parent.read_line() or ""
        assert line.startswith("lingering "), parent.describe(f"got {line!r}")
        child = int(line.split()[1])
        refused = opens(job)
        assert isinstance(refused, resumable.StateLockedError)
        assert refused.pid == parent.pid
        assert parent.kill9().returncode == -signal.SIGKILL
    try:
        os.kill(child, 0)  # the child still runs
        assert opens(job) == 1
    finally:
        os.kill(child, signal.SIGTERM)
    wait_until_gone(child)


def test_a_plain_fork_child_leaving_the_with_block_saves_nothing_and_keeps_the_parents_lock(
    tmp_path: Path,
) -> None:
    """An os.fork() child that falls through the with block leaves the job alone: no save
    of its own, the parent's lock still held; r.save() in the child raises UsageError."""
    job = Job(tmp_path)
    with fork_job("fall-through", job) as parent:
        parent.expect("child save: UsageError")
        parent.expect("child left the with block")
        parent.expect("child exited 0")
        assert not job.state.exists(), "the child saved the parent's job"
        assert not job.lock_is_free(), "the child released the parent's lock"
        parent.send("go")
        parent.expect("done 5 {}")
        result = parent.finish()
    assert (result.returncode, result.stderr) == (0, "")
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished, snapshot.state) == (5, True, {})
