"""Two processes on one job: the second is refused at once, and kill -9 frees the lock.

The holder is tests/jobs/stepped_job.py, blocked inside an item body until the test sends
it a line, so it provably holds the lock while the second process
(tests/jobs/open_probe.py) tries to open the job. Since the holder cannot move on without
the test, a probe that returns at all did not wait for the lock.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

_JOBS = str(Path(__file__).resolve().parent / "jobs")
if _JOBS not in sys.path:
    sys.path.insert(0, _JOBS)

from harness import Child, Job  # noqa: E402


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
