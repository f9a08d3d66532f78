"""What the library says goes through the `resumable` logger; stdout and stderr stay quiet."""

from __future__ import annotations

import logging
import os
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


def test_a_file_name_that_is_no_utf8_with_a_newline_logs_one_escaped_line_to_a_utf8_file(
    tmp_path: Path,
) -> None:
    """A FileHandler that writes UTF-8 strictly: a lone surrogate (a byte of the file name
    that is no UTF-8) failed the handler ("--- Logging error ---"), and the newline made
    a second line that looked like a record of its own."""
    log = tmp_path / "job.log"
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("resumable")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    name = "a\nINFO forged" + os.fsdecode(b"\xff") + ".state"
    try:
        with Resumable(tmp_path / name) as r:
            for _ in r.iterate(range(3)):
                pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing was logged"
    assert all(line.startswith("INFO ") for line in lines), lines
    assert not any(line.startswith("INFO forged") for line in lines), lines
    assert f"{tmp_path}/a\\nINFO forged\\xff.state: starting a new job" in lines[0]
