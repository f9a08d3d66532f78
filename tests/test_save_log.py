"""r.save_log: each save of the run, where, when, why, and which member of the policy fired."""

from __future__ import annotations

import logging
import re
import signal
from datetime import datetime, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time

from resumable import NPolicy, Resumable, SaveRecord, TimePolicy


def test_each_reason_is_logged_with_its_position(state_path: Path) -> None:
    with Resumable(state_path, policy=NPolicy(5)) as r:
        r.save()  # before the loop: explicit, nothing done yet
        for item in r.iterate(range(12)):
            if item == 7:
                r.save()  # seven done: the body of item 7 runs
        for record in r.save_log:
            assert isinstance(record, SaveRecord)
        assert [(s.reason, s.position) for s in r.save_log] == [
            ("explicit", 0),
            ("policy", 5),
            ("explicit", 7),
            ("completion", 12),  # the policy's turn too, but the input ran out first
        ]
    assert [s.number for s in r.save_log] == [1, 2, 3, 4]


def test_completion_exit_and_signal_saves_are_told_apart(tmp_path: Path) -> None:
    with Resumable(tmp_path / "done.state", policy=NPolicy(100)) as r:
        list(r.iterate(range(10)))
    assert [(s.reason, s.position) for s in r.save_log] == [("completion", 10)]

    with Resumable(tmp_path / "broken.state", policy=NPolicy(100)) as r:
        for item in r.iterate(range(10)):
            if item == 4:
                break
    assert [(s.reason, s.position) for s in r.save_log] == [("exit", 4)]

    with (
        pytest.raises(KeyboardInterrupt),
        Resumable(tmp_path / "stopped.state", policy=NPolicy(100), quiet=True) as r,
    ):
        for item in r.iterate(range(10)):
            if item == 6:
                signal.raise_signal(signal.SIGINT)
    assert [(s.reason, s.position) for s in r.save_log] == [("signal", 7)]


def test_a_policy_save_names_the_member_that_fired(state_path: Path) -> None:
    """The first 8 items take 4 s: TimePolicy(30) fires at item 8; then NPolicy(10)."""
    by_count, by_time = NPolicy(10), TimePolicy(30)
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=by_count | by_time) as r,
    ):
        for index in r.iterate(range(30)):
            frozen.tick(4 if index < 8 else 0.01)
    assert [(s.position, s.fired) for s in r.save_log] == [
        (8, by_time),
        (18, by_count),
        (28, by_count),
        (30, None),  # completion
    ]
    assert r.save_log[-1].reason == "completion"


def test_seconds_count_from_the_loop_start_by_its_clock_and_saved_at_is_the_wall_clock(
    state_path: Path,
) -> None:
    with (
        freeze_time("2026-03-04 05:06:07", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60)) as r,
    ):
        frozen.tick(1000)  # setup before the loop: not the loop's time
        for _ in r.iterate(range(130)):
            frozen.tick(1)
    assert [(s.position, s.seconds) for s in r.save_log] == [(60, 60.0), (120, 120.0), (130, 130.0)]
    assert r.save_log[0].saved_at == datetime(2026, 3, 4, 5, 23, 47, tzinfo=timezone.utc)


def test_the_log_keeps_the_latest_thousand_saves(state_path: Path) -> None:
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for _ in r.iterate(range(1200)):
            pass
        assert r.saves == 1200
        log = r.save_log
    assert len(log) == 1000
    assert (log[0].number, log[0].position) == (201, 201)
    assert (log[-1].number, log[-1].position) == (1200, 1200)


def test_the_log_is_not_in_the_state_file(state_path: Path) -> None:
    with Resumable(state_path) as r:
        list(r.iterate(range(3)))
    assert len(r.save_log) == 1
    assert b"policy" not in state_path.read_bytes()
    assert b"completion" not in state_path.read_bytes()


def test_the_debug_line_of_a_save_says_when_and_why(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="resumable"),
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=NPolicy(2) | TimePolicy(60)) as r,
    ):
        for _ in r.iterate(range(3)):
            frozen.tick(1.5)
    saves = [record.getMessage() for record in caplog.records if record.levelname == "DEBUG"]
    path = re.escape(str(state_path))
    assert re.fullmatch(
        rf"{path}: saved position 2 at 3\.000 s \(policy: NPolicy\(2\); \d+ bytes, 0 state "
        r"keys\) in \d+\.\d ms",
        saves[0],
    ), saves[0]
    assert re.fullmatch(rf"{path}: saved position 3 at 4\.500 s \(completion; .*", saves[1])


def test_the_debug_line_gives_the_length_of_the_save_in_milliseconds(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock moves by exactly 1 s at each reading (freezegun's auto tick), so a save
    that reads it k times between its start and its end lasted k whole seconds: the line
    says k * 1000 ms, 1 <= k <= 100, whatever k the save's code makes it."""
    with (
        caplog.at_level(logging.DEBUG, logger="resumable"),
        freeze_time("2026-01-01", auto_tick_seconds=1),
        Resumable(state_path) as r,
    ):
        r.save()
    [line] = [record.getMessage() for record in caplog.records if " in " in record.getMessage()]
    found = re.search(r" in (\d+)\.(\d) ms$", line)
    assert found is not None, line
    milliseconds, tenths = int(found[1]), found[2]
    assert tenths == "0", line
    assert 1000 <= milliseconds <= 100_000, line
    assert milliseconds % 1000 == 0, line
