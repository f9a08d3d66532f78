"""A hostile review of the progress log (issue 18): each test here shows a promise of
docs/state-file.md, or a requirement of the issue, that the log does not keep yet.

Each is a strict xfail whose reason names the bug: it fails on the code as it is, and
the suite stays green; the fix turns it into a pass, and strict makes the suite say so.
The logs are written by a real child process killed with SIGKILL in an item's body (every
save before it returned), real files, real fsync.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resumable import NPolicy, Resumable, StateFileError, inspect
from resumable._store import document

from jobs.documents import LOG_HEADER, log_records
from jobs.harness import RESUMABLE_COMMAND, STRACE, TIMEOUT, child_env

# Saves after every item of range(10) and dies by SIGKILL in the body of item `stop`:
# position 1 is in the state file (the run's first save compacts), 2 to `stop` in the log.
KILLED_JOB = """
import os, signal, sys
from resumable import NPolicy, Resumable
with Resumable(sys.argv[1], policy=NPolicy(1)) as r:
    for item in r.iterate(range(10)):
        if item == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_at(state: Path, stop: int) -> None:
    """Run KILLED_JOB on `state` in a child that kill -9s itself in the body of `stop`."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_JOB, str(state), str(stop)],
        env=child_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def test_a_damaged_record_before_good_ones_is_reported_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    killed_at(state, 6)  # the log holds positions 2 to 6
    log = tmp_path / "job.state.log"
    data = bytearray(log.read_bytes())
    spans = log_records(bytes(data))
    assert len(spans) == 5
    start, end = spans[1]  # position 3's record; 4, 5 and 6 follow, whole and checked
    data[(start + LOG_HEADER.size + end) // 2] ^= 0x01  # one bit of its payload
    log.write_bytes(bytes(data))
    damaged = bytes(data)
    # No crash tears a record that whole records follow: damage, refused (this job's first
    # save kept no backup to fall back on), and the log left as it is.
    with (
        pytest.raises(StateFileError, match=r"job\.state\.log is damaged: the record at"),
        Resumable(state, policy=NPolicy(1)),
    ):
        pass
    assert log.read_bytes() == damaged, "the damaged log was changed"


def test_a_keyed_save_of_progress_flushes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[str] = []

    def spy(name: str, real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            flushes.append(name)
            real(fd)  # the real flush, to the real disk

        return flush

    with Resumable(tmp_path / "job.state", policy=NPolicy(1_000)) as r:
        for item in r.iterate([f"key-{n}" for n in range(6)], key=str):
            if item == "key-2":
                r.save()  # the run's first save: a compaction
            if item == "key-3":
                r.save()  # the first append: opens the log
            if item == "key-5":
                monkeypatch.setattr(os, "fsync", spy("fsync", os.fsync))
                monkeypatch.setattr(os, "fdatasync", spy("fdatasync", os.fdatasync))
                r.save()  # key-3 and key-4 done since: progress alone
                monkeypatch.undo()
    assert len(flushes) == 1, flushes


def test_a_rewrite_after_r_state_changed_checks_r_state_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[int] = []
    real = document.check_state

    def counted(state: dict[str, object]) -> None:
        checks.append(len(state))
        real(state)

    with Resumable(tmp_path / "job.state", policy=NPolicy(1_000)) as r:
        for item in r.iterate(range(4)):
            r.state["item"] = item
            if item == 1:
                r.save()  # the run's first save
            if item == 3:
                monkeypatch.setattr(document, "check_state", counted)
                r.save()  # r.state changed since: a rewrite
                monkeypatch.undo()
    assert len(checks) == 1, checks
    assert inspect(tmp_path / "job.state").state == {"item": 3}


@pytest.mark.strace
def test_a_reset_killed_before_it_moves_the_state_file_leaves_the_job_as_it_was(
    tmp_path: Path,
) -> None:
    assert STRACE is not None
    state = tmp_path / "job.state"
    killed_at(state, 6)  # the log holds positions 2 to 6
    assert inspect(state).position == 6
    # SIGKILL on entering the first rename that names the state file itself: the rename of
    # the state file aside (the backup's and the log's name other paths).
    command = [STRACE, "-f", "-qq", "-o", str(tmp_path / "strace.log"), "-P", str(state)]
    command += ["-e", "trace=rename,renameat,renameat2"]
    command += ["-e", "inject=rename,renameat,renameat2:signal=SIGKILL"]
    command += [sys.executable, "-c", RESUMABLE_COMMAND, "reset", "--yes", str(state)]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()  # strace dies as it did
    assert state.exists()  # killed before the state file moved: no reset happened
    assert inspect(state).position == 6


RESTARTED_JOB = """
import sys
from resumable import Resumable
with Resumable(sys.argv[1], restart=True) as r:
    r.save()
"""


def restart_killed_at(state: Path, path: Path, calls: str) -> None:
    """Run RESTARTED_JOB on `state` under strace, SIGKILL on entering the first of `calls`
    that names `path`."""
    assert STRACE is not None
    command = [STRACE, "-f", "-qq", "-o", str(state.parent / "strace.log"), "-P", str(path)]
    command += ["-e", f"trace={calls}", "-e", f"inject={calls}:signal=SIGKILL"]
    command += [sys.executable, "-c", RESTARTED_JOB, str(state)]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()  # strace dies as it did


@pytest.mark.strace
def test_restart_killed_before_it_moves_the_state_file_leaves_the_earlier_job_with_its_log(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job.state"
    killed_at(state, 6)  # the log holds positions 2 to 6
    restart_killed_at(state, state, "rename,renameat,renameat2")
    assert inspect(state).position == 6  # the state file and its log, as they were


@pytest.mark.strace
def test_restart_killed_after_it_moved_the_state_file_leaves_the_log_stale(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job.state"
    killed_at(state, 6)
    log = tmp_path / "job.state.log"
    restart_killed_at(state, log, "unlink,unlinkat")
    [aside] = [path for path in tmp_path.glob("job.state.reset-*") if path.suffix != ".log"]
    assert inspect(aside).position == 6  # the earlier job moved aside whole, log and all
    assert not state.exists()
    assert log.exists()  # stale: no state file names its id
    with Resumable(state, policy=NPolicy(1)) as r:  # a new job, which the log does not touch
        assert r.position == 0
        assert list(r.iterate(range(3))) == [0, 1, 2]
    assert (inspect(state).position, inspect(state).finished) == (3, True)
