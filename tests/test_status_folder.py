"""``resumable status`` over a folder of jobs (a URL prefix, a local directory), and
``status``/``reset`` of one job named by URL, run in this process (`main`, as the
installed command runs it) on the backends of the object store tests (conftest.py)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from resumable import NPolicy, Resumable

from jobs.harness import resumable_command

main = resumable_command()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def make_jobs(folder: str) -> None:
    """Under `folder`: a finished job, one stopped with failures, one reset (its old state
    aside, which is no job), and a nested one not finished."""
    with Resumable(folder + "done.state", quiet=True) as r:
        for _ in r.iterate(range(10)):
            pass
    with pytest.raises(KeyboardInterrupt), Resumable(folder + "half.state", quiet=True) as r:
        for item in r.iterate(range(10), on_error="record"):
            with r.attempt():
                if item in (2, 3):
                    raise ValueError(item)
            if item == 5:
                raise KeyboardInterrupt
    with Resumable(folder + "reset.state", policy=NPolicy(1), quiet=True) as r:
        for _ in r.iterate(range(3)):
            pass
    with Resumable(folder + "reset.state", policy=NPolicy(1), restart=True, quiet=True) as r:
        for _ in r.iterate(range(2)):
            pass
    with Resumable(folder + "deeper/part.state", quiet=True) as r:
        for item in r.iterate(range(10)):
            if item == 4:
                break


@pytest.fixture
def folder(job_url: str) -> str:
    """A folder of jobs on each backend: the job URL's, with a slash."""
    return job_url.rsplit("/", 1)[0] + "/"


def test_status_of_a_url_folder_sums_its_jobs_and_names_who_holds_each(
    folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_jobs(folder)
    with Resumable(folder + "running.state", quiet=True):
        status, out, _ = run(capsys, "status", folder)
        _, shown, _ = run(capsys, "status", "--json", folder)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == folder
    assert "  jobs          5" in lines
    assert "  finished      2" in lines  # done, and reset (its new run)
    assert "  running       1" in lines
    assert "  items done    21" in lines  # 10 + 5 + 2 + 4, and no state for the one running
    assert "  failed        2 items" in lines
    host = socket.gethostname()
    assert any(
        line.startswith("  running.state  ") and f"running: pid {os.getpid()} on {host}" in line
        for line in lines
    )
    assert not any(".reset-" in line for line in lines)
    (summary,) = json.loads(shown)
    assert {k: summary[k] for k in ("jobs", "finished", "running", "items_done", "failed")} == {
        "jobs": 5,
        "finished": 2,
        "running": 1,
        "items_done": 21,
        "failed": 2,
    }
    by_path = {state["path"]: state for state in summary["states"]}
    assert by_path[folder + "deeper/part.state"]["position"] == 4
    running = by_path[folder + "running.state"]
    assert (running["running"], running["pid"], running["host"]) == (True, os.getpid(), host)
    assert running["lease_until"] is not None


def test_status_of_a_local_directory_of_state_files_sums_them_as_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "deeper").mkdir()  # a local job's folder is not made for it
    make_jobs(f"{tmp_path}/")
    status, shown, _ = run(capsys, "status", "--json", str(tmp_path))
    assert status == 0
    (summary,) = json.loads(shown)
    assert (summary["jobs"], summary["finished"], summary["items_done"]) == (4, 2, 21)
    assert summary["running"] == 0


def test_status_of_one_job_by_url_shows_it_and_its_lease_holder(
    job_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Resumable(job_url, quiet=True) as r:
        for _ in r.iterate(range(3)):
            pass
        status, out, _ = run(capsys, "status", job_url)
        _, shown, _ = run(capsys, "status", "--json", job_url)
    assert status == 0
    assert out.splitlines()[0] == job_url
    assert f"  running      yes, pid {os.getpid()} on {socket.gethostname()}" in out
    (report,) = json.loads(shown)
    assert (report["path"], report["position"], report["pid"]) == (job_url, 3, os.getpid())
    assert report["host"] == socket.gethostname()


def test_reset_by_url_at_the_shell_sets_the_job_aside(
    job_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):  # two saves: the state and a backup
        with Resumable(job_url, quiet=True) as r:
            for _ in r.iterate(range(3)):
                pass
    status, out, _ = run(capsys, "reset", "--yes", job_url)
    assert status == 0
    assert out.startswith(f"Reset {job_url}: its old state is now {job_url}.reset-")
    assert "(its backup: " in out
    status, _, err = run(capsys, "status", job_url)
    assert status == 1
    assert "no state file" in err


def test_status_watch_of_a_finished_url_job_reports_it_finished_and_exits_0(
    job_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Resumable(job_url, quiet=True) as r:
        for _ in r.iterate(range(3)):
            pass
    status, out, _ = run(capsys, "status", "--watch", "--json", job_url)
    assert status == 0
    (line,) = out.splitlines()
    reading = json.loads(line)
    assert (reading["path"], reading["position"], reading["finished"]) == (job_url, 3, True)


def test_status_takes_jobs_or_folders_not_both(
    job_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = job_url.rsplit("/", 1)[0] + "/"
    status, _, err = run(capsys, "status", folder, job_url)
    assert status == 2
    assert "either jobs" in err
