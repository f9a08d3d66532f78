"""The command line as a person at a shell meets it: advice in shell terms, pipes that
close early, several paths at once, and arguments that make no sense refused as usage."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resumable import Resumable, ResumableError, inspect


def resumable_command(
    *argv: str | Path, cwd: Path, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """The installed command line (``python -m resumable``), started in `cwd`."""
    return subprocess.Popen(
        [sys.executable, "-m", "resumable", *map(str, argv)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
    )


def finished_job(path: Path, items: int = 5) -> None:
    with Resumable(path) as r:
        for _ in r.iterate(range(items)):
            pass


def test_status_of_a_corrupt_file_says_how_to_start_over_at_the_shell(tmp_path: Path) -> None:
    (tmp_path / "job.state").write_text("{ not json")
    child = resumable_command("status", "job.state", cwd=tmp_path)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 1
    assert "restart=True" in err.decode()
    assert "at the shell: resumable reset " in err.decode()


def test_a_finished_job_says_how_to_run_it_again_in_python_and_at_the_shell(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished_job(state_path)
    with caplog.at_level(logging.WARNING, "resumable"), Resumable(state_path) as r:
        assert list(r.iterate(range(5))) == []
    assert "already finished (5 items)" in caplog.text
    assert f"pass restart=True (at the shell: resumable reset {state_path})" in caplog.text


@pytest.mark.parametrize("command", ["status", "status --json"])
def test_a_reader_that_closed_the_pipe_ends_status_quietly_with_141(
    tmp_path: Path, command: str
) -> None:
    for name in ("a.state", "b.state"):
        finished_job(tmp_path / name)
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that already has what it wanted
    child = resumable_command(*command.split(), "a.state", "b.state", cwd=tmp_path, stdout=writer)
    os.close(writer)
    _, err = child.communicate(timeout=60)
    assert err == b""
    assert child.returncode == 141  # 128 + SIGPIPE, as for `cat` in the same place


def test_reset_takes_several_paths_and_reports_each(tmp_path: Path) -> None:
    for name in ("a.state", "b.state"):
        finished_job(tmp_path / name)
    child = resumable_command("reset", "--yes", "a.state", "b.state", cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (0, b"")
    assert [line.split(":")[0] for line in out.decode().splitlines()] == [
        "Reset a.state",
        "Reset b.state",
    ]
    assert not (tmp_path / "a.state").exists()
    assert not (tmp_path / "b.state").exists()


def test_reset_of_several_paths_resets_the_good_ones_and_exits_1_for_a_missing_one(
    tmp_path: Path,
) -> None:
    finished_job(tmp_path / "b.state")
    child = resumable_command("reset", "--yes", "a.state", "b.state", cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 1
    assert err.decode().startswith("resumable: error: cannot reset a.state: no state file")
    assert out.decode().startswith("Reset b.state:")
    assert not (tmp_path / "b.state").exists()


@pytest.mark.parametrize(
    ("argument", "complaint"),
    [
        ("--items=0", "needs 1 or more, got 0"),
        ("--items=-3", "needs 1 or more, got -3"),
        ("--items=many", "a whole number is needed, got 'many'"),
        ("--delay=-1", "needs a finite number of seconds >= 0, got -1"),
        ("--delay=nan", "needs a finite number of seconds >= 0, got nan"),
        ("--delay=soon", "a number of seconds is needed, got 'soon'"),
    ],
)
def test_demo_arguments_that_make_no_sense_are_usage_errors(
    tmp_path: Path, argument: str, complaint: str
) -> None:
    child = resumable_command("demo", argument, cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 2
    assert out == b""
    assert complaint in err.decode()
    assert "Traceback" not in err.decode()
    assert list(tmp_path.iterdir()) == []  # no job was started


def test_demo_of_one_item_without_delay_finishes(tmp_path: Path) -> None:
    child = resumable_command("demo", "--items", "1", "--delay", "0", cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (0, b"")
    assert "Done: 1 item over 1 run." in out.decode()
    assert inspect(tmp_path / "resumable-demo.state").finished


def test_a_damaged_key_journal_says_how_to_start_over_at_the_shell(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for _ in r.iterate(["a", "b", "c"], key=str):
            pass
    journal = next(state_path.parent.glob("job.state.keys-*"))
    journal.write_bytes(journal.read_bytes()[:-1] + b"\xff")  # a flipped last byte
    with pytest.raises(ResumableError) as raised, Resumable(state_path) as r:
        list(r.iterate(["a", "b", "c"], key=str))
    assert "restart=True in Python, or `resumable reset`" in str(raised.value)
