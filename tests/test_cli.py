"""The `resumable` command line: status, reset, exit codes, and one-line errors.

Most tests call `main` in this process and read its output with capsys; the jobs they look
at are made by real `Resumable` runs, and a job that holds its lock is a real child process
(tests/jobs/stepped_job.py). The last tests run the installed console script and
``python -m resumable`` as real subprocesses.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

import resumable
from resumable import Resumable, StateFileError, StateLockedError, inspect
from resumable._store import flock

from jobs.harness import Child, Job, resumable_command

DOCS = Path(__file__).resolve().parents[1] / "docs"
NO_STATE_FILE = "no state file: the job has not started, or it was reset"
JSON_KEYS = {
    "path",
    "error",
    "missing",
    "position",
    "finished",
    "runs",
    "created_at",
    "saved_at",
    "seconds_since_saved",
    "state_keys",
    "progress_kind",
    "failed",
    "sinks",
    "format_version",
    "from_backup",
    "running",
    "pid",
    "host",
    "lease_until",
    "notes",
}

main = resumable_command()  # what the installed `resumable` command runs


def make_job(
    path: Path, done: int, items: int = 10_000, state: dict[str, Any] | None = None
) -> None:
    """One run of a job over range(items) that stops after `done` items (finished when
    `done` is `items`)."""
    with Resumable(path) as r:
        r.state.update(state or {})
        for item in r.iterate(range(items)):
            if item == done:
                break


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, list[str]]:
    """Run the command line here; its exit status, stdout, and stderr lines."""
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def rows(output: str) -> dict[str, str]:
    """The ``label  value`` rows of a human status block."""
    found = {}
    for line in output.splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # not a failed item's
            label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            found[label] = value
    return found


def files(directory: Path) -> dict[str, bytes]:
    """Every file in `directory` with its content."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# -- status -----------------------------------------------------------------------------


def test_status_summarises_an_unfinished_job(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items done with thousands separators, runs, the user state's keys but none of its
    values, and no lock held."""
    make_job(state_path, 1000, state={"pages": ["secret-value"]})
    make_job(state_path, 1234, state={"bytes": 52311})
    status, out, err = run(capsys, "status", state_path)
    assert (status, err) == (0, [])
    assert out.splitlines()[0] == str(state_path)
    shown = rows(out)
    assert shown["items done"] == "1,234 (not finished)"
    assert shown["runs so far"] == "2"
    assert shown["state keys"] == "bytes, pages"
    assert shown["running"] == "no"
    assert shown["from backup"] == "no"
    assert "secret-value" not in out
    assert "52311" not in out


def test_status_of_a_finished_job(state_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_job(state_path, 10, items=10)
    status, out, _ = run(capsys, "status", state_path)
    assert status == 0
    assert rows(out)["items done"] == "10 (finished)"
    assert rows(out)["state keys"] == "(none)"


@pytest.mark.parametrize(
    ("seconds", "saved", "created"),
    [
        (0, "just now", "1 hour ago"),
        (1, "1 second ago", "1 hour ago"),
        (59, "59 seconds ago", "1 hour ago"),
        (60, "1 minute ago", "1 hour ago"),
        (180, "3 minutes ago", "1 hour ago"),
        (239, "3 minutes ago", "1 hour ago"),
        (2 * 3600 + 59 * 60, "2 hours ago", "3 hours ago"),
        (3 * 86400, "3 days ago", "3 days ago"),
        (-30, "30 seconds in the future: is a clock wrong?", "59 minutes ago"),
    ],
)
def test_last_saved_and_created_say_how_long_ago_in_local_time(
    state_path: Path, capsys: pytest.CaptureFixture[str], seconds: int, saved: str, created: str
) -> None:
    """The times of the last save and of the job's start in local time, and how long ago
    by the frozen clock: the largest whole unit, rounded down."""
    start = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)
    with freeze_time(start, tick=False) as frozen:
        make_job(state_path, 5)
        frozen.tick(timedelta(hours=1))
        make_job(state_path, 7)  # saved an hour after the job was created
        frozen.tick(seconds)
        status, out, _ = run(capsys, "status", state_path)
        local_save = (start + timedelta(hours=1)).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        local_start = start.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    assert status == 0
    assert rows(out)["last saved"] == f"{local_save} ({saved})"
    assert rows(out)["created"] == f"{local_start} ({created})"


def test_status_json_has_every_key_with_utc_times(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with freeze_time("2026-11-26 10:00:00", tick=False) as frozen:
        make_job(state_path, 1234, state={"b": 1, "a": 2})
        frozen.tick(180)
        status, out, err = run(capsys, "status", "--json", state_path)
    assert (status, err) == (0, [])
    [report] = json.loads(out)
    assert set(report) == JSON_KEYS
    assert report == {
        "path": str(state_path),
        "error": None,
        "missing": False,
        "position": 1234,
        "finished": False,
        "runs": 1,
        "created_at": "2026-11-26T10:00:00+00:00",
        "saved_at": "2026-11-26T10:00:00+00:00",
        "seconds_since_saved": 180.0,
        "state_keys": ["a", "b"],
        "progress_kind": "position",
        "failed": [],
        "sinks": {},
        "format_version": 2,
        "from_backup": False,
        "running": False,
        "pid": None,
        "host": None,
        "lease_until": None,
        "notes": [],
    }


def test_every_json_key_is_documented() -> None:
    """docs/cli.md has a table row for each key of `status --json`, and no other."""
    text = (DOCS / "cli.md").read_text()
    section = text.split("### JSON output", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE))
    assert documented == JSON_KEYS


def test_status_goes_on_past_a_missing_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each path is reported; a missing one is one error line, and makes the status 1."""
    first, missing, last = tmp_path / "a.state", tmp_path / "gone.state", tmp_path / "c.state"
    make_job(first, 1)
    make_job(last, 3)
    status, out, err = run(capsys, "status", first, missing, last)
    assert status == 1
    assert err == [f"resumable: error: {missing}: {NO_STATE_FILE}"]
    blocks = out.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [str(first), str(last)]
    assert [rows(block)["items done"] for block in blocks] == [
        "1 (not finished)",
        "3 (not finished)",
    ]

    status, out, err = run(capsys, "status", "--json", first, missing, last)
    assert status == 1
    reports = json.loads(out)
    assert [report["position"] for report in reports] == [1, None, 3]
    assert reports[1]["missing"] is True
    assert reports[1]["error"] == f"{missing}: {NO_STATE_FILE}"
    assert all(set(report) == JSON_KEYS for report in reports)
    assert not missing.with_name("gone.state.lock").exists()


@pytest.mark.parametrize("as_json", [False, True])
def test_a_corrupt_state_file_is_one_error_line_and_left_untouched(
    state_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    state_path.write_bytes(b'{"format_version": 1, "progr')
    before = files(state_path.parent)
    status, out, err = run(capsys, "status", *(["--json"] if as_json else []), state_path)
    assert status == 1
    assert len(err) == 1
    assert err[0].startswith(f"resumable: error: {state_path} is not valid JSON")
    if as_json:
        [report] = json.loads(out)
        assert (report["missing"], report["position"]) == (False, None)
        assert report["error"] == err[0].removeprefix("resumable: error: ")
    else:
        assert out == ""
    assert files(state_path.parent) == before  # not even a lock file was created


def test_a_state_read_from_the_backup_is_shown_with_a_note(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ResumableWarning becomes a note in the output (pytest would fail the test if it
    escaped, since warnings are errors here) and the status is still 0."""
    make_job(state_path, 3)
    make_job(state_path, 5)  # the backup holds 3
    state_path.write_bytes(b"")
    status, out, err = run(capsys, "status", state_path)
    assert (status, err) == (0, [])
    shown = rows(out)
    assert shown["items done"] == "3 (not finished)"
    assert shown["from backup"] == f"yes, from {state_path}.bak"
    assert shown["note"].startswith(f"{state_path} is empty; resuming from the backup")

    status, out, err = run(capsys, "status", "--json", state_path)
    [report] = json.loads(out)
    assert (status, report["from_backup"], report["position"]) == (0, True, 3)
    assert len(report["notes"]) == 1
    assert state_path.read_bytes() == b""


def test_status_names_the_pid_of_a_run_holding_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before its first save a running job has no state file: the error says a run holds
    it. Once it saved, status shows the running pid. After it ends, nobody holds it."""
    job = Job(tmp_path)
    with job.stepped("--items", "3", "--every", "1") as holder:
        holder.expect("ready 0 1")
        holder.expect("start 0")  # inside item 0's body: nothing saved yet
        status, out, err = run(capsys, "status", job.state)
        assert status == 1
        assert err == [
            f"resumable: error: {job.state}: {NO_STATE_FILE}; but pid {holder.pid} holds "
            "its lock: a run has started and not saved yet"
        ]
        holder.send("go")
        holder.expect("end 0")
        holder.expect("start 1")  # item 0 is saved; the run waits in item 1's body
        status, out, err = run(capsys, "status", job.state)
        assert (status, err) == (0, [])
        assert rows(out)["running"] == f"yes, pid {holder.pid}"
        assert rows(out)["items done"] == "1 (not finished)"
        status, out, err = run(capsys, "status", "--json", job.state)
        [report] = json.loads(out)
        assert (report["running"], report["pid"]) == (True, holder.pid)
        holder.ping()  # the probe did not disturb the run
        for item in (1, 2):
            holder.send("go")
            holder.expect(f"end {item}")
            if item == 1:
                holder.expect("start 2")
        holder.expect("done 3 True")
        assert holder.finish().returncode == 0
    status, out, err = run(capsys, "status", job.state)
    assert rows(out)["running"] == "no"


def test_a_lock_file_that_cannot_be_probed_is_an_error_line(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 2)
    lock = state_path.with_name("job.state.lock")
    lock.unlink()
    lock.symlink_to(lock.name)  # a loop: opening it fails with ELOOP
    status, out, err = run(capsys, "status", state_path)
    assert status == 1
    assert rows(out)["running"] == "unknown"
    assert err == [
        f"resumable: error: cannot tell whether a run holds {state_path}: {lock}: "
        "Too many levels of symbolic links"
    ]
    status, out, err = run(capsys, "status", "--json", state_path)
    [report] = json.loads(out)
    assert (report["running"], report["position"]) == (None, 2)


# -- probing the lock -------------------------------------------------------------------


def test_status_probes_the_lock_with_no_lock_file_and_creates_none(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 2)
    lock = state_path.with_name("job.state.lock")
    lock.unlink()  # a run leaves its lock file by design: here there is none
    status, out, _ = run(capsys, "status", "--json", state_path)
    assert (status, json.loads(out)[0]["running"]) == (0, False)
    assert not lock.exists()
    with Resumable(state_path):
        status, out, _ = run(capsys, "status", "--json", state_path)
        [report] = json.loads(out)
        assert (report["running"], report["pid"]) == (True, os.getpid())
    status, out, _ = run(capsys, "status", "--json", state_path)
    assert json.loads(out)[0]["running"] is False


def test_a_run_refused_while_the_lock_is_probed_tries_again(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe holds the lock for an instant; a run starting in that instant waits a
    moment and gets in, while a lock held on is refused after all the short pauses."""
    lock = state_path.with_name("job.state.lock")
    lock.touch()
    probe = os.open(lock, os.O_RDONLY)
    pauses: list[float] = []

    def probe_ends(seconds: float) -> None:
        pauses.append(seconds)
        fcntl.flock(probe, fcntl.LOCK_UN)

    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        monkeypatch.setattr(flock, "wait_before_retry", probe_ends)
        with Resumable(state_path) as r:
            assert r.position == 0
        assert pauses == [flock.RETRY_PAUSES[0]]

        pauses.clear()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        monkeypatch.setattr(flock, "wait_before_retry", pauses.append)
        with pytest.raises(StateLockedError), Resumable(state_path):
            pass
        assert pauses == list(flock.RETRY_PAUSES)
    finally:
        os.close(probe)


# -- reset ------------------------------------------------------------------------------


def test_reset_moves_the_state_and_backup_aside_and_the_next_run_starts_fresh(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    old_state = state_path.read_bytes()
    old_backup = state_path.with_name("job.state.bak").read_bytes()
    status, out, err = run(capsys, "reset", "--yes", state_path)
    assert (status, err) == (0, [])
    [aside] = state_path.parent.glob("job.state.reset-*[0-9]")
    assert re.fullmatch(r"job\.state\.reset-\d{8}T\d{6}", aside.name)
    assert out == (
        f"Reset {state_path}: its old state is now {aside} (its backup: {aside}.bak). "
        "The next run starts over.\n"
    )
    assert aside.read_bytes() == old_state
    assert aside.with_name(aside.name + ".bak").read_bytes() == old_backup
    assert not state_path.exists()
    assert not state_path.with_name("job.state.bak").exists()

    with Resumable(state_path) as r:
        assert (r.position, r.runs) == (0, 1)
        assert list(r.iterate(range(4))) == [0, 1, 2, 3]
    make_job(state_path, 4, items=4)  # more saves: they never touch what was set aside
    assert aside.read_bytes() == old_state
    assert aside.with_name(aside.name + ".bak").read_bytes() == old_backup


def test_after_reset_a_damaged_new_state_never_falls_back_to_the_old_job(
    state_path: Path,
) -> None:
    """The old backup is moved aside too: a new job whose first save is damaged gets an
    error, not the old job's progress from a backup it left behind."""
    make_job(state_path, 3)
    make_job(state_path, 5)
    resumable.reset(state_path)
    make_job(state_path, 1)  # one save of the new job: no backup of its own yet
    state_path.write_bytes(b"{")
    with pytest.raises(StateFileError, match="there is no backup"):
        inspect(state_path)


def test_reset_twice_in_one_second_keeps_both(state_path: Path) -> None:
    with freeze_time("2026-11-26 10:00:00", tick=False):
        make_job(state_path, 1)
        first = resumable.reset(state_path)
        make_job(state_path, 2)
        second = resumable.reset(state_path)
    assert second.name == first.name + "-2"
    assert (inspect(first).position, inspect(second).position) == (1, 2)
    assert first.parent == state_path.parent


def test_reset_is_refused_while_a_run_holds_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path)
    with job.stepped("--items", "3", "--every", "1") as holder:
        hold_in_item_1(holder)
        before = files(tmp_path)
        status, out, err = run(capsys, "reset", "--yes", job.state)
        assert (status, out) == (1, "")
        assert err == [
            f"resumable: error: cannot reset {job.state}: pid {holder.pid} is running this "
            "job. Stop it or let it finish, then reset."
        ]
        with pytest.raises(StateLockedError, match=f"process {holder.pid}") as refused:
            resumable.reset(job.state)
        assert refused.value.pid == holder.pid
        assert files(tmp_path) == before
        holder.ping()


def hold_in_item_1(holder: Child) -> None:
    """Let a stepped job finish and save item 0, and leave it waiting inside item 1."""
    holder.expect("ready 0 1")
    holder.expect("start 0")
    holder.send("go")
    holder.expect("end 0")
    holder.expect("start 1")


def test_reset_without_yes_off_a_terminal_is_a_usage_error(
    state_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_job(state_path, 3)
    before = files(state_path.parent)
    with open(os.devnull) as not_a_terminal:
        monkeypatch.setattr(sys, "stdin", not_a_terminal)
        status, out, err = run(capsys, "reset", state_path)
    assert (status, out) == (2, "")
    assert err == [
        f"resumable: error: reset asks before it resets {state_path}, and stdin is not a "
        "terminal: pass --yes to reset without asking"
    ]
    assert files(state_path.parent) == before


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Make stdin a real terminal (a pty); yields the other end, to type answers into."""
    typing_end, terminal_end = pty.openpty()
    with open(terminal_end) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        yield typing_end
    os.close(typing_end)


@pytest.mark.parametrize("answer", ["y", "yes", "Y"])
def test_reset_on_a_terminal_asks_first(
    state_path: Path, capsys: pytest.CaptureFixture[str], terminal: int, answer: str
) -> None:
    make_job(state_path, 1234)
    os.write(terminal, f"{answer}\n".encode())
    status, out, err = run(capsys, "reset", state_path)
    assert (status, err) == (0, [])
    assert out.startswith(f"Reset {state_path} (1,234 items done, not finished)? [y/N] Reset ")
    assert not state_path.exists()


@pytest.mark.parametrize("answer", ["", "n", "no", "whatever"])
def test_reset_on_a_terminal_changes_nothing_unless_told_yes(
    state_path: Path, capsys: pytest.CaptureFixture[str], terminal: int, answer: str
) -> None:
    make_job(state_path, 1)
    before = files(state_path.parent)
    os.write(terminal, f"{answer}\n".encode())
    status, out, err = run(capsys, "reset", state_path)
    assert (status, err) == (1, [])
    assert (
        out
        == f"Reset {state_path} (1 item done, not finished)? [y/N] Not reset: nothing changed.\n"
    )
    assert files(state_path.parent) == before


def test_reset_of_a_missing_state_file(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "reset", "--yes", state_path)
    assert (status, out) == (1, "")
    assert err == [f"resumable: error: cannot reset {state_path}: {NO_STATE_FILE}"]
    assert list(state_path.parent.iterdir()) == []  # no lock file either
    with pytest.raises(FileNotFoundError, match="nothing to reset"):
        resumable.reset(state_path)
    assert list(state_path.parent.iterdir()) == []


def test_reset_of_a_directory_is_an_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "reset", "--yes", tmp_path)
    says = (
        f"resumable: error: {tmp_path} is a directory, not a state file: pass the path of a "
        f"file, e.g. {tmp_path / 'job.state'}"
    )
    assert (status, err) == (1, [says])


def test_an_os_error_is_one_line_without_a_traceback(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 2)
    lock = state_path.with_name("job.state.lock")
    lock.unlink()
    lock.symlink_to(lock.name)
    status, out, err = run(capsys, "reset", "--yes", state_path)
    assert (status, out) == (1, "")
    assert err == [f"resumable: error: {lock}: Too many levels of symbolic links"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["status"], ["reset"], ["frobnicate"], ["status", "--bogus", "x"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "usage: resumable" in capsys.readouterr().err


# -- the installed command --------------------------------------------------------------


def installed(*argv: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the installed package, away from the source tree."""
    return subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_the_console_script_and_python_m_run_the_same_command_line(tmp_path: Path) -> None:
    script = shutil.which("resumable", path=str(Path(sys.executable).parent))
    assert script, f"no resumable console script is installed beside {sys.executable}"
    state = tmp_path / "job.state"
    make_job(state, 1234)
    saved = inspect(state).saved_at

    # A POSIX TZ string needs no time zone database: local time is UTC+05:30, named ABC.
    shown = installed(script, "status", "job.state", cwd=tmp_path, TZ="ABC-05:30")
    assert (shown.returncode, shown.stderr) == (0, "")
    local = (saved + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    assert rows(shown.stdout)["last saved"].startswith(f"{local} ABC (")
    assert rows(shown.stdout)["items done"] == "1,234 (not finished)"

    as_json = installed(
        sys.executable, "-m", "resumable", "status", "--json", "job.state", "x", cwd=tmp_path
    )
    assert as_json.returncode == 1
    assert [report["position"] for report in json.loads(as_json.stdout)] == [1234, None]
    assert as_json.stderr == f"resumable: error: x: {NO_STATE_FILE}\n"

    refused = installed(sys.executable, "-m", "resumable", "reset", "job.state", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "pass --yes" in refused.stderr

    done = installed(script, "reset", "--yes", "job.state", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert not state.exists()


def test_status_escapes_control_characters_in_failure_messages(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message's newline or terminal escape cannot fake a line of the report."""
    with Resumable(state_path) as r:
        for item in r.iterate(["a"], on_error="record"):
            with r.attempt():
                raise ValueError(f"{item}\n  running      no\x1b[2J")
    status, out, _ = run(capsys, "status", state_path)
    assert status == 0
    assert "#0: ValueError: a\\n  running      no\\x1b[2J (once)" in out
    assert "\x1b" not in out
    assert sum(line.lstrip().startswith("running") for line in out.splitlines()) == 1


def test_status_lists_the_failed_items_of_a_keyed_job(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with freeze_time("2026-11-27 09:00:00", tick=False), Resumable(state_path) as r:
        for url in r.iterate([f"u{n}" for n in range(9)], key=str, on_error="record"):
            with r.attempt():
                if url in ("u1", "u2", "u3", "u4", "u5", "u6"):
                    raise ConnectionError(f"{url} timed out")
    status, out, _ = run(capsys, "status", state_path)
    assert status == 0
    assert "  progress     by key" in out
    assert (
        "  failed       6 items (retried by later runs up to their max_attempts); the first 5:"
        in out
    )
    assert "               'u1': ConnectionError: u1 timed out (once)" in out
    assert "'u6'" not in out
    status, out, _ = run(capsys, "status", "--json", state_path)
    (report,) = json.loads(out)
    assert report["progress_kind"] == "keys"
    assert [item["key"] for item in report["failed"]] == ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert report["failed"][0] == {
        "key": "u1",
        "position": None,
        "error_type": "ConnectionError",
        "message": "u1 timed out",
        "attempts": 1,
        "failed_at": "2026-11-27T09:00:00+00:00",
    }


# -- hostile contents and names -----------------------------------------------------------


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the document of the state file at `path`, and write it with a valid checksum
    (docs/state-file.md): as an older writer or a hand edit could leave it."""
    document = json.loads(path.read_bytes())
    del document["checksum"]
    change(document)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode())


def job_with_a_failure(path: Path) -> None:
    with Resumable(path) as r:
        for item in r.iterate(range(3), on_error="record"):
            with r.attempt():
                if item == 1:
                    raise ValueError("no")


EDGE_DATES = [
    ("created_at", "0001-01-01T00:00:00+01:00"),  # year 0 in UTC
    ("saved_at", "9999-12-31T23:59:59-01:00"),  # year 10000 in UTC
    ("created_at", "0001-01-01T00:00:00"),  # naive, taken as UTC: year 0 west of it
    ("failed_at", "0001-01-01T00:00:00+01:00"),
]


@pytest.mark.parametrize(("field", "stored"), EDGE_DATES)
def test_dates_beyond_the_years_1_to_9999_in_utc_or_local_time_are_shown_as_stored(
    state_path: Path, field: str, stored: str
) -> None:
    job_with_a_failure(state_path)

    def change(document: dict[str, Any]) -> None:
        if field == "failed_at":
            # A record as format version 1 held it, in the state file itself (version 2
            # keeps records in the failure journal beside it).
            document["format_version"] = 1
            document["progress"]["failed"] = [
                {
                    "position": 1,
                    "error_type": "ValueError",
                    "message": "no",
                    "attempts": 1,
                    "failed_at": stored,
                }
            ]
        else:
            document[field] = stored

    rewrite(state_path, change)
    as_utc = stored if stored[-6] in "+-" else f"{stored}+00:00"  # naive is taken as UTC
    west = "XYZ+05"  # POSIX TZ: local time is UTC-5, and needs no time zone database
    shown = installed(
        sys.executable, "-m", "resumable", "status", state_path, cwd=state_path.parent, TZ=west
    )
    assert (shown.returncode, shown.stderr) == (0, "")
    if field != "failed_at":
        row = {"created_at": "created", "saved_at": "last saved"}[field]
        assert rows(shown.stdout)[row].startswith(f"{as_utc.replace('T', ' ')} (")

    as_json = installed(
        sys.executable,
        "-m",
        "resumable",
        "status",
        "--json",
        state_path,
        cwd=state_path.parent,
        TZ=west,
    )
    assert (as_json.returncode, as_json.stderr) == (0, "")
    [report] = json.loads(as_json.stdout)
    if field == "failed_at":
        assert report["failed"][0]["failed_at"] == as_utc
    else:
        assert report[field] == as_utc
    if field == "saved_at":
        assert report["seconds_since_saved"] < -7000 * 365 * 86400


def test_status_reports_each_path_even_when_one_cannot_be_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path that cannot be shown, for whatever reason, is its own error line; the others
    are shown, and the status is 1."""
    good, edge, deep, missing = (tmp_path / f"{name}.state" for name in "abcd")
    make_job(good, 3)
    make_job(edge, 4)
    rewrite(edge, lambda document: document.update(created_at="0001-01-01T00:00:00+01:00"))
    make_job(deep, 5)
    # Nested deeper than the JSON reader goes, and no backup to fall back to.
    rewrite(deep, lambda document: document.update(state={"a": [[[[]]]]}))
    deep.write_bytes(deep.read_bytes().replace(b"[[[[]]]]", b"[" * 300 + b"]" * 300))
    deep.with_name("c.state.bak").unlink(missing_ok=True)

    status, out, err = run(capsys, "status", good, edge, deep, missing)
    assert status == 1
    blocks = out.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [str(good), str(edge)]
    assert [rows(block)["items done"] for block in blocks] == [
        "3 (not finished)",
        "4 (not finished)",
    ]
    errors = [line for line in err if line.startswith("resumable: error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"resumable: error: {deep}")
    assert errors[1] == f"resumable: error: {missing}: {NO_STATE_FILE}"

    status, out, _ = run(capsys, "status", "--json", good, edge, deep, missing)
    assert status == 1
    reports = json.loads(out)
    assert [report["position"] for report in reports] == [3, 4, None, None]
    assert reports[2]["error"].startswith(str(deep))


HOSTILE = "x\x1b[2J\x1b]0;owned\x07\n  running      no" + os.fsdecode(b"\xff") + ".state"
HOSTILE_SHOWN = "x\\x1b[2J\\x1b]0;owned\\x07\\n  running      no\\xff.state"


def hostile_job(directory: Path) -> None:
    """A job whose file name, state key, failed item's key and error type hold a newline
    that would forge a row, escape sequences that clear the screen and set the window
    title, and a byte that is no UTF-8."""
    odd_error = type("E\x1b[31m\n  from backup  yes", (Exception,), {"__module__": "app"})
    with Resumable(directory / HOSTILE) as r:
        r.state["\x1b]0;owned\x07k\n  running      no"] = 1
        for key in r.iterate(["k\x1b[5m\n  failed       none"], key=str, on_error="record"):
            with r.attempt():
                raise odd_error(key)


def status_of(*argv: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The installed command's status, its output as bytes, as a terminal would get them."""
    script = Path(sys.executable).with_name("resumable")
    return subprocess.run(
        [str(script), "status", *argv], cwd=cwd, capture_output=True, timeout=60, check=False
    )


def test_status_escapes_all_it_shows_from_file_names_and_state_files(tmp_path: Path) -> None:
    hostile_job(tmp_path)
    missing = "gone\x1b[5m\n.state"
    shown = status_of(HOSTILE, missing, cwd=tmp_path)
    assert shown.returncode == 1
    for stream in (shown.stdout, shown.stderr):
        assert not any(byte < 0x20 and byte != ord("\n") for byte in stream)
        assert not any(byte == 0x7F or byte >= 0x80 for byte in stream)
    out, err = shown.stdout.decode(), shown.stderr.decode()
    assert out.splitlines()[0] == HOSTILE_SHOWN
    labels = [line.split()[0] for line in out.splitlines()[1:] if not line.startswith("   ")]
    assert labels == ["items", "last", "runs", "created", "progress", "state", "failed",
                      "running", "from"]  # fmt: skip
    assert rows(out)["state keys"] == "\\x1b]0;owned\\x07k\\n  running      no"
    assert (
        "               'k\\x1b[5m\\n  failed       none': "
        "app.E\\x1b[31m\\n  from backup  yes: k\\x1b[5m\\n  failed       none (once)"
    ) in out
    assert err == f"resumable: error: gone\\x1b[5m\\n.state: {NO_STATE_FILE}\n"


def test_status_json_of_names_that_are_no_utf8_is_valid_utf8(tmp_path: Path) -> None:
    """Bytes that are no UTF-8 appear as ``\\xNN`` text; JSON escapes control characters
    itself, so every other character is kept as it is."""
    hostile_job(tmp_path)
    shown = status_of("--json", HOSTILE, cwd=tmp_path)
    assert shown.returncode == 0
    [report] = json.loads(shown.stdout.decode("utf-8"))  # strict: no lone surrogates
    json.dumps(report, ensure_ascii=False).encode("utf-8")  # nor escapes of them
    assert report["path"] == HOSTILE.replace(os.fsdecode(b"\xff"), "\\xff")
    assert report["state_keys"] == ["\x1b]0;owned\x07k\n  running      no"]
    assert report["failed"][0]["error_type"] == "app.E\x1b[31m\n  from backup  yes"


def test_status_shows_each_sink_with_its_recorded_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "job.state"
    with Resumable(state) as r:
        first, second = r.sink(tmp_path / "a.jsonl"), r.sink(tmp_path / "b.txt")
        for item in r.iterate(range(3)):
            first.write_json(item)
        second.write("x" * 1234)
    status, out, _ = run(capsys, "status", state)
    assert status == 0
    lines = [line.strip() for line in out.splitlines()]
    at = lines.index(f"sinks        {tmp_path / 'a.jsonl'} (6 bytes)")
    assert lines[at + 1] == f"{tmp_path / 'b.txt'} (1,234 bytes)"
    status, out, _ = run(capsys, "status", "--json", state)
    [report] = json.loads(out)
    assert report["sinks"] == {str(tmp_path / "a.jsonl"): 6, str(tmp_path / "b.txt"): 1234}


def test_reset_leaves_the_sinks_as_they_are_and_says_what_the_next_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out_file = tmp_path / "job.state", tmp_path / "a.jsonl"
    with Resumable(state) as r:
        sink = r.sink(out_file)
        for item in r.iterate(range(3)):
            sink.write_json(item)
    status, out, _ = run(capsys, "reset", "--yes", state)
    assert status == 0
    assert f"Its output files are left as they are: {out_file}." in out
    assert out_file.read_text() == "0\n1\n2\n"


# -- the files of a job, named as a shell's `job.state*` names them ---------------------


def keyed_job_with_every_file(path: Path) -> Resumable:
    """A keyed job left open after a save of progress alone: its state file, backup,
    lock, progress log, key journal and failure journal are all there."""
    r = Resumable(path)
    r.__enter__()
    for key in r.iterate(["a", "b", "c"], key=str, on_error="record"):
        with r.attempt():
            if key == "b":
                raise ValueError("b fails")
        r.save()
    with Resumable(path.with_name("other.state")) as other:
        for _ in other.iterate(range(3)):
            pass
    return r


def test_status_of_every_file_of_two_jobs_reports_each_job_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = keyed_job_with_every_file(tmp_path / "job.state")
    try:
        names = [path.name for path in tmp_path.iterdir()]
        for ending in (".lock", ".bak", ".log", ".keys-", ".failed-"):
            assert any(name.startswith("job.state" + ending) for name in names), names
        status, out, err = run(capsys, "status", *sorted(tmp_path.iterdir()))
        assert (status, err) == (0, [])
        shown = [line for line in out.splitlines() if line and not line.startswith(" ")]
        assert shown == [str(tmp_path / "job.state"), str(tmp_path / "other.state")]
    finally:
        r.__exit__(None, None, None)


def test_status_of_a_jobs_lock_file_alone_names_the_job_instead_of_calling_it_damaged(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 3)
    lock = state_path.with_name("job.state.lock")
    status, _, err = run(capsys, "status", lock)
    assert status == 1
    assert err == [
        f"resumable: error: {lock} is the lock file of the job {state_path}, not a state "
        f"file: run `resumable status {state_path}`"
    ]


def test_reset_of_a_jobs_lock_file_is_refused_and_of_all_its_files_resets_the_job_once(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    lock = state_path.with_name("job.state.lock")
    before = files(state_path.parent)
    status, _, err = run(capsys, "reset", "--yes", lock)
    assert status == 1
    assert err == [
        f"resumable: error: cannot reset {lock}: it is the lock file of the job "
        f"{state_path}, not a job. To start that job over: resumable reset {state_path}"
    ]
    assert files(state_path.parent) == before  # the lock file of a job is never moved

    status, out, err = run(capsys, "reset", "--yes", *sorted(state_path.parent.iterdir()))
    assert (status, err) == (0, [])
    assert out.count("Reset ") == 1
    [aside] = state_path.parent.glob("job.state.reset-*[0-9]")
    assert aside.read_bytes() == before["job.state"]
    assert lock.exists()  # the job's own lock, left where a next run takes it


def test_a_job_named_like_the_file_of_another_name_is_still_a_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "data.log" ends as a progress log's name, but no job "data" is beside it.
    make_job(tmp_path / "data.log", 3)
    status, out, err = run(capsys, "status", tmp_path / "data.log")
    assert (status, err) == (0, [])
    assert rows(out)["items done"] == "3 (not finished)"
