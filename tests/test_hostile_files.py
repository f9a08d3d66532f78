"""What the library does with the files it is handed, and with a run it refuses.

A state file is read only once it is known to be a regular file of a sane size; an error
that stops the read is never taken for damage; a file that is damaged (in any way the
reader checks) sends the job to the backup, and one that is merely unusable does not. A
run whose iterate() is refused changes nothing on disk. Special files, devices and other
users run in child processes, under a time limit and a memory limit where a bug would
hang or exhaust the machine; I/O errors the test user cannot cause for real are injected
into real system calls with strace.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from resumable import (
    InputChangedError,
    Resumable,
    ResumableWarning,
    StateFileError,
    StateLockedError,
    StateNotSerializableError,
    inspect,
    reset,
)
from resumable._store import document as state_document

from jobs.harness import RESUMABLE_COMMAND

TIMEOUT = 30  # seconds a child may take; a hang fails the test instead of the suite
STATE_LIMIT = 256 * 2**20  # the largest state file, as docs/state-file.md says
DEPTH_LIMIT = 253  # the deepest r.state, counting its own level, as docs/state-file.md says


def make_job(path: Path, stop: int, items: int = 100) -> None:
    """One run over range(items) that breaks before item `stop` (finished: stop=items)."""
    with Resumable(path) as r:
        for item in r.iterate(range(items)):
            if item == stop:
                break


def files(directory: Path) -> dict[str, bytes]:
    """Every regular file in `directory` with its content, but the lock file's: each run
    that takes the lock writes its pid there."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.endswith(".lock")
    }


def with_checksum(document: dict[str, Any]) -> bytes:
    """`document` as a state file with a checksum the reader accepts (docs/state-file.md)."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()


def document(**changes: Any) -> dict[str, Any]:
    """A valid version 1 document at position 3, with `changes`."""
    return {
        "format_version": 1,
        "progress": {"kind": "position", "position": 3, "finished": False},
        "state": {},
        "runs": 1,
        "created_at": "2026-11-26T09:12:01.512034+00:00",
        "saved_at": "2026-11-26T10:40:17.004211+00:00",
        "writer": "a test",
        **changes,
    }


def deep_document(depth: int) -> bytes:
    """A state file with a checksum the reader accepts whose JSON nests `depth` levels:
    a hand-made file, or another tool's (orjson writes no more than 254)."""
    deep = b'{"a":' * (depth - 3) + b"{}" + b"}" * (depth - 3)  # 3: document, state, tree
    placeholder = with_checksum(document(state={"tree": "DEEP"}))
    body = orjson.loads(placeholder)
    del body["checksum"]
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).replace(b'"DEEP"', deep)
    return canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()


def nested(depth: int) -> dict[str, Any]:
    """A dict `depth` levels deep, counting its own: {"a": {"a": ... {}}}."""
    top: dict[str, Any] = {}
    inner = top
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return top


def child(
    code: str,
    *args: str | Path,
    memory: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
    **options: Any,
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new Python with `args` in sys.argv[1:]; `memory` caps its address
    space in bytes. A child that does not end within TIMEOUT fails the test."""

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if preexec_fn is not None:
            preexec_fn()

    try:
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            preexec_fn=limit,
            check=False,
            **options,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung for {TIMEOUT} s: {code}")


# A run as a child reports one JSON line: where it resumed, or the error it got.
OPEN_JOB = """
import json, sys, warnings, resumable
warnings.simplefilter("error", resumable.ResumableWarning)  # no quiet fallback
try:
    with resumable.Resumable(sys.argv[1]) as r:
        done = sum(1 for _ in r.iterate(range(100)))
    print(json.dumps({"resumed": r.position - done, "ran": done}))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error),
                      "state_file_error": isinstance(error, resumable.StateFileError)}))
"""

INSPECT_JOB = """
import json, sys, resumable
try:
    print(json.dumps({"position": resumable.inspect(sys.argv[1]).position}))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error),
                      "state_file_error": isinstance(error, resumable.StateFileError)}))
"""

STATUS = RESUMABLE_COMMAND


def reported(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON line a child printed."""
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


# -- a refused run changes nothing ------------------------------------------------------


def test_a_run_whose_input_is_refused_changes_no_file(state_path: Path) -> None:
    """Run 2 gives a too-short list and is refused: the state file and backup stay byte
    for byte, so run 3 with the right input resumes where run 1 stopped."""
    with Resumable(state_path) as r:
        for item in r.iterate(x for x in range(100)):
            if item == 50:
                break
    before = files(state_path.parent)
    with pytest.raises(InputChangedError), Resumable(state_path) as r:
        r.state["note"] = "set by a refused run"
        for _ in r.iterate(list(range(20))):
            pass
    assert files(state_path.parent) == before
    with Resumable(state_path) as r:
        assert r.runs == 2
        assert list(r.iterate(list(range(100)))) == list(range(50, 100))
    assert (inspect(state_path).runs, inspect(state_path).state) == (2, {})


def test_a_new_job_whose_iterate_is_refused_writes_no_state_file(state_path: Path) -> None:
    with pytest.raises(ValueError, match="max_attempts"), Resumable(state_path) as r:
        r.iterate(range(3), max_attempts=0)
    assert not state_path.exists()


def test_after_input_changed_error_the_same_run_can_start_over(state_path: Path) -> None:
    """The error's advice, on_change="restart", works in the same with block."""
    with Resumable(state_path) as r:
        for item in r.iterate(["a", "b", "c"]):
            if item == "c":
                break
    with Resumable(state_path) as r:
        with pytest.raises(InputChangedError, match="on_change='restart'"):
            r.iterate(["z", "b", "c"])
        assert list(r.iterate(["z", "b", "c"], on_change="restart")) == ["z", "b", "c"]
    assert (inspect(state_path).position, inspect(state_path).finished) == (3, True)


def test_after_a_refused_call_iterate_checks_the_input_as_the_first_call_would(
    state_path: Path,
) -> None:
    """A refused call leaves no trace of the input it saw: the next call resumes, and the
    next run still recognises the input."""
    make_job(state_path, 5, items=10)
    with Resumable(state_path) as r:
        with pytest.raises(TypeError, match="progress="):  # found once the input was read
            r.iterate(range(10), progress="yes")  # type: ignore[call-overload]
        for item in r.iterate(range(10)):
            if item == 7:
                break
    with Resumable(state_path) as r:
        assert list(r.iterate(range(10))) == [7, 8, 9]


def test_every_run_that_starts_its_loop_counts_and_only_those(state_path: Path) -> None:
    """Runs of a finished job count although they save no progress; a run that only looks
    and a refused run change nothing and are not counted."""
    seen = []
    for _ in range(4):
        with Resumable(state_path) as r:
            list(r.iterate(range(3)))
            seen.append(r.runs)
    assert seen == [1, 2, 3, 4]
    assert inspect(state_path).runs == 4
    before = files(state_path.parent)
    with Resumable(state_path) as r:
        assert r.runs == 5  # were it to start its loop
    with pytest.raises(InputChangedError), Resumable(state_path) as r:
        r.iterate(range(2))
    assert files(state_path.parent) == before
    with Resumable(state_path) as r:
        assert r.runs == 5


# -- read errors are not damage ---------------------------------------------------------


# Linux capabilities that let root read any file (capability.h), and prctl's request to
# drop one from the bounding set, which an exec then applies to the process's own.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def without_root_s_read_access() -> None:
    """In a child before its exec: drop what lets root read files it may not read."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def make_unreadable(path: Path) -> dict[str, Any]:
    """Make `path` a file this test's children may not read, as a run under sudo leaves
    one; return the subprocess options for such a child. As root, the file goes to user
    nobody (mode 600) and the child runs without root's capability to read it anyway."""
    if os.geteuid() != 0:
        path.chmod(0o000)
        return {}
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root, and dropping a capability needs Linux")
    os.chown(path, 65534, 65534)
    path.chmod(0o600)
    return {"preexec_fn": without_root_s_read_access}


def test_a_state_file_this_user_may_not_read_is_refused_not_taken_for_damage(
    state_path: Path,
) -> None:
    """job.state owned by another user and private, the backup readable. The run gets
    StateFileError naming EACCES; it does not go back to the backup (and rerun 80 items),
    and the good file is not renamed to .corrupt-<time>."""
    make_job(state_path, 10)
    make_job(state_path, 90)
    before = sorted(os.listdir(state_path.parent))
    options = make_unreadable(state_path)
    for code in (OPEN_JOB, INSPECT_JOB):
        outcome = reported(child(code, state_path, **options))
        assert outcome.get("state_file_error"), outcome
        assert "Permission denied [EACCES]" in outcome["message"], outcome
        assert "the backup is not used" in outcome["message"], outcome
    status = child(STATUS, "status", state_path, **options)
    assert status.returncode == 1, status.stderr
    assert "[EACCES]" in status.stderr, status.stderr
    assert sorted(os.listdir(state_path.parent)) == before
    state_path.chmod(0o644)
    assert inspect(state_path).position == 90


needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None or not sys.platform.startswith("linux"),
    reason="needs strace, on Linux",
)


@needs_strace
@pytest.mark.parametrize(
    ("call", "errno_name"),
    [("openat", "EACCES"), ("openat", "EPERM"), ("openat", "ELOOP"), ("read", "EIO")],
)
def test_an_error_reading_the_state_file_is_refused_with_its_errno(
    state_path: Path, call: str, errno_name: str
) -> None:
    """An injected error in the open or the read of the state file (a real call that
    fails): StateFileError naming the errno, no fallback to the backup, no file changed."""
    make_job(state_path, 10)
    make_job(state_path, 90)
    before = files(state_path.parent)
    strace = shutil.which("strace")
    assert strace is not None
    inject = ["-e", f"trace={call}", "-e", f"inject={call}:error={errno_name}"]
    job = [sys.executable, "-c", OPEN_JOB, str(state_path)]
    traced = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, *inject, "-P", str(state_path), *job],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    outcome = reported(traced)
    assert outcome.get("state_file_error"), outcome
    assert f"[{errno_name}]" in outcome["message"], outcome
    assert "the backup is not used and nothing was changed" in outcome["message"], outcome
    assert files(state_path.parent) == before


# -- special files and sizes ------------------------------------------------------------


def test_a_fifo_at_the_state_path_is_refused_at_once(state_path: Path) -> None:
    """No reader waits for a writer: Resumable, inspect and status all refuse it, naming
    what it is, and the run's lock is free again afterwards."""
    os.mkfifo(state_path)
    for code in (OPEN_JOB, INSPECT_JOB):
        outcome = reported(child(code, state_path))
        assert outcome.get("state_file_error"), outcome
        assert "is a FIFO (named pipe), not a state file" in outcome["message"], outcome
    status = child(STATUS, "status", state_path)
    assert status.returncode == 1
    assert "FIFO" in status.stderr
    with pytest.raises(StateFileError, match="FIFO"), Resumable(state_path):
        pass
    assert state_path.is_fifo()


def test_a_fifo_as_the_backup_of_a_damaged_state_file_is_refused_at_once(
    state_path: Path,
) -> None:
    state_path.write_bytes(b"garbage")
    os.mkfifo(state_path.with_name("job.state.bak"))
    outcome = reported(child(INSPECT_JOB, state_path))
    assert outcome.get("state_file_error"), outcome
    assert "not valid JSON" in outcome["message"], outcome
    assert "job.state.bak is a FIFO" in outcome["message"], outcome


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_link_to_a_device_is_refused_without_reading_it(state_path: Path, device: str) -> None:
    """Under a 1 GiB memory limit, so that a reader that reads the device to its end
    fails instead of exhausting the machine."""
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    state_path.symlink_to(device)
    for code in (OPEN_JOB, INSPECT_JOB):
        outcome = reported(child(code, state_path, memory=2**30))
        assert outcome.get("state_file_error"), outcome
        assert "is a character device, not a state file" in outcome["message"], outcome


def test_a_state_file_over_the_size_limit_is_damage_and_is_never_read(state_path: Path) -> None:
    """A sparse file of 2 GiB beside a good backup: a run under a memory limit far below
    its size resumes from the backup, and its first save sets the big file aside."""
    make_job(state_path, 10)
    make_job(state_path, 90)
    with open(state_path, "r+b") as file:
        file.truncate(2 * 2**30)
    warned = """
import warnings, resumable, sys
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with resumable.Resumable(sys.argv[1]) as r:
        start = r.position
        done = sum(1 for _ in r.iterate(range(100)))
print(start, done, [str(w.message) for w in caught])  # whole: tmp paths vary in length
"""
    result = child(warned, state_path, memory=512 * 2**20)
    assert result.returncode == 0, result.stderr
    start, done, message = result.stdout.split(" ", 2)
    assert (int(start), int(done)) == (10, 90), result.stdout
    assert "larger than any state file (256 MiB at most)" in message, message
    [aside] = state_path.parent.glob("job.state.corrupt-*")
    assert aside.stat().st_size == 2 * 2**30
    assert inspect(state_path).finished


@pytest.mark.slow  # reads 256 MiB
def test_a_file_of_exactly_the_size_limit_is_read(state_path: Path) -> None:
    """The bound is the file's size: a file of STATE_LIMIT bytes is read (and here found
    damaged: it is zeros), one byte more is not read at all."""
    with open(state_path, "wb") as file:
        file.truncate(STATE_LIMIT)
    with pytest.raises(StateFileError, match="not valid JSON"):
        inspect(state_path)
    with open(state_path, "r+b") as file:
        file.truncate(STATE_LIMIT + 1)
    with pytest.raises(StateFileError, match="larger than any state file"):
        inspect(state_path)


@pytest.mark.slow
def test_a_save_over_the_size_limit_is_refused_and_the_previous_save_kept(
    state_path: Path,
) -> None:
    make_job(state_path, 3)
    before = state_path.read_bytes()
    too_big = pytest.raises(StateNotSerializableError, match="more than the 256 MiB")
    with too_big, Resumable(state_path) as r:
        r.state["blob"] = "x" * STATE_LIMIT
        r.save()
    assert state_path.read_bytes() == before


def test_a_save_over_the_size_limit_names_the_sizes_in_mib(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures of the refusal, with the limit lowered to 1 MiB (the seam; the slow
    test above builds a real 256 MiB state and checks the limit): the file would be
    1.5 MiB, r.state 1.5 MiB of it."""
    make_job(state_path, 3)
    before = state_path.read_bytes()
    monkeypatch.setattr(state_document, "MAX_BYTES", 2**20)
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        r.state["blob"] = "x" * (3 * 2**19)
        r.save()
    assert (
        "the state file would be 1.5 MiB, more than the 1 MiB a state file may hold; "
        "r.state makes 1.5 MiB of it."
    ) in str(raised.value)
    assert state_path.read_bytes() == before


# -- depth ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 1024])
def test_a_state_file_nested_too_deep_is_damage_and_the_backup_is_used(
    state_path: Path, depth: int
) -> None:
    """orjson reads 1,024 levels and writes 254: a file between is one no save wrote.
    With a good backup, Resumable, inspect and status use the backup, whose position
    is 10, even though the deep file's checksum is right."""
    make_job(state_path, 10)
    make_job(state_path, 90)
    deep = deep_document(depth)
    state_path.write_bytes(deep)
    with pytest.warns(ResumableWarning, match="nests data deeper than any save writes"):
        assert inspect(state_path).position == 10
    status = child(STATUS, "status", "--json", state_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["from_backup"] is True
    with pytest.warns(ResumableWarning), Resumable(state_path) as r:
        assert r.position == 10
        assert list(r.iterate(range(100))) == list(range(10, 100))
    [aside] = state_path.parent.glob("job.state.corrupt-*")
    assert aside.read_bytes() == deep


def test_a_state_file_nested_too_deep_without_backup_is_a_state_file_error(
    state_path: Path,
) -> None:
    state_path.write_bytes(deep_document(400))
    with pytest.raises(StateFileError, match="nests data deeper"):
        inspect(state_path)
    with pytest.raises(StateFileError, match="nests data deeper"), Resumable(state_path):
        pass


@pytest.mark.parametrize("depth", [DEPTH_LIMIT + 1, 300, 10_000])
def test_a_state_nested_deeper_than_the_limit_is_refused_naming_the_limit(
    state_path: Path, depth: int
) -> None:
    make_job(state_path, 3)
    before = files(state_path.parent)
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        r.state["tree"] = nested(depth - 1)  # r.state itself is a level
        r.save()
    assert raised.value.key == "['tree']"
    assert f"deeper than the {DEPTH_LIMIT} levels a state file holds" in str(raised.value)
    assert files(state_path.parent) == before


def test_a_state_at_the_depth_limit_is_saved_and_read_back(state_path: Path) -> None:
    with Resumable(state_path) as r:
        r.state["tree"] = nested(DEPTH_LIMIT - 1)
    assert inspect(state_path).state == {"tree": nested(DEPTH_LIMIT - 1)}


def test_a_state_at_the_depth_limit_with_an_int_past_64_bits_is_refused_for_the_int(
    state_path: Path,
) -> None:
    """At the depth limit, what is wrong is the value orjson cannot write (an int past 64
    bits, which the walk of r.state passes as a plain int): the refusal names it, not the
    depth. One level more, the depth."""
    for depth, problem in [(DEPTH_LIMIT, "here an int"), (DEPTH_LIMIT + 1, "deeper than")]:
        tree = nested(depth - 1)  # r.state itself is a level
        inner = tree
        while inner:
            inner = inner["a"]
        inner["big"] = 2**70
        with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
            r.state["tree"] = tree
            r.save()
        assert problem in str(raised.value)


def test_a_state_that_contains_itself_is_refused_naming_the_key(state_path: Path) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    refused = pytest.raises(StateNotSerializableError, match="contains itself")
    with refused as raised, Resumable(state_path) as r:
        r.state["ok"] = [1, 2]
        r.state["loop"] = loop
    assert raised.value.key == "['loop']"
    assert not state_path.exists()


# -- values every reader checks alike ---------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"created_at": "not a date"}, "created_at is 'not a date', not an ISO 8601 time"),
        ({"saved_at": "yesterday"}, "saved_at is 'yesterday', not an ISO 8601 time"),
        ({"runs": -5}, "runs is -5, below 1"),
        ({"runs": 0}, "runs is 0, below 1"),
    ],
)
def test_resumable_and_inspect_refuse_the_same_values(
    state_path: Path, changes: dict[str, Any], problem: str
) -> None:
    bad = with_checksum(document(**changes))
    state_path.write_bytes(bad)
    with pytest.raises(StateFileError, match=problem):
        inspect(state_path)
    with pytest.raises(StateFileError, match=problem), Resumable(state_path):
        pass
    assert state_path.read_bytes() == bad
    assert not list(state_path.parent.glob("*.corrupt-*"))


def test_a_finished_job_given_an_input_shorter_than_its_position_is_refused(
    state_path: Path,
) -> None:
    """Finished at 50 by a file without an input record: a 10-item list is another input."""
    progress = {"kind": "position", "position": 50, "finished": True}
    before = with_checksum(document(progress=progress))
    state_path.write_bytes(before)
    with pytest.raises(InputChangedError, match="has only 10 items"), Resumable(state_path) as r:
        r.iterate(list(range(10)))
    assert state_path.read_bytes() == before
    with Resumable(state_path) as r:
        assert list(r.iterate(list(range(50)))) == []


# -- one path resolution for every entry point -------------------------------------------


def test_status_reset_and_inspect_follow_a_symlink_as_resumable_does(tmp_path: Path) -> None:
    """Through a link: status sees the run that holds the job, reset is refused while it
    runs, and inspect uses the real file's backup."""
    real, link = tmp_path / "real.state", tmp_path / "link.state"
    make_job(real, 5)
    make_job(real, 8)
    link.symlink_to(real.name)
    with Resumable(real):
        status = child(STATUS, "status", "--json", link)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)[0]["running"] is True
        with pytest.raises(StateLockedError):
            reset(link)
    assert real.exists()
    assert link.is_symlink()
    real.write_bytes(b"damaged")
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        snapshot = inspect(link)
    assert (snapshot.path, snapshot.position, snapshot.from_backup) == (real, 5, True)
    aside = reset(link)
    assert aside.parent == tmp_path
    assert aside.name.startswith("real.state.reset-")
    assert link.is_symlink()
    assert not real.exists()


def test_the_limits_are_the_documented_ones() -> None:
    """The numbers these tests use are those docs/state-file.md gives."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "state-file.md").read_text()
    assert "256 MiB" in page
    assert f"{DEPTH_LIMIT} levels" in page


def test_opening_a_file_in_another_form_without_iterating_writes_nothing(
    state_path: Path,
) -> None:
    """An older writer's form (version 1, an input record of null): a run that only looks
    leaves it byte for byte, and is not counted."""
    progress = {"kind": "position", "position": 3, "finished": False, "input": None}
    before = with_checksum(document(progress=progress, runs=4))
    state_path.write_bytes(before)
    with Resumable(state_path) as r:
        assert (r.position, r.runs) == (3, 5)
    assert state_path.read_bytes() == before


@pytest.mark.parametrize("kind", [[], {}, None, 1, "rows"])
def test_a_progress_kind_of_any_other_value_is_a_state_file_error(
    state_path: Path, kind: object
) -> None:
    progress = {"kind": kind, "position": 3, "finished": False}
    state_path.write_bytes(with_checksum(document(progress=progress)))
    with pytest.raises(StateFileError, match="progress kind"), Resumable(state_path):
        pass
