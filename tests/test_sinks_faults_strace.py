"""Injected I/O errors on a sink (strace): ENOSPC and EIO on the sink's write and fsync, EIO
on the read of its last bytes for their CRC (pread).

tests/jobs/sink_fault_job.py writes one line per item to its sink with NPolicy(1), so the
save of position K makes the sink's K-th ``write`` and ``fsync``. strace (``-P`` the sink:
only its calls are counted and faulted) fails the second of them and every later one: the
save of position 2 raises `StateWriteError` naming the sink and the errno, so does the save
on exit, the state file stays byte for byte the first save's, and the next run cuts the
sink back to the length that save recorded and finishes with the output of one run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import resumable

from jobs.harness import child_env, run_script

pytestmark = pytest.mark.strace  # skipped without strace, failed under CI=true

ITEMS = 4
FAULTS = [
    pytest.param("write", "ENOSPC", id="ENOSPC-write"),
    pytest.param("write", "EIO", id="EIO-write"),
    pytest.param("fsync", "ENOSPC", id="ENOSPC-fsync"),
    pytest.param("fsync", "EIO", id="EIO-fsync"),
    # The read of the last bytes before the length, for their CRC, after the fsync.
    pytest.param("pread64", "EIO", id="EIO-pread"),
]


@pytest.mark.parametrize(("call", "errno_name"), FAULTS)
def test_a_failed_write_or_fsync_of_a_sink_keeps_the_state_and_the_next_run_cuts_it_back(
    tmp_path: Path, call: str, errno_name: str
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with resumable.Resumable(state) as job:
        job.sink(out)  # strace's -P names an existing file: the job's own, recorded empty
    args = [str(state), str(out), "--items", str(ITEMS)]
    inject = f"{call}:error={errno_name}:when=2+"
    traced = run_script(
        "sink_fault_job.py",
        args,
        log=tmp_path / "strace.log",
        strace_options=["-P", str(out), "-e", f"trace={call}", "-e", f"inject={inject}"],
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    failed = traced.first_failure(errno_name)
    assert traced.calls(call, out).index(failed) == 1, traced.describe("not the 2nd call")
    assert traced.stdout[0] == "ready 0", traced.describe("unexpected output")
    before = traced.stdout[1].removeprefix("digest ")
    kind, _, payload = traced.stdout[2].partition(" ")
    assert kind == "error", traced.describe("the job saw no StateWriteError")
    report = json.loads(payload)
    for error in (report, report.get("context")):
        assert error["errno"] == errno_name, traced.describe("")
        assert f"sink {out}" in error["message"], traced.describe("")
        assert f"[{errno_name}]" in error["message"], traced.describe("")
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before, "the state file changed"
    snapshot = resumable.inspect(state)
    assert (snapshot.position, snapshot.sinks) == (1, {str(out): 2}), snapshot

    again = run_script("sink_fault_job.py", args, log=tmp_path / "none.log")
    assert again.stdout[-1] == f"done {ITEMS} True", again.describe("the next run failed")
    assert out.read_text() == "".join(f"{item}\n" for item in range(ITEMS))


def test_a_save_with_no_new_output_makes_no_call_on_the_sink(tmp_path: Path) -> None:
    """Items 0 and 1 write a line each, items 2 to 5 nothing: the saves of positions 1
    and 2 each make one write and one fsync of the sink, and the four saves after them
    (and the exit) none: no output since the last save, nothing to wait for, and the CRC
    of its last bytes is not read again."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with resumable.Resumable(state) as job:
        job.sink(out)  # strace's -P names an existing file: the job's own, recorded empty
    args = [str(state), str(out), "--items", "6", "--silent-from", "2"]
    traced = run_script(
        "sink_fault_job.py",
        args,
        log=tmp_path / "strace.log",
        strace_options=["-P", str(out), "-e", "trace=write,fsync,pread64"],
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert traced.stdout[-1] == "done 6 True", traced.describe("the job failed")
    counted = {call: len(traced.calls(call, out)) for call in ("write", "fsync", "pread64")}
    assert counted == {"write": 2, "fsync": 2, "pread64": 2}, traced.describe(str(counted))
    assert out.read_text() == "0\n1\n"
    assert resumable.inspect(state).sinks == {str(out): 4}
