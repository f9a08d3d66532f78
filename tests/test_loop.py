"""What `iterate` yields, what counts as done, and what a rerun skips."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, overload

import pytest
from freezegun import freeze_time

from resumable import (
    InputChangedError,
    NPolicy,
    Resumable,
    ResumableWarning,
    UsageError,
    inspect,
)


def run(
    path: Path,
    items: Iterable[object],
    stop_at: int | None = None,
    restart: bool = False,
    on_change: Literal["raise", "restart", "continue"] = "raise",
) -> list[object]:
    """Loop over `items`, breaking before the body of the item at index `stop_at`."""
    seen: list[object] = []
    with Resumable(path, restart=restart) as r:
        for item in r.iterate(items, on_change=on_change):
            if len(seen) == stop_at:
                break
            seen.append(item)
    return seen


def test_a_rerun_continues_where_break_left_off(state_path: Path) -> None:
    assert run(state_path, list(range(10)), stop_at=4) == [0, 1, 2, 3]
    assert inspect(state_path).position == 4
    assert run(state_path, list(range(10))) == [4, 5, 6, 7, 8, 9]
    assert inspect(state_path).finished


def test_an_exception_in_the_body_propagates_unchanged_after_saving(state_path: Path) -> None:
    error = ValueError("boom")
    with pytest.raises(ValueError, match="boom") as raised, Resumable(state_path) as r:
        for item in r.iterate(range(10)):
            if item == 6:
                raise error
    assert raised.value is error
    assert inspect(state_path).position == 6  # item 6 itself is not done
    assert run(state_path, range(10)) == [6, 7, 8, 9]


def test_exhausting_the_input_saves_the_job_as_finished(state_path: Path) -> None:
    with Resumable(state_path, policy=NPolicy(10**6)) as r:
        assert list(r.iterate("abc")) == ["a", "b", "c"]
        assert r.finished
        assert r.saves == 1
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (3, True)


def test_a_finished_job_yields_nothing_and_says_so(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(state_path, range(3))
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert run(state_path, range(3)) == []
    assert "already finished (3 items)" in caplog.text
    assert "restart=True" in caplog.text


def test_restart_starts_a_finished_job_over(state_path: Path) -> None:
    run(state_path, range(3))
    assert run(state_path, range(3), restart=True) == [0, 1, 2]
    assert inspect(state_path).runs == 1


def test_runs_are_counted(state_path: Path) -> None:
    run(state_path, range(5), stop_at=1)
    run(state_path, range(5), stop_at=1)
    with Resumable(state_path) as r:
        assert r.runs == 3


def test_a_run_whose_loop_started_but_finished_no_item_counts_as_a_run(state_path: Path) -> None:
    """A run counts once it starts its loop (`Resumable.runs`), even if it then finishes
    nothing: its exit saves, to record it."""
    run(state_path, range(5), stop_at=2)
    assert run(state_path, range(5), stop_at=0) == []
    snapshot = inspect(state_path)
    assert (snapshot.runs, snapshot.position) == (2, 2)


class CountingSequence(Sequence[int]):
    """A sequence that records which indexes were read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read: list[int] = []

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            raise NotImplementedError
        if not 0 <= index < self.size:
            raise IndexError(index)
        self.read.append(index)
        return index


def test_a_sequence_resumes_reading_only_the_done_items_that_check_the_input(
    state_path: Path,
) -> None:
    """The first 16 done items are read (the input's fingerprint) and the last one (the
    input is at least that long); the other 43 never."""
    run(state_path, CountingSequence(100), stop_at=60)
    resumed = CountingSequence(100)
    assert run(state_path, resumed) == list(range(60, 100))
    assert [index for index in resumed.read if index < 60] == [*range(16), 59]


def test_a_list_resumes_at_its_position(state_path: Path) -> None:
    run(state_path, ["a", "b", "c", "d"], stop_at=3)
    assert run(state_path, ["a", "b", "c", "d"]) == ["d"]


@pytest.mark.parametrize(
    "items",
    [tuple(range(10)), bytes(range(10)), range(10), "abcdefghij", range(10**20)],
    ids=["tuple", "bytes", "range", "str", "range too long for len()"],
)
def test_builtin_sequences_resume_at_their_position(
    state_path: Path, items: Sequence[object]
) -> None:
    run(state_path, items, stop_at=7)
    assert run(state_path, items, stop_at=3) == [items[7], items[8], items[9]]


def test_a_generator_has_its_done_prefix_skipped_without_running_the_body(
    state_path: Path,
) -> None:
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for number in range(10):
            produced.append(number)
            yield number

    run(state_path, numbers(), stop_at=4)
    produced.clear()
    assert run(state_path, numbers()) == [4, 5, 6, 7, 8, 9]
    assert produced == list(range(10))  # the prefix is consumed, the body sees only the rest


def test_a_file_resumes_at_the_same_line(state_path: Path, tmp_path: Path) -> None:
    lines = tmp_path / "input.txt"
    lines.write_text("".join(f"line {n}\n" for n in range(5)))
    with lines.open() as handle:
        run(state_path, handle, stop_at=2)
    with lines.open() as handle:
        assert run(state_path, handle) == ["line 2\n", "line 3\n", "line 4\n"]


def test_a_shorter_sequence_on_resume_is_an_error(state_path: Path) -> None:
    run(state_path, list(range(10)), stop_at=8)
    with pytest.raises(InputChangedError, match="it had 10 items last time and has 5 now"):
        run(state_path, list(range(5)))
    # Going on by position cannot work either: the done items are not all there.
    with pytest.raises(InputChangedError, match="8 items are done, but the input has only 5"):
        run(state_path, list(range(5)), on_change="continue")
    assert inspect(state_path).position == 8  # nothing was lost


def test_a_shorter_generator_on_resume_is_an_error(state_path: Path) -> None:
    run(state_path, iter(range(10)), stop_at=8)
    with pytest.raises(InputChangedError, match="fewer than the 8 items it started with"):
        run(state_path, iter(range(7)))
    with pytest.raises(InputChangedError, match="ran out before that"):
        run(state_path, iter(range(7)), on_change="continue")
    assert inspect(state_path).position == 8


def test_an_input_exactly_as_long_as_the_position_finishes_when_accepted(
    state_path: Path,
) -> None:
    run(state_path, list(range(10)), stop_at=8)
    assert run(state_path, list(range(8)), on_change="continue") == []
    assert inspect(state_path).finished


def test_position_inside_the_loop_counts_the_items_before_the_current_one(
    state_path: Path,
) -> None:
    run(state_path, range(10), stop_at=3)
    with Resumable(state_path) as r:
        assert r.position == 3
        seen = [(item, r.position) for item in r.iterate(range(10))]
        assert r.position == 10
    assert seen == [(n, n) for n in range(3, 10)]


def test_user_state_is_saved_with_the_progress_and_loaded_on_resume(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for item in r.iterate(range(10)):
            if item == 5:
                break
            r.state["sum"] = r.state.get("sum", 0) + item
            r.state["seen"] = [*r.state.get("seen", []), str(item)]
    with Resumable(state_path) as r:
        assert r.state == {"sum": 10, "seen": ["0", "1", "2", "3", "4"]}
    assert inspect(state_path).state["sum"] == 10


def leave_in_item_3(path: Path, end: str) -> None:
    """A loop that sets r.state at the start of each item and leaves inside item 3."""
    with Resumable(path, quiet=True) as r:
        for item in r.iterate(range(10)):
            r.state["last_started"] = item
            if item == 3:
                if end == "break":
                    break
                if end == "exception":
                    raise RuntimeError(item)
                signal.raise_signal(signal.SIGINT)  # the first: the item would finish
                signal.raise_signal(signal.SIGINT)  # the second raises here


@pytest.mark.parametrize("end", ["break", "exception", "second ctrl+c"])
def test_the_exit_save_holds_r_state_as_the_item_in_flight_left_it(
    state_path: Path, end: str
) -> None:
    """r.state is saved as it is at the save: what item 3 changed before the loop left it
    is in the file, though item 3 is not done (docs/guarantees.md, the item in flight)."""
    if end == "break":
        leave_in_item_3(state_path, end)
    else:
        with pytest.raises(RuntimeError if end == "exception" else KeyboardInterrupt):
            leave_in_item_3(state_path, end)
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.state) == (3, {"last_started": 3})


def test_state_can_be_replaced_by_another_dict_only(state_path: Path) -> None:
    with Resumable(state_path) as r:
        r.state = {"a": 1}
        with pytest.raises(TypeError, match="must be a dict"):
            r.state = [1]  # type: ignore[assignment]
    assert inspect(state_path).state == {"a": 1}


def test_a_huge_state_round_trips_and_is_flagged_once(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No size limit, but a state past 1 MB gets one warning: every save rewrites it."""
    rows = [f"row {n:07d} " + "x" * 40 for n in range(40_000)]  # about 2.2 MB of JSON
    with caplog.at_level(logging.WARNING, logger="resumable"), Resumable(state_path) as r:
        r.state["rows"] = rows
        for item in r.iterate(range(3)):
            r.state["last"] = item
            r.save()
    warnings = [record.getMessage() for record in caplog.records if "MB" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert "every save writes all of it" in warnings[0]
    assert "of it r.state" in warnings[0]  # r.state is the bulk: the advice says what to do
    assert "Keep bulky data in files of your own" in warnings[0]
    assert state_path.stat().st_size > 2_000_000
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (3, True)
    assert snapshot.state == {"rows": rows, "last": 2}


def test_a_state_file_of_exactly_1_mb_is_not_flagged_and_one_byte_more_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ "Past 1 MB" (docs/guarantees.md): 1,000,000 bytes is not past it."""

    def save_with_padding(path: Path, padding: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="resumable"), Resumable(path) as r:
            r.state["padding"] = "x" * padding
            r.save()
        return [record.getMessage() for record in caplog.records]

    with freeze_time("2026-01-01", tick=False):  # the same times, so the same lengths
        assert save_with_padding(tmp_path / "probe.state", 900_000) == []
        rest = (tmp_path / "probe.state").stat().st_size - 900_000
        for size, flagged in [(1_000_000, False), (1_000_001, True)]:
            path = tmp_path / f"{size}.state"
            warnings = save_with_padding(path, size - rest)
            assert path.stat().st_size == size
            assert [("the state file is 1.0 MB" in line) for line in warnings] == (
                [True] if flagged else []
            )


def test_leaving_without_changes_does_not_write(state_path: Path) -> None:
    run(state_path, range(5), stop_at=2)
    before = state_path.read_bytes()
    with Resumable(state_path) as r:
        pass
    assert r.saves == 0
    assert state_path.read_bytes() == before


def test_iterate_twice_is_a_usage_error(state_path: Path) -> None:
    with Resumable(state_path) as r:
        r.iterate(range(3))
        with pytest.raises(UsageError, match="already called"):
            r.iterate(range(3))


def test_iterate_outside_the_with_block_is_a_usage_error(state_path: Path) -> None:
    r = Resumable(state_path)
    with pytest.raises(UsageError, match="inside the with block"):
        r.iterate(range(3))
    with r:
        pass
    with pytest.raises(UsageError, match="inside the with block"):
        r.iterate(range(3))
    with pytest.raises(UsageError, match="inside the with block"):
        r.save()


def test_a_resumable_runs_once(state_path: Path) -> None:
    r = Resumable(state_path)
    with r:
        pass
    with pytest.raises(UsageError, match="runs once"), r:
        pass


def test_signal_handlers_are_restored_after_an_exception(state_path: Path) -> None:
    def mine(signum: int, frame: object) -> None:
        """A user handler that must come back."""

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        with pytest.raises(RuntimeError), Resumable(state_path) as r:
            assert signal.getsignal(signal.SIGTERM) is not mine
            for _ in r.iterate(range(3)):
                raise RuntimeError
        after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        assert after == before
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_signals_empty_leaves_handlers_alone(state_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with Resumable(state_path, signals=()):
        assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"restart": "no"}, "restart takes True or False"),
        ({"quiet": 1}, "quiet takes True or False"),
        ({"signals": "SIGTERM"}, "signals= takes signal numbers"),
        ({"signals": signal.SIGTERM}, "signals= takes signal numbers"),
        ({"signals": [True]}, "signals= takes signal numbers"),
    ],
)
def test_arguments_of_the_wrong_type_are_named(
    state_path: Path, arguments: dict[str, object], says: str
) -> None:
    with pytest.raises(TypeError, match=says):
        Resumable(state_path, **arguments)  # type: ignore[arg-type]
    assert not state_path.exists()


def test_signals_may_be_any_iterable_of_signal_numbers(state_path: Path) -> None:
    sigterm, sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with Resumable(state_path, signals=iter([signal.SIGTERM])):
        assert signal.getsignal(signal.SIGTERM) is not sigterm
        assert signal.getsignal(signal.SIGINT) is sigint
    assert signal.getsignal(signal.SIGTERM) is sigterm


def test_an_ignored_signal_stays_ignored(state_path: Path) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with Resumable(state_path):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_in_process_finishes_the_current_item_then_stops(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finished: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path) as r:
        for item in r.iterate(range(10)):
            if item == 4:
                signal.raise_signal(signal.SIGINT)  # the handler runs here, in the body
            finished.append(item)
    assert finished == [0, 1, 2, 3, 4]
    assert inspect(state_path).position == 5
    assert "stopped by SIGINT after 5 items (5 in this run)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_goes_on_to_the_programs_own_sigint_handler_after_the_save(
    state_path: Path,
) -> None:
    """A SIGINT handler the program had is called once the state is saved; when it returns,
    the KeyboardInterrupt of the stop propagates."""
    saved_when_called: list[int] = []

    def own_handler(signum: int, frame: object) -> None:
        saved_when_called.append(inspect(state_path).position)

    previous = signal.signal(signal.SIGINT, own_handler)
    try:
        with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
            for item in r.iterate(range(10)):
                if item == 3:
                    signal.raise_signal(signal.SIGINT)
                    assert saved_when_called == []  # not while the loop runs
        assert saved_when_called == [4]
        assert signal.getsignal(signal.SIGINT) is own_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("let_go", [False, True])
def test_after_break_a_signal_waits_while_the_loops_iterator_is_kept(
    state_path: Path, let_go: bool
) -> None:
    """The documented limit: a kept iterator counts as a running loop, so a signal waits
    for the with block's end; once the variable is deleted it raises at once."""
    reached_after_signal = False
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        items = r.iterate(range(10))
        for item in items:
            if item == 5:
                break
        if let_go:
            del items
        signal.raise_signal(signal.SIGINT)
        reached_after_signal = True
    assert reached_after_signal is not let_go
    assert inspect(state_path).position == 5


def test_quiet_silences_the_stop_line(state_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for _ in r.iterate(range(10)):
            signal.raise_signal(signal.SIGINT)
    assert capsys.readouterr().err == ""


def test_ctrl_c_outside_a_loop_raises_at_once_and_still_saves(state_path: Path) -> None:
    reached_after_signal = False
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        r.state["before"] = True
        signal.raise_signal(signal.SIGINT)
        reached_after_signal = True
    assert not reached_after_signal
    assert inspect(state_path).state == {"before": True}


def test_away_from_the_main_thread_it_warns_and_still_works(state_path: Path) -> None:
    outcome: dict[str, object] = {}

    def job() -> None:
        with (
            pytest.warns(ResumableWarning, match="not on the main thread"),
            Resumable(state_path) as r,
        ):
            outcome["items"] = list(r.iterate(range(5)))
            outcome["handler"] = signal.getsignal(signal.SIGINT)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert outcome == {"items": [0, 1, 2, 3, 4], "handler": signal.default_int_handler}
    assert inspect(state_path).finished


def test_away_from_the_main_thread_signals_none_gives_no_warning(state_path: Path) -> None:
    """signals=() asks for no handlers, so a worker thread (a Dask task) has none to miss."""
    outcome: dict[str, object] = {}

    def job() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Resumable(state_path, signals=()) as r:
                outcome["items"] = list(r.iterate(range(3)))
        outcome["warnings"] = [str(warning.message) for warning in caught]

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert outcome == {"items": [0, 1, 2], "warnings": []}


def test_a_run_dropped_without_its_exit_in_a_worker_thread_is_freed_there(
    state_path: Path,
) -> None:
    """A Resumable entered in a worker thread and dropped there without its exit: its
    safety net runs in that thread at once, frees the lock (the next run opens the job at
    once, in the same thread), and leaves the signal handlers alone (signal.signal works
    on the main thread only, and a worker's run installed none)."""
    outcome: dict[str, object] = {}

    def job() -> None:
        with pytest.warns(ResumableWarning, match="not on the main thread"):
            dropped = Resumable(state_path)
            dropped.__enter__()
            outcome["first"] = next(iter(dropped.iterate(range(3))))
            del dropped  # no __exit__: the safety net frees it
            with Resumable(state_path) as again:
                outcome["items"] = list(again.iterate(range(3)))

    handler = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert outcome == {"first": 0, "items": [0, 1, 2]}
    assert signal.getsignal(signal.SIGINT) is handler
    assert inspect(state_path).finished


def test_after_break_the_loop_is_over_and_ctrl_c_raises_at_once(state_path: Path) -> None:
    after_signal = False
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(range(3000)):
            if item == 1500:
                break
        assert r.position == 1500
        signal.raise_signal(signal.SIGINT)
        after_signal = True
    assert not after_signal
    assert inspect(state_path).position == 1500


def test_ctrl_c_while_skipping_the_done_prefix_acts_at_once(state_path: Path) -> None:
    run(state_path, iter(range(1000)), stop_at=800)
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for number in range(1000):
            if number == 500:  # still inside the done prefix
                signal.raise_signal(signal.SIGINT)
            produced.append(number)
            yield number

    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        r.iterate(numbers())
    assert produced == list(range(500))
    assert inspect(state_path).position == 800


def test_a_resume_that_finds_nothing_left_records_the_end_at_exit_not_in_the_loop(
    state_path: Path,
) -> None:
    """Position 5 of 5, not yet marked finished (the last item was stopped before the
    completion save): the loop ends at once without a save; the exit records it."""
    with Resumable(state_path) as r:
        for item in r.iterate(iter(range(6))):
            if item == 5:
                break
    with Resumable(state_path) as r:
        assert list(r.iterate(range(5), on_change="continue")) == []
        assert (r.finished, r.saves) == (True, 0)
        assert not inspect(state_path).finished
    assert (r.saves, inspect(state_path).finished) == (1, True)
