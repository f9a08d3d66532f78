"""What the library says goes through the `resumable` logger; stdout and stderr stay quiet."""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path

import pytest

from resumable import NPolicy, Resumable


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records]


def test_a_run_logs_its_start_saves_and_end_and_prints_nothing(
    state_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="resumable"),
        Resumable(state_path, policy=NPolicy(2)) as r,
    ):
        r.state["note"] = "hi"
        for _ in r.iterate(range(3)):
            pass
    logged = messages(caplog)
    assert logged[0] == ("INFO", f"{state_path}: starting a new job")
    saves = [text for level, text in logged if level == "DEBUG"]
    assert len(saves) == 2  # after 2 items, and when the input ran out
    assert re.fullmatch(
        rf"{re.escape(str(state_path))}: saved position 2 at \d+\.\d{{3}} s \(policy: "
        r"NPolicy\(2\); \d+ bytes, 1 state keys\) in \d+\.\d ms",
        saves[0],
    ), saves[0]
    assert ("INFO", f"{state_path}: finished after 3 items") in logged
    assert all(record.name == "resumable" for record in caplog.records)
    assert capsys.readouterr() == ("", "")


def test_a_resume_says_where_it_resumed(state_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Resumable(state_path) as r:
        for item in r.iterate(range(10)):
            if item == 4:
                break
    with caplog.at_level(logging.INFO, logger="resumable"), Resumable(state_path):
        pass
    assert messages(caplog) == [("INFO", f"{state_path}: resuming at item 4 (run 2)")]


def test_a_stop_by_a_signal_is_logged_even_when_the_stderr_line_is_silenced(
    state_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="resumable"),
        pytest.raises(KeyboardInterrupt),
        Resumable(state_path, quiet=True) as r,
    ):
        for item in r.iterate(range(10)):
            if item == 3:
                signal.raise_signal(signal.SIGINT)
    assert (
        "INFO",
        f"stopped by SIGINT after 4 items (4 in this run); progress saved to {state_path}. "
        "Run again to continue.",
    ) in messages(caplog)
    assert capsys.readouterr().err == ""
