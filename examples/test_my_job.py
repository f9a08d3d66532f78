"""Tests of a resumable job of your own: copy this file beside your tests and adapt it.

`count_words` stands in for your job (in your project, import it from your code). The tests
show the three things worth testing in any resumable job, with the kit that comes with the
library (`resumable.testing`, a pytest plugin installed with it):

- when it saves, on a clock the test moves (the `fake_clock` fixture, `run_loop`);
- that a run stopped half-way and run again gives the result of one uninterrupted run;
- that ctrl+c stops it between two items, with the progress saved.

Run it with ``pytest examples/test_my_job.py``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from resumable import NPolicy, Resumable, TimePolicy, inspect
from resumable.testing import FakeClock, run_loop

# The job's policy, named so that its tests use the very same one.
SAVE_POLICY = NPolicy(100) | TimePolicy(60)


def count_words(
    path: str | os.PathLike[str],
    lines: Iterable[str],
    *,
    clock: Callable[[], float] | None = None,
) -> dict[str, int]:
    """The job: count the words of `lines`, resumably; the counts live in `r.state`."""
    with Resumable(path, policy=SAVE_POLICY, clock=clock) as r:
        counts: dict[str, int] = r.state.setdefault("counts", {})
        for line in r.iterate(lines):
            for word in line.split():
                counts[word] = counts.get(word, 0) + 1
    return counts


LINES = [f"line {number} of {number % 7} words" for number in range(1000)]


def test_fast_lines_are_saved_every_100(tmp_path: Path, fake_clock: FakeClock) -> None:
    saves = run_loop(
        tmp_path / "job.state", LINES, policy=SAVE_POLICY, clock=fake_clock, seconds_per_item=0.1
    )
    assert [save.position for save in saves] == list(range(100, 1001, 100))
    assert saves[-1].reason == "completion"


def test_slow_lines_are_saved_every_minute(tmp_path: Path, fake_clock: FakeClock) -> None:
    saves = run_loop(
        tmp_path / "job.state",
        LINES[:200],
        policy=SAVE_POLICY,
        clock=fake_clock,
        seconds_per_item=2.0,
    )
    assert [save.position for save in saves] == [30, 60, 90, 120, 150, 180, 200]
    assert [save.seconds for save in saves[:3]] == [60.0, 120.0, 180.0]


def test_a_stopped_run_carries_on_to_the_same_result(tmp_path: Path) -> None:
    state = tmp_path / "job.state"

    def crashing(lines: Iterable[str]) -> Iterable[str]:
        for number, line in enumerate(lines):
            if number == 450:
                raise RuntimeError("the machine went away")
            yield line

    with pytest.raises(RuntimeError, match="went away"):
        count_words(state, crashing(LINES))
    assert inspect(state).position == 450  # every line before the failure is saved
    assert count_words(state, LINES) == count_words(tmp_path / "once.state", LINES)


def test_ctrl_c_stops_between_two_lines_with_the_progress_saved(tmp_path: Path) -> None:
    state = tmp_path / "job.state"

    def interrupted(lines: Iterable[str]) -> Iterable[str]:
        for number, line in enumerate(lines):
            if number == 10:
                signal.raise_signal(signal.SIGINT)  # a real ctrl+c, as line 10 is read
            yield line

    with pytest.raises(KeyboardInterrupt):
        count_words(state, interrupted(LINES))
    assert inspect(state).position == 11  # line 10 was counted, then the loop stopped
    assert count_words(state, LINES) == count_words(tmp_path / "once.state", LINES)
