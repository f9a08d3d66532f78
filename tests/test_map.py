"""r.map: calls in a pool, results to the body in the iterating thread, resumable."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from resumable import NPolicy, Resumable, UsageError, inspect

from jobs.harness import resumable_command


def square(number: int) -> int:
    return number * number


def progress_of(path: Path) -> dict[str, object]:
    document = orjson.loads(path.read_bytes())
    progress: dict[str, object] = document["progress"]
    return progress


class Calls:
    """Which items a job's function was called for, from any thread."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self._lock = threading.Lock()

    def note(self, item: int) -> None:
        with self._lock:
            self.items.append(item)


def test_results_equal_a_plain_executor_map_in_input_order(state_path: Path) -> None:
    items = list(range(500))
    with ThreadPoolExecutor(8) as pool:
        expected = list(pool.map(square, items))
    with Resumable(state_path) as r:
        got = list(r.map(square, items, workers=8))
    assert got == expected
    assert r.finished
    assert r.position == 500


def test_unordered_results_are_every_result_once(state_path: Path) -> None:
    with Resumable(state_path) as r:
        got = list(r.map(square, range(300), workers=8, ordered=False))
    assert sorted(got) == [square(n) for n in range(300)]
    assert r.position == 300


def test_the_body_runs_in_the_iterating_thread_and_the_calls_in_workers(
    state_path: Path,
) -> None:
    here = threading.get_ident()
    callers: set[int] = set()

    def where(item: int) -> int:
        callers.add(threading.get_ident())
        return item

    with Resumable(state_path) as r:
        for _ in r.map(where, range(50), workers=4):
            assert threading.get_ident() == here
    assert here not in callers


def test_a_finished_job_calls_nothing_on_the_next_run(state_path: Path) -> None:
    with Resumable(state_path) as r:
        list(r.map(square, range(20)))
    calls = Calls()

    def noted(item: int) -> int:
        calls.note(item)
        return item

    with Resumable(state_path) as r:
        assert list(r.map(noted, range(20))) == []
    assert calls.items == []


def test_a_slow_first_item_holds_the_window_and_a_rerun_calls_none_of_the_done_ones(
    state_path: Path,
) -> None:
    """Item 0 is stuck; the window (16) lets 15 more run above it, no more. Stopped there by
    ctrl+c, the saved state names the 15, and a rerun calls only the rest."""
    release = threading.Event()
    calls = Calls()

    def work(item: int) -> int:
        calls.note(item)
        if item == 0:
            release.wait(timeout=30)
        return item

    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path) as r:
        for result in r.map(work, range(1000), workers=4, window=16, ordered=False):
            seen.append(result)
            if len(seen) == 15:
                # The window is full: nothing past item 15 may have been submitted.
                assert sorted(calls.items) == list(range(16))
                os.kill(os.getpid(), signal.SIGINT)
                release.set()  # the call in flight finishes, and its result comes
    assert sorted(seen) == list(range(16))
    progress = progress_of(state_path)
    assert progress["kind"] == "watermark"
    assert progress["position"] == 16
    assert progress["done_above"] == []
    first_run = set(calls.items)
    calls.items.clear()
    with Resumable(state_path) as r:
        rest = list(r.map(work, range(1000), workers=4))
    assert rest == list(range(16, 1000))
    assert not first_run & set(calls.items)


@pytest.mark.parametrize("pool", ["workers=2", "executor of 2 threads"])
def test_the_default_window_is_four_calls_per_worker(state_path: Path, pool: str) -> None:
    """Item 0 is stuck: with 2 workers the default window lets 7 more run above it (8 in
    all, docs/concurrent.md), and none past them until item 0 ends."""
    release = threading.Event()
    calls = Calls()
    released: list[bool] = []

    def work(item: int) -> int:
        calls.note(item)
        if item == 0:
            # The body sets it at its 7th result; the bound is for a failing run only.
            released.append(release.wait(timeout=10))
        return item

    executor = ThreadPoolExecutor(2) if pool != "workers=2" else None
    workers = 2 if executor is None else None
    at_seven: list[int] = []
    with Resumable(state_path) as r:
        results = r.map(work, range(100), workers=workers, executor=executor, ordered=False)
        for count, _ in enumerate(results, 1):
            if count == 7:
                at_seven = sorted(calls.items)
                release.set()
    if executor is not None:
        executor.shutdown()
    assert (released, at_seven) == ([True], list(range(8)))
    assert r.position == 100


def test_the_saved_state_stays_the_size_of_the_window_with_one_item_stuck(
    state_path: Path,
) -> None:
    release = threading.Event()

    def work(item: int) -> int:
        if item == 0:
            release.wait(timeout=30)
        return item

    window = 64
    with Resumable(state_path, policy=NPolicy(1_000)) as r:
        for count, result in enumerate(
            r.map(work, range(100_000), window=window, ordered=False), 1
        ):
            if count == window - 1:  # all but the stuck one: the window is full
                r.save()
                stuck, in_flight = progress_of(state_path), result
                release.set()
    assert stuck["position"] == 0
    done_above = stuck["done_above"]
    assert isinstance(done_above, list)
    # Every item of the window but the stuck one, and the one whose result is in the body.
    assert in_flight not in done_above
    assert sorted([*done_above, in_flight]) == list(range(1, window))
    assert r.position == 100_000
    assert state_path.stat().st_size < 1_000


def test_ctrl_c_lets_the_calls_in_flight_finish_and_no_call_runs_twice_across_runs(
    state_path: Path, tmp_path: Path
) -> None:
    """Each call appends its item to a log with fsync; one ctrl+c in the middle, then a
    rerun: every item is called exactly once over the two runs."""
    log = tmp_path / "calls.log"

    def logged(item: int) -> int:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{item}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return item

    handed: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path) as r:
        for result in r.map(logged, range(400), workers=8, ordered=False):
            handed.append(result)
            if len(handed) == 100:
                os.kill(os.getpid(), signal.SIGINT)
    with Resumable(state_path) as r:
        handed += list(r.map(logged, range(400), workers=8, ordered=False))
    called = [int(line) for line in log.read_text().split()]
    assert sorted(called) == list(range(400))
    assert sorted(handed) == list(range(400))


def test_a_second_ctrl_c_stops_at_once_and_the_call_still_running_is_not_done(
    state_path: Path,
) -> None:
    main = threading.get_ident()
    first_sent, release, five_ended = threading.Event(), threading.Event(), threading.Event()

    def work(item: int) -> int:
        if item == 5 and not release.is_set():
            first_sent.wait(timeout=30)
            signal.pthread_kill(main, signal.SIGINT)  # while the loop waits for this call
            release.wait(timeout=30)
            five_ended.set()
        return item

    got: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path) as r:
        for result in r.map(work, range(10), workers=2, window=4):
            got.append(result)
            if result == 4:
                os.kill(os.getpid(), signal.SIGINT)
                first_sent.set()
    assert not five_ended.is_set()  # stopped while the call still ran, not after it
    release.set()
    assert got == [0, 1, 2, 3, 4]
    assert progress_of(state_path)["position"] == 5
    with Resumable(state_path) as r:
        assert list(r.map(work, range(10))) == [5, 6, 7, 8, 9]


def test_an_exception_in_a_call_is_raised_in_the_body_s_thread_after_the_calls_in_flight(
    state_path: Path,
) -> None:
    started, ended = Calls(), Calls()
    three_raised = threading.Event()

    def work(item: int) -> int:
        started.note(item)
        if item == 3:
            three_raised.set()
            raise ValueError("item 3 is bad")
        if item > 3:
            three_raised.wait(timeout=30)  # in flight when item 3 fails, ending after it
        ended.note(item)
        return item

    got: list[int] = []
    running_after: list[int] = []
    with Resumable(state_path) as r, pytest.raises(ValueError, match="item 3 is bad"):
        try:
            for result in r.map(work, range(100), workers=4, window=8):
                got.append(result)
        finally:
            # Every call that started has ended: none runs on behind the error.
            running_after = sorted(set(started.items) - {*ended.items, 3})
    assert running_after == []
    assert got == [0, 1, 2]
    assert progress_of(state_path)["position"] == 3


def test_with_on_error_record_a_failed_call_is_recorded_and_retried_next_run(
    state_path: Path,
) -> None:
    broken = {3, 7}

    def work(item: int) -> int:
        if item in broken:
            raise ValueError(f"item {item} is bad")
        return item

    with Resumable(state_path) as r:
        got = list(r.map(work, range(10), on_error="record"))
    assert got == [0, 1, 2, 4, 5, 6, 8, 9]
    assert sorted(failed.position for failed in r.failed if failed.position is not None) == [
        3,
        7,
    ]
    broken.clear()
    with Resumable(state_path) as r:
        assert sorted(r.map(work, range(10), on_error="record")) == [3, 7]
    assert r.failed == []


def test_map_with_key_skips_done_keys_wherever_they_are(state_path: Path) -> None:
    with Resumable(state_path) as r:
        first = list(r.map(square, [5, 1, 9], key=str))
    assert first == [25, 1, 81]
    calls = Calls()

    def noted(item: int) -> int:
        calls.note(item)
        return item

    with Resumable(state_path) as r:
        assert list(r.map(noted, [9, 2, 5, 1, 3], key=str)) == [2, 3]
    assert sorted(calls.items) == [2, 3]
    assert inspect(state_path).progress_kind == "keys"


def test_a_keyed_map_job_rerun_without_its_key_is_refused_saying_to_pass_it(
    state_path: Path,
) -> None:
    with Resumable(state_path) as r:
        assert list(r.map(square, [5, 1], key=str)) == [25, 1]
    before = state_path.read_bytes()
    with pytest.raises(UsageError, match="by key: pass the same key="), Resumable(state_path) as r:
        r.map(square, [5, 1, 9])
    assert state_path.read_bytes() == before


def test_a_map_whose_key_function_returns_no_str_or_int_is_refused_naming_the_key(
    state_path: Path,
) -> None:
    with Resumable(state_path) as r:
        with pytest.raises(TypeError, match=r"key=\.\.\.\) takes a function"):
            r.map(square, [1], key="id")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"returned a float: 1\.5"):
            list(r.map(abs, [1.5], key=cast(Any, float)))  # float keys are refused
    assert inspect(state_path).position == 0


def test_a_keyed_map_retries_a_failed_item_until_its_attempts_are_used_up(
    state_path: Path,
) -> None:
    calls = Calls()

    def work(item: int) -> int:
        calls.note(item)
        if item == 2:
            raise ValueError("item 2 is bad")
        return item

    for run in range(3):
        calls.items.clear()
        with Resumable(state_path) as r:
            got = sorted(r.map(work, [1, 2, 3], key=str, on_error="record", max_attempts=2))
        assert (got, sorted(calls.items)) == [([1, 3], [1, 2, 3]), ([], [2]), ([], [])][run]
    assert [(item.key, item.attempts) for item in r.failed] == [("2", 2)]


def test_a_process_pool_runs_the_calls(state_path: Path) -> None:
    with ProcessPoolExecutor(2) as pool, Resumable(state_path) as r:
        got = list(r.map(square, range(40), executor=pool))
    assert got == [square(n) for n in range(40)]


def test_a_job_keeps_its_kind_between_iterate_and_map(tmp_path: Path) -> None:
    by_map, by_iterate = tmp_path / "map.state", tmp_path / "iterate.state"
    with Resumable(by_map) as r:
        for _ in r.map(square, range(10), ordered=False):
            break
    with pytest.raises(UsageError, match=r"r\.map"), Resumable(by_map) as r:
        r.iterate(range(10))
    with Resumable(by_iterate) as r:
        for number in r.iterate(range(10)):
            if number == 3:
                break
    with pytest.raises(UsageError, match="iterate"), Resumable(by_iterate) as r:
        r.map(square, range(10))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers"),
        ({"window": -1}, ValueError, "window"),
        ({"workers": 2, "executor": ThreadPoolExecutor(1)}, ValueError, "not both"),
        ({"executor": "threads"}, TypeError, "Executor"),
        ({"ordered": "yes"}, TypeError, "ordered"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(
    state_path: Path, arguments: dict[str, object], error: type[Exception], message: str
) -> None:
    with Resumable(state_path) as r:
        with pytest.raises(error, match=message):
            r.map(square, range(3), **arguments)  # type: ignore[arg-type]
        assert list(r.map(square, range(3))) == [0, 1, 4]  # refused: a loop may follow


def test_map_outside_the_with_block_says_where_it_works(state_path: Path) -> None:
    r = Resumable(state_path)
    with pytest.raises(UsageError, match=r"map\(\) works inside the with block"):
        r.map(square, range(3))


def numbers() -> Iterator[int]:
    yield from range(30)


def test_a_generator_input_resumes_after_a_break(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for result in r.map(square, numbers()):
            if result == square(9):
                break
    assert r.position == 9
    with Resumable(state_path) as r:
        assert list(r.map(square, numbers())) == [square(n) for n in range(9, 30)]


def test_inspect_and_status_show_a_map_job(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Resumable(state_path) as r:
        for result in r.map(square, range(100), ordered=False):
            if result == square(40):
                break
    snapshot = inspect(state_path)
    assert snapshot.progress_kind == "watermark"
    assert snapshot.position == r.position
    assert snapshot.input_length == 100
    assert not snapshot.finished
    assert resumable_command()(["status", str(state_path)]) == 0
    shown = capsys.readouterr().out
    assert "by position, out of order (r.map)" in shown
    assert f"items done   {r.position}" in shown


def test_a_retried_failure_that_succeeds_is_saved_as_the_loop_completes(state_path: Path) -> None:
    """Run 1 records item 3's failure; run 2 retries it, and it succeeds: the loop's end
    saves that (a completion save, inside the with block), not only the exit."""
    fixed = False

    def flaky(item: int) -> int:
        if item == 3 and not fixed:
            raise ValueError("no answer for 3")
        return item

    with Resumable(state_path) as r:
        assert list(r.map(flaky, range(10), on_error="record")) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    fixed = True
    with Resumable(state_path) as r:
        assert list(r.map(flaky, range(10), on_error="record")) == [3]
        assert [(save.reason, save.position) for save in r.save_log] == [("completion", 10)]
        assert inspect(state_path).failed == ()
