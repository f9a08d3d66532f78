"""`resumable status --watch`: a real job in one process, stepped item by item through its
stdin, and the real command line watching it from another, read line by line."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyte  # the test group installs it: a missing one must fail, never skip
import pytest

from resumable import Resumable

from jobs.harness import Child, Job

# The command line, run by a script path as `Child` runs its jobs.
COMMAND_LINE = """
import runpy, sys
sys.argv[0] = "resumable"
runpy.run_module("resumable", run_name="__main__")
"""


@contextmanager
def command(tmp_path: Path, *argv: str | Path) -> Iterator[Child]:
    script = tmp_path / "resumable_command.py"
    script.write_text(COMMAND_LINE)
    with Child(script, *argv) as child:
        yield child


def next_reading(watcher: Child, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first JSON line from `watcher` that is `wanted` (each line is one refresh)."""
    while True:
        line = watcher.read_line()
        assert line is not None, watcher.describe("the watch ended first")
        reading: dict[str, Any] = json.loads(line)
        if wanted(reading):
            return reading


def at_position(done: int) -> Callable[[dict[str, Any]], bool]:
    """A reading whose job has `done` items done."""
    return lambda reading: reading["position"] == done


def step(run: Child, item: int) -> None:
    """Let item `item` finish; return once the next item started, its save made."""
    run.send("go")
    run.expect(f"end {item}")


def started_job(job: Job, items: int) -> Child:
    run = job.stepped("--items", str(items), "--every", "1")
    run.expect("ready 0 1")
    run.expect("start 0")
    step(run, 0)
    run.expect("start 1")  # item 0 is saved
    return run


def test_watch_follows_a_running_job_and_exits_0_when_it_finishes(tmp_path: Path) -> None:
    job = Job(tmp_path)
    with (
        started_job(job, 4) as run,
        command(
            tmp_path, "status", "--watch", "--json", "--interval", "0.05", job.state
        ) as watcher,
    ):
        first = next_reading(watcher, lambda r: r["position"] == 1)
        assert first["running"] is True
        assert (first["pid"], first["alive"]) == (run.pid, True)
        assert (first["total"], first["finished"], first["outcome"]) == (4, False, None)
        assert first["seconds_since_saved"] >= 0
        for item in (1, 2):
            step(run, item)
            run.expect(f"start {item + 1}")
            reading = next_reading(watcher, at_position(item + 1))
        assert reading["items_per_second"] > 0  # two saves of this run seen, at least
        assert reading["eta_seconds"] == pytest.approx(1 / reading["items_per_second"])
        step(run, 3)
        run.expect("done 4 True")
        last = next_reading(watcher, lambda r: r["outcome"] is not None)
        assert (last["outcome"], last["finished"], last["position"]) == ("finished", True, 4)
        assert watcher.read_line() is None
        assert watcher.process.wait() == 0


def test_watch_through_a_symlink_sees_the_run_holding_the_job_it_leads_to(
    tmp_path: Path,
) -> None:
    job = Job(tmp_path)
    link = tmp_path / "link.state"
    link.symlink_to(job.state)
    with (
        started_job(job, 4) as run,
        command(tmp_path, "status", "--watch", "--json", "--interval", "0.05", link) as watcher,
    ):
        first = next_reading(watcher, at_position(1))
        assert (first["running"], first["pid"]) == (True, run.pid)


def test_watch_exits_3_when_the_run_holding_the_job_is_killed(tmp_path: Path) -> None:
    job = Job(tmp_path)
    with (
        started_job(job, 10) as run,
        command(
            tmp_path, "status", "--watch", "--json", "--interval", "0.05", job.state
        ) as watcher,
    ):
        next_reading(watcher, lambda r: r["running"] is True)
        run.process.kill()
        run.process.wait()
        last = next_reading(watcher, lambda r: r["outcome"] is not None)
        assert last["outcome"] == "ended"
        assert (last["running"], last["pid"], last["alive"]) == (False, run.pid, False)
        assert (last["position"], last["finished"]) == (1, False)
        assert watcher.read_line() is None
        assert watcher.process.wait() == 3


def test_watch_of_a_finished_job_shows_it_once_and_exits_0(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for _ in r.iterate(range(3)):
            pass
    shown = subprocess.run(
        [sys.executable, "-m", "resumable", "status", "--watch", state_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (shown.returncode, shown.stderr) == (0, "")
    lines = shown.stdout.splitlines()
    assert "done watching" in lines[0]
    assert lines[1:4] == [str(state_path), "  items done   3 (finished)", "  rate         -"]
    assert "  running      no: the job finished" in lines


@pytest.mark.parametrize(
    "argv",
    [["--watch", "--interval", "0"], ["--watch", "--interval", "-1"], ["--interval", "1"]],
)
def test_watch_intervals_that_make_no_sense_are_usage_errors(
    state_path: Path, argv: list[str]
) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "resumable", "status", *argv, state_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 2
    assert "Traceback" not in shown.stderr


def test_watch_on_a_terminal_redraws_in_place(tmp_path: Path) -> None:
    job = Job(tmp_path)
    controller, terminal = pty.openpty()
    with started_job(job, 3) as run:
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resumable",
                "status",
                "--watch",
                "--interval",
                "0.05",
                job.state,
            ],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        shown = b""
        try:
            while shown.count(b"every 0.05 s") < 3:  # three refreshes drawn
                shown += os.read(controller, 65536)
            for item in (1, 2):
                step(run, item)
                run.expect(f"start {item + 1}" if item < 2 else "done 3 True")
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the watch ended and its terminal closed
                    break
                if not chunk:
                    break
                shown += chunk
            assert watcher.wait(timeout=60) == 0
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
            os.close(controller)
    screen = pyte.Screen(100, 30)
    pyte.ByteStream(screen).feed(shown)
    lines = [line.rstrip() for line in screen.display if line.strip()]
    assert len(lines) == 7, lines  # one block: each refresh drew over the one before
    assert lines[0].startswith("resumable status --watch, ")
    assert lines[0].endswith(": done watching")
    assert lines[1:3] == [str(job.state), "  items done   3 (finished)"]


def test_every_key_of_a_watch_reading_is_documented(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for _ in r.iterate(range(3)):
            pass
    shown = subprocess.run(
        [sys.executable, "-m", "resumable", "status", "--watch", "--json", state_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    keys = set(json.loads(shown.stdout.splitlines()[0]))
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    section = docs.split("## Watching a running job", 1)[1].split("\n## ", 1)[0]
    section = section.split("With `--json`", 1)[1]  # its own table, after the rows
    table = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {key for line in table for key in re.findall(r"`(\w+)`", line.split(" | ")[0])}
    assert documented == keys
