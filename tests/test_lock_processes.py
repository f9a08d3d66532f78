"""Two processes on one job: the second is refused at once, and kill -9 frees the lock.

The holder is tests/jobs/stepped_job.py, blocked inside an item body until the test sends
it a line, so it provably holds the lock while the second process
(tests/jobs/open_probe.py) tries to open the job. Since the holder cannot move on without
the test, a probe that returns at all did not wait for the lock.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from jobs.harness import Child, Job


def probe(job: Job) -> dict[str, Any]:
    """Run a second process that tries to open `job` once; what it reported."""
    with job.probe() as child:
        result = child.finish()
    assert result.returncode == 0, child.describe("the probe failed")
    assert len(result.stdout) == 1, child.describe("the probe should print one line")
    outcome: dict[str, Any] = json.loads(result.stdout[0])
    return outcome


def hold(child: Child, items: int) -> None:
    """Let the stepped holder finish `items` items, then leave it waiting in the next one."""
    child.expect("ready 0 1")
    for item in range(items):
        child.expect(f"start {item}")
        child.send("go")
        child.expect(f"end {item}")
    child.expect(f"start {items}")


def test_second_process_is_refused_at_once_with_the_holders_pid(tmp_path: Path) -> None:
    """While one process runs the job, a second gets StateLockedError without waiting; the
    error's pid and message name the holder."""
    job = Job(tmp_path)
    with job.stepped("--every", "1") as holder:
        hold(holder, 2)
        outcome = probe(job)
        holder.ping()  # the holder still waits in item 2's body: it never let go
        assert outcome["opened"] is False, outcome
        assert outcome["error"] == "StateLockedError"
        assert outcome["holder"] == holder.pid
        assert f"process {holder.pid}" in outcome["message"]


def test_refused_second_process_leaves_the_holders_run_intact(tmp_path: Path) -> None:
    """After refusing a second process, the holder runs on and finishes the job normally."""
    job = Job(tmp_path)
    with job.stepped("--items", "4", "--every", "1") as holder:
        hold(holder, 2)
        assert probe(job)["opened"] is False
        holder.send("go")
        holder.expect("end 2")
        holder.expect("start 3")
        holder.send("go")
        holder.expect("end 3")
        holder.expect("done 4 True")
        result = holder.finish()
    assert result.returncode == 0
    assert result.stderr == ""
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished, snapshot.runs) == (4, True, 1)
    assert job.effects_log() == [0, 1, 2, 3]


def test_kill9_of_the_holder_frees_the_lock_at_once(tmp_path: Path) -> None:
    """Once the holder is killed with SIGKILL, a new run opens the job at once, at the
    position the holder saved, though the lock file is still on disk."""
    job = Job(tmp_path)
    with job.stepped("--every", "1") as holder:
        hold(holder, 3)
        assert probe(job)["opened"] is False
        result = holder.kill9()
    assert result.returncode == -signal.SIGKILL
    assert job.lock_file.exists()
    assert job.lock_is_free()
    assert probe(job) == {"opened": True, "position": 3}


def test_a_run_whose_lock_file_was_deleted_refuses_its_next_save(tmp_path: Path) -> None:
    """Deleting the lock file of a running job makes its next save fail with
    StateLockedError, writing nothing, so that a second run could not be overwritten."""
    job = Job(tmp_path)
    with job.stepped("--every", "1") as holder:
        hold(holder, 2)
        job.lock_file.unlink()
        holder.send("go")
        holder.expect("end 2")  # the body ran; its save is refused
        result = holder.finish()
    assert result.returncode == 1
    assert result.stderr_lines[-1] == (
        f"resumable.StateLockedError: {job.state}: its lock file {job.lock_file} was "
        f"deleted while this run (pid {holder.pid}) held it, so a second run of the job may be "
        "running. The save was refused, so as not to overwrite that run's progress; items "
        "finished since the last save will run again. See `resumable status` for the job, "
        "let any other run finish, then run again. Never delete a lock file while its run "
        "holds it."
    )
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.runs) == (2, 1)
    assert job.temp_files() == []


def test_a_second_run_started_after_the_lock_file_was_deleted_keeps_the_job(
    tmp_path: Path,
) -> None:
    """Once the lock file is deleted, a second run can start; the first refuses its next
    save, naming the second, which then finishes the job from the last save."""
    job = Job(tmp_path)
    with job.stepped("--every", "1") as first:
        hold(first, 2)
        job.lock_file.unlink()
        with job.stepped("--every", "1") as second:
            second.expect("ready 2 2")
            first.send("go")
            first.expect("end 2")
            refused = first.finish()
            assert refused.returncode == 1
            assert (
                f"its lock file {job.lock_file} was replaced by another file (written by "
                f"process {second.pid}) while this run (pid {first.pid}) held it"
            ) in refused.stderr
            assert job.snapshot().position == 2  # the first run wrote nothing
            for item in range(2, 10):
                second.expect(f"start {item}")
                second.send("go")
                second.expect(f"end {item}")
            second.expect("done 10 True")
            assert second.finish().returncode == 0
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished, snapshot.runs) == (10, True, 2)
    assert job.effects_log() == [0, 1, 2, *range(2, 10)]  # item 2 ran in both runs
