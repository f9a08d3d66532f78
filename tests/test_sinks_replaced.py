"""A sink's file is the job's own: the next run checks the bytes before the recorded length
(the CRC-32 of the last 4 KiB) before it cuts the file back, and a new sink must be a new
file (docs/output-files.md, "The failure cases"). A file that is not the job's is refused,
named, and left as it is; the state file is left as it is too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from resumable import Resumable, StateFileError, UsageError, inspect

from jobs.harness import TIMEOUT, child_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class BodyError(Exception):
    """The body's failure in these tests."""


def lines(items: range) -> str:
    return "".join(f"line {item:05d}\n" for item in items)


def run(state: Path, out: Path, items: int = 1000, fail_at: int | None = None) -> None:
    """One run, one line of 11 bytes per item; BodyError inside item `fail_at`."""
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(items)):
            if item == fail_at:
                sink.write("half")
                raise BodyError
            sink.write(f"line {item:05d}\n")


def stopped_at(state: Path, out: Path, item: int) -> int:
    """A job stopped by an exception in `item`; the length its state records."""
    with pytest.raises(BodyError):
        run(state, out, fail_at=item)
    return len(lines(range(item)))


def refused_and_left_as_it_is(state: Path, out: Path, content: bytes) -> StateFileError:
    before = state.read_bytes()
    with pytest.raises(StateFileError) as refused:
        run(state, out)
    assert out.read_bytes() == content
    assert state.read_bytes() == before
    message = str(refused.value)
    assert str(out) in message
    assert "restart=True" in message
    return refused.value


def test_a_different_file_of_the_recorded_length_is_refused(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    length = stopped_at(state, out, 500)
    other = lines(range(1000, 1500)).encode()
    assert len(other) == length
    out.write_bytes(other)
    error = refused_and_left_as_it_is(state, out, other)
    assert f"{length:,}" in str(error)


def test_a_file_edited_in_place_near_its_recorded_end_is_refused(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    length = stopped_at(state, out, 500)
    content = bytearray(out.read_bytes())
    content[length - 3] ^= 0x01  # one bit, in the last line the job counts
    out.write_bytes(content)
    refused_and_left_as_it_is(state, out, bytes(content))


def test_a_copy_of_the_jobs_own_file_is_taken_and_cut_back(tmp_path: Path) -> None:
    """A new inode with the job's bytes (a restore from a backup, a job moved with its
    output): the job's own output, taken as it is."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    stopped_at(state, out, 500)
    copy = out.read_bytes() + b"junk past the recorded length"
    out.unlink()
    out.write_bytes(copy)
    run(state, out)
    assert out.read_text() == lines(range(1000))


def test_a_sink_used_by_another_job_in_turn_is_refused_to_the_second_job(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared.txt"
    with pytest.raises(BodyError), Resumable(tmp_path / "a.state") as a:
        a.sink(shared)  # recorded at 0 bytes: the file is a's
        raise BodyError
    with Resumable(tmp_path / "b.state") as b, pytest.raises(UsageError) as refused:
        b.sink(shared)
    assert str(shared) in str(refused.value)
    assert "another job" in str(refused.value)
    run(tmp_path / "a.state", shared, items=3)  # a goes on with its file
    assert shared.read_text() == lines(range(3))


def test_a_new_sink_over_an_empty_file_is_refused_until_it_is_moved_or_restart(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    out.touch()
    with Resumable(state) as r, pytest.raises(UsageError, match="empty file"):
        r.sink(out)
    assert inspect(state).sinks == {}, "a refused sink is not recorded"
    with Resumable(state, restart=True) as r:
        sink = r.sink(out)  # an empty file: taken, nothing to move aside
        for item in r.iterate(range(3)):
            sink.write(f"line {item:05d}\n")
    assert out.read_text() == lines(range(3))
    assert not list(tmp_path.glob("out.txt.reset-*"))


def test_a_job_of_the_first_sink_format_is_checked_from_its_next_save_on(
    tmp_path: Path,
) -> None:
    """v2-sink records a bare length (no tail): it is cut back unchecked, and its next save
    records the tail that the run after it checks."""
    shutil.copytree(FIXTURES / "v2-sink", tmp_path / "job")
    state, out = tmp_path / "job" / "job.state", tmp_path / "job" / "out.txt"
    with pytest.raises(BodyError), Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(10)):
            sink.write(f"{item}:{item * item}\n")
            raise BodyError  # after item 8's line: the exit saves without it
    document = orjson.loads(state.read_bytes())
    assert set(document["sinks"]["out.txt"]) == {"length", "tail"}
    assert out.read_bytes().startswith(b"0:0\n")
    out.write_bytes(out.read_bytes().replace(b"0:0", b"0:1"))
    with pytest.raises(StateFileError), Resumable(state) as r:
        r.sink(out)


@pytest.mark.strace
def test_a_run_killed_between_recording_a_new_sink_and_making_it_goes_on(
    tmp_path: Path,
) -> None:
    state, out, script = tmp_path / "job.state", tmp_path / "out.txt", tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from resumable import Resumable

            with Resumable({str(state)!r}) as r:
                sink = r.sink({str(out)!r})
                for item in r.iterate(range(3)):
                    sink.write(f"line {{item:05d}}\\n")
            """
        )
    )
    strace = shutil.which("strace")
    assert strace is not None
    # The sink's path is opened twice: found missing, then made once a save recorded it.
    traced = ["-f", "-qq", "-o", str(tmp_path / "strace.log"), "-P", str(out)]
    faults = ["-e", "trace=openat", "-e", "inject=openat:signal=KILL:when=2"]
    killed = subprocess.run(
        [strace, *traced, *faults, sys.executable, str(script)],
        env=child_env(),
        timeout=TIMEOUT,
        capture_output=True,
        check=False,
    )
    assert killed.returncode in (-9, 137), killed
    assert not out.exists()
    assert inspect(state).sinks == {str(out): 0}
    again = subprocess.run(
        [sys.executable, str(script)], env=child_env(), timeout=TIMEOUT, capture_output=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_text() == lines(range(3))


def test_a_deleted_sink_recorded_empty_is_made_again(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError), Resumable(state) as r:
        r.sink(out)
        raise BodyError
    os.unlink(out)
    run(state, out, items=3)
    assert out.read_text() == lines(range(3))
