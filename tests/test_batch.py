"""iterate(items, batch=n): lists of items that are done together, and readers that take
items ahead of the loop body, which fail loudly where they can be seen."""

from __future__ import annotations

import itertools
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import resumable
from resumable import NPolicy, Resumable, TimePolicy, UsageError, inspect


def numbers(count: int) -> Iterator[int]:
    yield from range(count)


def double(item: int) -> int:
    return 2 * item


@pytest.mark.parametrize(
    "make_input", [lambda: list(range(10)), lambda: numbers(10)], ids=["list", "generator"]
)
def test_batches_hold_up_to_n_items_in_order_and_the_last_one_the_rest(
    state_path: Path, make_input: object
) -> None:
    with Resumable(state_path) as r:
        batches = list(r.iterate(make_input(), batch=4))  # type: ignore[operator]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert inspect(state_path).position == 10
    assert inspect(state_path).finished


@pytest.mark.parametrize(
    "make_input", [lambda: list(range(8)), lambda: numbers(8)], ids=["list", "generator"]
)
def test_an_input_that_ends_at_a_batch_s_end_gives_no_empty_batch(
    state_path: Path, make_input: object
) -> None:
    with Resumable(state_path) as r:
        assert list(r.iterate(make_input(), batch=4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # type: ignore[operator]
    assert r.finished


def test_a_batch_is_done_when_the_loop_asks_for_the_next_one(state_path: Path) -> None:
    positions = []
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for batch in r.iterate(range(10), batch=3):
            positions.append(r.position)  # the items before this batch
            r.save()
            assert inspect(state_path).position == batch[0]  # none of the batch is saved
    assert positions == [0, 3, 6, 9]


@pytest.mark.parametrize(
    "make_input", [lambda: list(range(100)), lambda: numbers(100)], ids=["list", "generator"]
)
def test_an_exception_in_a_batch_leaves_all_of_it_to_run_again(
    state_path: Path, make_input: object
) -> None:
    """What itertools.batched around r.iterate() loses: the first batch, after a failed upload."""
    with pytest.raises(ConnectionError), Resumable(state_path, policy=NPolicy(1)) as r:
        for _batch in r.iterate(make_input(), batch=10):  # type: ignore[operator]
            raise ConnectionError("upload of the first batch failed")
    assert inspect(state_path).position == 0
    processed: list[int] = []
    with Resumable(state_path) as r:
        for batch in r.iterate(make_input(), batch=10):  # type: ignore[operator]
            processed.extend(batch)
    assert processed == list(range(100))


def test_break_in_a_batch_leaves_that_batch_not_done(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for batch in r.iterate(numbers(100), batch=10):
            if batch[0] == 30:
                break
    assert inspect(state_path).position == 30
    with Resumable(state_path) as r:
        assert next(iter(r.iterate(numbers(100), batch=10))) == list(range(30, 40))


def test_ctrl_c_lets_the_batch_finish_and_a_second_one_stops_inside_it(
    state_path: Path,
) -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for batch in r.iterate(range(100), batch=10):
            if batch[0] == 20:
                signal.raise_signal(signal.SIGINT)
            finished.append(batch[0])
    assert finished == [0, 10, 20]
    assert inspect(state_path).position == 30

    finished = []
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for batch in r.iterate(range(100), batch=10):
            if batch[0] == 50:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)  # raises here, inside the batch
            finished.append(batch[0])
    assert finished == [30, 40]
    assert inspect(state_path).position == 50


def test_ctrl_c_stops_a_keyed_batch_loop_after_the_batch(state_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for batch in r.iterate(range(100), key=int, batch=10):
            if batch[0] == 20:
                signal.raise_signal(signal.SIGINT)
    assert inspect(state_path).position == 30
    with Resumable(state_path) as r:
        rest = [item for batch in r.iterate(range(100), key=int, batch=10) for item in batch]
    assert rest == list(range(30, 100))


def test_keyed_batches_skip_done_keys_count_a_repeated_key_once_and_run_new_items(
    state_path: Path,
) -> None:
    seen = []
    with Resumable(state_path) as r:
        for batch in r.iterate(["a", "a", "b", "c", "d"], key=str, batch=2):
            seen.append(batch)
            if batch == ["c", "d"]:
                break
    assert seen == [["a", "b"], ["c", "d"]]
    assert inspect(state_path).position == 2  # a, b
    with Resumable(state_path) as r:
        batches = list(r.iterate(["x", "a", "b", "c", "d", "y"], key=str, batch=2))
    assert batches == [["x", "c"], ["d", "y"]]
    assert r.finished


def test_a_keyed_batch_that_raises_is_not_done(state_path: Path) -> None:
    with pytest.raises(ValueError, match="bad"), Resumable(state_path) as r:
        for batch in r.iterate(range(10), key=int, batch=4):
            if 5 in batch:
                raise ValueError("bad")
    assert inspect(state_path).position == 4
    with Resumable(state_path) as r:
        assert list(r.iterate(range(10), key=int, batch=4)) == [[4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("keyed", [False, True], ids=["position", "key"])
def test_attempt_around_a_batch_records_every_item_of_it_and_a_later_run_retries_them(
    state_path: Path, keyed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    key = int if keyed else None
    with Resumable(state_path) as r:
        for batch in r.iterate(range(10), key=key, batch=3, on_error="record"):
            with r.attempt():
                if 4 in batch:
                    raise ConnectionError("bulk insert refused")
    assert sorted(failed.where for failed in r.failed) == [3, 4, 5]
    first = "3" if keyed else "#3"
    assert (
        f"a batch of 3 items from {first} failed (ConnectionError: bulk insert refused), "
        "attempt 1 of 3; recorded, going on"
    ) in caplog.text
    assert all(failed.error_type == "ConnectionError" for failed in r.failed)
    assert inspect(state_path).position == (7 if keyed else 10)

    with Resumable(state_path) as r:
        retried = list(r.iterate(range(10), key=key, batch=2, on_error="record"))
    assert retried == [[3, 4], [5]]
    assert r.failed == []
    assert inspect(state_path).position == 10


def test_a_second_attempt_in_the_same_batch_is_a_usage_error(state_path: Path) -> None:
    with (
        pytest.raises(UsageError, match="once around the work for a whole batch"),
        Resumable(state_path) as r,
    ):
        for batch in r.iterate(range(10), batch=5, on_error="record"):
            for _item in batch:
                with r.attempt():
                    pass
    assert inspect(state_path).position == 0


def test_a_display_is_advanced_by_items_not_batches(state_path: Path) -> None:
    class Counter:
        total = 0

        def update(self, n: int = 1) -> None:
            self.total += n

    display = Counter()
    with Resumable(state_path) as r:
        for _batch in r.iterate(range(25), batch=10, progress=display):
            pass
    assert display.total == 25


@pytest.mark.parametrize("key", [None, str], ids=["positional", "keyed"])
def test_batches_of_one_item_are_lists_of_one(state_path: Path, key: object) -> None:
    """batch=1, the smallest batch: each item in a list of its own."""
    with Resumable(state_path) as r:
        assert list(r.iterate(["a", "b", "c"], key=key, batch=1)) == [["a"], ["b"], ["c"]]  # type: ignore[call-overload]
    assert inspect(state_path).finished


@pytest.mark.parametrize("batch", [0, -1, True, 2.0, "3"])
def test_a_batch_that_is_not_a_whole_number_of_items_is_refused_and_changes_nothing(
    state_path: Path, batch: object
) -> None:
    with Resumable(state_path) as r:
        with pytest.raises(ValueError, match="batch"):
            r.iterate(range(10), batch=batch)  # type: ignore[call-overload]
        assert list(r.iterate(range(3))) == [0, 1, 2]  # iterate() was not used up


def test_a_batch_loop_runs_no_library_python_code_per_item(state_path: Path) -> None:
    package = str(Path(resumable.__file__).parent)
    calls = 0

    def count_library_calls(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(package):  # type: ignore[attr-defined]
            calls += 1

    with Resumable(state_path, policy=NPolicy(10**9) | TimePolicy(3600)) as r:
        sys.setprofile(count_library_calls)
        try:
            for _batch in r.iterate(numbers(100_000), batch=1000):
                pass
        finally:
            sys.setprofile(None)
    assert calls < 100_000 / 1000 * 60  # a few dozen calls a batch, whatever its size


# -- readers that take items ahead of the body ---------------------------------------------


def test_executor_map_over_iterate_fails_before_any_item_runs(state_path: Path) -> None:
    ran: list[int] = []

    def fetch(item: int) -> int:
        ran.append(item)
        return item

    with (
        pytest.raises(UsageError, match=r"Executor\.map.*batch=16"),
        ThreadPoolExecutor(4) as pool,
        Resumable(state_path) as r,
    ):
        for _page in pool.map(fetch, r.iterate(range(1000))):
            pass
    assert ran == []
    assert inspect(state_path).position == 0
    assert not inspect(state_path).finished


@pytest.mark.parametrize("keyed", [False, True], ids=["position", "key"])
def test_executor_map_over_iterate_fails_for_batches_and_keys_too(
    state_path: Path, keyed: bool
) -> None:
    with (
        pytest.raises(UsageError, match=r"Executor\.map"),
        ThreadPoolExecutor(2) as pool,
        Resumable(state_path) as r,
    ):
        list(pool.map(len, r.iterate(range(100), key=int if keyed else None, batch=10)))
    if keyed:
        with pytest.raises(UsageError, match=r"Executor\.map"), Resumable(state_path) as r:
            list(ThreadPoolExecutor(2).map(double, r.iterate(range(100), key=int)))
    assert inspect(state_path).position == 0


def test_process_pool_map_over_iterate_fails_before_any_item_runs(state_path: Path) -> None:
    # From Python 3.13 on, ProcessPoolExecutor.map hands its input (batched in C) to
    # Executor.map, which is then the reader the message names.
    with (
        pytest.raises(UsageError, match=r"(ProcessPool)?Executor\.map"),
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool,
        Resumable(state_path) as r,
    ):
        list(pool.map(double, r.iterate(range(100)), chunksize=10))
    assert inspect(state_path).position == 0


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered"])
def test_multiprocessing_pool_methods_over_iterate_fail(state_path: Path, method: str) -> None:
    with (
        pytest.raises(UsageError, match=r"multiprocessing|another thread"),
        multiprocessing.pool.ThreadPool(2) as pool,
        Resumable(state_path) as r,
    ):
        list(getattr(pool, method)(double, r.iterate(range(100))))
    assert inspect(state_path).position == 0


def test_items_asked_for_from_another_thread_are_refused(state_path: Path) -> None:
    errors: list[BaseException] = []
    with Resumable(state_path) as r:
        items = r.iterate(range(100))

        def prefetch() -> None:
            try:
                next(items)
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=prefetch)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], UsageError)
    assert "another thread than the one that called iterate()" in str(errors[0])
    assert inspect(state_path).position == 0


def test_the_pool_pattern_of_the_readme_loses_nothing_after_kill_9(tmp_path: Path) -> None:
    """Each result written (with fsync) by the body; kill -9 right after a batch's results
    are written; the rerun runs every item not written, and redoes at most that batch."""
    state, log = tmp_path / "pool.state", tmp_path / "results.log"
    program = textwrap.dedent(
        f"""
        import os, signal, sys
        from concurrent.futures import ThreadPoolExecutor
        from resumable import NPolicy, Resumable

        kill_at = int(sys.argv[1])
        log = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with ThreadPoolExecutor(4) as pool, Resumable({str(state)!r}, policy=NPolicy(25)) as r:
            for batch in r.iterate(range(1000), batch=10):
                for page in pool.map(lambda item: item * 2, batch):
                    os.write(log, f"{{page // 2}}\\n".encode())
                os.fsync(log)
                if batch[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    first = subprocess.run([sys.executable, "-c", program, "400"], check=False)
    assert first.returncode == -signal.SIGKILL
    saved = inspect(state).position
    assert 380 <= saved <= 410  # saved every 25 items: after 390 or 400
    assert not inspect(state).finished
    subprocess.run([sys.executable, "-c", program, "-1"], check=True)
    written = [int(line) for line in log.read_text().split()]
    assert sorted(set(written)) == list(range(1000))  # none lost
    redone = len(written) - 1000
    assert redone == 410 - saved  # what ran after the last save, up to 25 + one batch


def test_the_wrong_way_with_a_batcher_of_your_own_is_documented_not_caught(
    state_path: Path,
) -> None:
    """itertools.batched-style wrappers are not detectable (C code, or the caller's own):
    the README's "Do not read ahead" paragraph is the guard. This test pins the behaviour."""

    def batched(iterable: Iterator[int], n: int) -> Iterator[list[int]]:
        it = iter(iterable)
        while chunk := list(itertools.islice(it, n)):
            yield chunk

    with pytest.raises(ConnectionError), Resumable(state_path, policy=NPolicy(1)) as r:
        for _batch in batched(r.iterate(range(100)), 10):
            raise ConnectionError("upload failed")
    assert inspect(state_path).position == 9  # 9 items counted done that never ran
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "Do not read ahead" in readme


def test_a_generator_around_iterate_handed_to_executor_map_is_documented_not_caught(
    state_path: Path,
) -> None:
    """Executor.map over a generator expression around r.iterate() asks the generator, not
    the loop: it reads every item before the first runs, undetected. The README names the
    case; this test pins the behaviour."""
    with (
        pytest.raises(ConnectionError),
        ThreadPoolExecutor(2) as pool,
        Resumable(state_path, policy=NPolicy(1)) as r,
    ):
        for _ in pool.map(abs, (item for item in r.iterate(range(100)))):
            raise ConnectionError("upload failed")
    finished = inspect(state_path)
    assert (finished.position, finished.finished) == (100, True)  # none of them ran
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "nor can a generator around `r.iterate()` handed to a pool" in readme


def test_a_job_run_with_batches_resumes_without_them(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for batch in r.iterate(range(10), batch=3):
            if batch[0] == 6:
                break
    with Resumable(state_path) as r:
        assert list(r.iterate(range(10))) == [6, 7, 8, 9]
    assert os.path.exists(state_path)


def test_a_changed_input_is_refused_with_batches_as_without(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for batch in r.iterate(range(10), batch=3):
            if batch[0] == 6:
                break
    with pytest.raises(resumable.InputChangedError), Resumable(state_path) as r:
        r.iterate(range(20), batch=3)
    with Resumable(state_path) as r:
        batches = list(r.iterate(range(20), batch=3, on_change="restart"))
    assert batches[0] == [0, 1, 2]
    assert len(batches) == 7


def test_a_signal_while_a_keyed_batch_loop_skips_done_keys_stops_it_there(
    state_path: Path,
) -> None:
    with Resumable(state_path) as r:
        for _batch in r.iterate(range(6), key=int, batch=3):
            pass
    pulled = []

    def slow_input() -> Iterator[int]:
        for item in range(100):
            pulled.append(item)
            if item == 3:  # a done key: the signal comes while the input fetches it
                signal.raise_signal(signal.SIGINT)
            yield item

    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for batch in r.iterate(slow_input(), key=int, batch=3):
            raise AssertionError(f"no batch runs, got {batch}")
    assert pulled == [0, 1, 2, 3]
    assert inspect(state_path).position == 6
