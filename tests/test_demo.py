"""`python -m resumable demo`, stopped with a real ctrl+c and run again."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import resumable


def demo(state: Path, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "resumable", "demo", "--state", str(state), *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_demo_stops_on_ctrl_c_and_continues_where_it_stopped(state_path: Path) -> None:
    first = demo(state_path, "--items", "200", "--delay", "0.02")
    assert first.stdout is not None
    assert f"its state in {state_path}." in first.stdout.readline()  # where to find it
    for line in first.stdout:
        if line.strip() == "item 50/200":
            break
    first.send_signal(signal.SIGINT)
    _, errors = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "resumable: stopped by SIGINT after" in errors
    stopped_at = resumable.inspect(state_path).position
    assert 50 <= stopped_at < 200

    second = demo(state_path, "--items", "200", "--delay", "0")
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 0
    assert f"Resuming at item {stopped_at} of 200 (run 2), from {state_path}." in output
    assert "matches an uninterrupted run" in output

    third = demo(state_path, "--items", "200")
    output, _ = third.communicate(timeout=60)
    assert "This job already finished: 200 items" in output
