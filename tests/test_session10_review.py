"""A hostile review of session 10's changes (review10): each test states what the user
should get. A strict xfail names a bug found and not fixed yet.

What changed: map's and amap's input is numbered in C, a chunk of 1,024 items at a time,
with the done-above test only in the chunks an earlier run reached; amap moves the
watermark inline for results in order and no longer resets `item_failed` before each
result; the save asks for the process id through `os.register_at_fork`; the input's
record is cached between saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal, overload

import orjson
import pytest

from resumable import InputChangedError, NPolicy, Resumable, inspect

from jobs.harness import campaign_seed

# A first run leaves the job with its watermark at W and items done above it on both
# sides of the edges of the chunks the next run reads the input in (1,024 items each,
# from the watermark on), the last chunk an earlier run reached holding a few.
N, W = 4000, 1000
DONE_ABOVE = {W + 1, W + 1022, W + 1023, W + 1024, W + 1025, W + 2047, W + 2048, W + 2049}
FAILED_BELOW, FAILED_ABOVE = 3, W + 1500  # fn raises for these in the first run
LAST = W + 2990  # the first run breaks out of the loop at this item's result


class BoomError(Exception):
    """What a failing call raises."""


def progress_of(path: Path) -> dict[str, Any]:
    progress: dict[str, Any] = orjson.loads(path.read_bytes())["progress"]
    return progress


def leave_done_above_across_chunk_edges(state: Path) -> None:
    """The first run: items 0 to W-1 end (3 fails and is recorded), W never does; of the
    items above it only DONE_ABOVE end (and FAILED_ABOVE, which fails), then LAST, at
    whose result the body breaks out: LAST is not done, every other call is cancelled."""
    ending = set(range(W)) | DONE_ABOVE | {FAILED_ABOVE}

    async def run() -> None:
        never, all_in = asyncio.Event(), asyncio.Event()
        handed: list[int] = []

        async def call(index: int) -> int:
            if index == LAST:
                await all_in.wait()
            elif index not in ending:
                await never.wait()
            if index in (FAILED_BELOW, FAILED_ABOVE):
                raise BoomError(index)
            return index

        async with Resumable(state, quiet=True, policy=NPolicy(10**9)) as r:
            async for index in r.amap(
                call, range(N), concurrency=N, window=N, ordered=False, on_error="record"
            ):
                if index == LAST:
                    break
                handed.append(index)
                if len(handed) == len(ending) - 2:  # all but the two failures
                    all_in.set()

    asyncio.run(run())
    snapshot = inspect(state)
    assert {f.position for f in snapshot.failed} == {FAILED_BELOW, FAILED_ABOVE}
    assert snapshot.position == W + len(DONE_ABOVE) + 1  # the failure above was passed


class ByIndex(Sequence[int]):
    """A Sequence that keeps the __iter__ it inherits: its iterator reads by index."""

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return list(range(self._size))[index]
        if not 0 <= index < self._size:
            raise IndexError(index)
        return index


def an_input(kind: str) -> Iterable[int]:
    if kind == "range":
        return range(N)
    if kind == "list":
        return list(range(N))
    if kind == "generator":
        return (index for index in range(N))
    assert kind == "sequence"
    return ByIndex(N)


def second_run(state: Path, driver: str, kind: str, ordered: bool, window: int) -> list[int]:
    """The next run over `kind` of input, to the end: the items handed to the body."""
    handed: list[int] = []
    if driver == "processes":
        context = multiprocessing.get_context("forkserver")
        with (
            ProcessPoolExecutor(2, mp_context=context) as pool,
            Resumable(state, quiet=True) as r,
        ):
            handed += r.map(abs, an_input(kind), ordered=ordered, window=window, executor=pool)
        return handed
    if driver == "map":
        with Resumable(state, quiet=True) as r:
            handed += r.map(lambda index: index, an_input(kind), ordered=ordered, window=window)
        return handed

    async def identity(index: int) -> int:
        await asyncio.sleep(0)
        return index

    async def run() -> None:
        async with Resumable(state, quiet=True) as r:
            async for index in r.amap(identity, an_input(kind), ordered=ordered, window=window):
                handed.append(index)

    asyncio.run(run())
    return handed


@pytest.mark.parametrize(
    ("driver", "kind", "ordered", "window"),
    [
        ("map", "range", True, 1),
        ("map", "list", False, 7),
        ("map", "generator", True, 1024),
        ("map", "sequence", False, 5000),
        ("amap", "range", False, 1),
        ("amap", "list", True, 7),
        ("amap", "generator", False, 1024),
        ("amap", "sequence", True, 5000),
        ("amap", "generator", True, 3),
        ("map", "generator", False, 2),
        ("processes", "list", False, 64),
    ],
)
def test_a_resumed_map_hands_out_each_item_not_done_once_across_the_chunk_edges(
    tmp_path: Path, driver: str, kind: str, ordered: bool, window: int
) -> None:
    """Done above the watermark on both sides of two chunk edges, a failure above the
    watermark and one below it: the next run hands out the failure below first (a retry),
    then every item not done, each once (in input order when ordered), the failure above
    among them; and saves the job finished, every item done, no failure left."""
    state = tmp_path / "job.state"
    leave_done_above_across_chunk_edges(state)
    handed = second_run(state, driver, kind, ordered, window)
    not_done = sorted(set(range(W, N)) - DONE_ABOVE)
    assert len(handed) == len(set(handed))
    if ordered:
        assert handed == [FAILED_BELOW, *not_done]
    else:
        assert sorted(handed) == sorted([FAILED_BELOW, *not_done])
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.finished, snapshot.failed) == (N, True, ())


async def send_and_let_the_loop_see(signum: int = signal.SIGINT) -> None:
    """Send `signum` to the main thread and give the event loop the three turns that run
    its handler (see tests/test_amap.py)."""
    signal.pthread_kill(threading.main_thread().ident or 0, signum)
    for _ in range(3):
        await asyncio.sleep(0)


def turns_before_it_ends(index: int) -> int:
    """Calls end out of order: in each four, the last ends first."""
    return 2 * (3 - index % 4)


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("where", ["body", "call"])
@pytest.mark.parametrize("at", range(12))
def test_ctrl_c_at_any_result_of_amap_ending_out_of_order_loses_and_repeats_nothing(
    state_path: Path, ordered: bool, where: str, at: int
) -> None:
    """ctrl+c in the body of item `at`, or in its call (the loop may be waiting, or have
    parked results that ended before their turn): the calls in flight are handed out (in
    order, when ordered), the progress saved counts each item handed, and the next run
    hands out exactly the others."""

    async def run(stop: bool, handed: list[int]) -> None:
        async def call(index: int) -> int:
            for _ in range(turns_before_it_ends(index)):
                await asyncio.sleep(0)
            if stop and where == "call" and index == at:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            return index

        async with Resumable(state_path, quiet=True) as r:
            async for index in r.amap(call, range(12), concurrency=4, window=4, ordered=ordered):
                handed.append(index)
                if stop and where == "body" and index == at:
                    await send_and_let_the_loop_see()

    first: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(True, first))
    assert at in first
    assert inspect(state_path).position == len(first)
    second: list[int] = []
    asyncio.run(run(False, second))
    if ordered:
        assert first + second == list(range(12))
    else:
        assert sorted(first + second) == list(range(12))
    assert (inspect(state_path).position, inspect(state_path).finished) == (12, True)


@pytest.mark.parametrize("ordered", [True, False])
def test_attempt_failing_in_amap_s_body_fails_that_item_only_over_three_runs(
    state_path: Path, ordered: bool
) -> None:
    """r.attempt() records a failure in the body: that item is failed (and retried on the
    next run, first when below the watermark), the results after it are done. Calls end
    out of order, so results come both at the watermark and above it."""
    done: set[int] = set()
    attempts: dict[int, int] = {}

    async def run(failing: set[int], break_at: int | None) -> list[int]:
        handed: list[int] = []

        async def call(index: int) -> int:
            for _ in range(turns_before_it_ends(index)):
                await asyncio.sleep(0)
            return index

        async with Resumable(state_path, quiet=True) as r:
            async for index in r.amap(
                call, range(20), concurrency=4, window=6, ordered=ordered, on_error="record"
            ):
                if index == break_at:
                    break
                handed.append(index)
                with r.attempt():
                    if index in failing:
                        attempts[index] = attempts.get(index, 0) + 1
                        raise BoomError(index)
                    done.add(index)
                    attempts.pop(index, None)
        return handed

    for failing, break_at in (({0, 5, 6, 9}, 10), ({5, 13}, None), (set(), None)):
        before = set(done)
        handed = asyncio.run(run(failing, break_at))
        assert len(handed) == len(set(handed))
        assert not before & set(handed)
        snapshot = inspect(state_path)
        assert {f.position: f.attempts for f in snapshot.failed} == attempts
    assert done == set(range(20))
    assert (inspect(state_path).position, inspect(state_path).finished) == (20, True)


def test_a_failure_below_the_watermark_is_retried_first_by_amap_in_order(
    state_path: Path,
) -> None:
    """Failed items below the watermark of an earlier run (a stop left it past them) come
    first, then the input from the watermark, in order; each counted once."""

    async def run(failing: set[int], break_at: int | None) -> list[int]:
        handed: list[int] = []

        async def call(index: int) -> int:
            await asyncio.sleep(0)
            if index in failing:
                raise BoomError(index)
            return index

        async with Resumable(state_path, quiet=True) as r:
            async for index in r.amap(call, range(10), window=3, on_error="record"):
                if index == break_at:
                    break
                handed.append(index)
        return handed

    assert asyncio.run(run({1, 4}, 6)) == [0, 2, 3, 5]
    assert {f.position for f in inspect(state_path).failed} == {1, 4}
    assert inspect(state_path).position == 6
    assert asyncio.run(run(set(), None)) == [1, 4, 6, 7, 8, 9]
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished, snapshot.failed) == (10, True, ())


# A job that makes a child process in the body of item 2, in one of several ways; the
# child tries to save the parent's job (`r.save()`, then leaving the with block, as a
# child that falls through the code would), or opens a job of its own. Each process prints
# what it saw. The parent finishes its loop and prints the job's position and state.
FORKING_JOB = r"""
import ctypes, multiprocessing, os, sys
from resumable import Resumable, UsageError, inspect

how, state, own = sys.argv[1], sys.argv[2], sys.argv[3]


def try_to_save(r):
    r.state["who"] = "child"
    try:
        r.save()
        return "saved"
    except UsageError as refused:
        return "refused" if "os.fork()" in str(refused) else repr(refused)


def in_a_process_child(r):
    print(f"child {try_to_save(r)}", flush=True)


def a_job_of_its_own(path):
    with Resumable(path, quiet=True) as mine:
        for _ in mine.iterate(range(3)):
            mine.save()
    print(f"own job saved {inspect(path).position}", flush=True)


def saved():
    if not os.path.exists(state):
        return "nothing saved"
    done = inspect(state)
    return f"{done.position} {done.state}"


def main():
    parent = os.getpid()
    with Resumable(state, quiet=True) as r:
        for item in r.iterate(range(5)):
            if item != 2:
                continue
            if how in ("fork", "forkserver"):
                context = multiprocessing.get_context(how)
                if how == "forkserver":
                    context.set_forkserver_preload(["resumable"])
                    child = context.Process(target=a_job_of_its_own, args=(own,))
                else:
                    child = context.Process(target=in_a_process_child, args=(r,))
                child.start()
                child.join()
                continue
            reading, writing = os.pipe()
            pid = os.forkpty()[0] if how == "forkpty" else ctypes.CDLL(None).fork()
            if pid == 0:
                os.write(writing, try_to_save(r).encode())
                os.close(writing)
                break  # and out of the with block, which must save nothing either
            os.close(writing)
            print(f"child {os.read(reading, 100).decode()}", flush=True)
            os.waitpid(pid, 0)
            print(f"after the child: {saved()}", flush=True)
    if os.getpid() != parent:
        os._exit(0)
    print(f"parent done: {saved()}", flush=True)


if __name__ == "__main__":
    main()
"""


def run_forking_job(tmp_path: Path, how: str) -> list[str]:
    script = tmp_path / "forking_job.py"
    script.write_text(FORKING_JOB)
    state, own = tmp_path / "job.state", tmp_path / "own.state"
    child = subprocess.Popen(
        [sys.executable, str(script), how, str(state), str(own)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return out.splitlines()


@pytest.mark.parametrize("how", ["fork", "forkpty"])
def test_a_child_made_by_multiprocessing_or_forkpty_cannot_save_the_parent_s_job(
    tmp_path: Path, how: str
) -> None:
    """The pid a save compares is renewed in the child by os.register_at_fork: a child of
    multiprocessing's "fork" start method, or of os.forkpty(), is refused its save (and
    the forkpty child leaving the with block saves nothing either)."""
    lines = run_forking_job(tmp_path, how)
    assert lines[0] == "child refused"
    if how == "forkpty":
        assert lines[1] == "after the child: nothing saved"  # nothing saved yet by the parent
    assert lines[-1] == "parent done: 5 {}"


def test_a_job_opened_in_a_forkserver_child_with_resumable_preloaded_saves(
    tmp_path: Path,
) -> None:
    """The forkserver imported resumable before it forked the child: the child's own job
    is its own (its pid renewed), and saves."""
    assert run_forking_job(tmp_path, "forkserver") == ["own job saved 3", "parent done: 5 {}"]


def test_a_child_forked_by_c_code_cannot_save_the_parent_s_job(tmp_path: Path) -> None:
    lines = run_forking_job(tmp_path, "c")
    assert lines[:2] == ["child refused", "after the child: nothing saved"]
    assert lines[-1] == "parent done: 5 {}"


def test_the_recorded_length_follows_a_list_that_grows_after_its_first_items_are_recorded(
    state_path: Path,
) -> None:
    """The input's record is made again only when it changes: a list the body appends to
    once its first 16 items are recorded (the head no longer changes) is recorded at its
    new length, which the next run compares."""
    items = list(range(30))
    with Resumable(state_path, quiet=True, policy=NPolicy(1)) as r:
        for item in r.iterate(items):
            if item == 27:
                break
            if 20 <= item < 25:
                items.append(100 + item)
    assert inspect(state_path).input_length == 35
    with (
        pytest.raises(InputChangedError, match="had 35 items"),
        Resumable(state_path, quiet=True) as r,
    ):
        list(r.iterate(list(range(30))))
    with Resumable(state_path, quiet=True) as r:
        assert list(r.iterate(items)) == [27, 28, 29, 120, 121, 122, 123, 124]


def test_an_item_done_since_the_last_record_is_compared_on_the_next_run(
    state_path: Path,
) -> None:
    """Saved at every item, the record covers each done item as it is done: one changed
    after the record was first made (at the same length) is caught."""
    with Resumable(state_path, quiet=True, policy=NPolicy(1)) as r:
        for item in r.iterate(list(range(10))):
            if item == 5:
                break
    changed = [0, 1, 2, 3, 40, 5, 6, 7, 8, 9]
    with pytest.raises(InputChangedError), Resumable(state_path, quiet=True) as r:
        list(r.iterate(changed))


class InputError(Exception):
    """What an input that breaks midway raises."""


def breaking_at(size: int, end: int | None) -> Iterator[int]:
    """0 to size-1, raising InputError instead of `end`."""
    for index in range(size):
        if index == end:
            raise InputError(index)
        yield index


@pytest.mark.parametrize("driver", ["map", "amap"])
@pytest.mark.parametrize("ordered", [True, False])
def test_an_input_that_raises_midway_leaves_each_item_handed_done_and_no_other(
    state_path: Path, driver: str, ordered: bool
) -> None:
    """A generator that raises past the first chunk: its error leaves the loop; each item
    handed out before is done, and the next run hands out exactly the others."""

    def run(end: int | None, handed: list[int]) -> None:
        if driver == "map":
            with Resumable(state_path, quiet=True) as r:
                handed += r.map(abs, breaking_at(3000, end), ordered=ordered, window=64)
            return

        async def call(index: int) -> int:
            for _ in range(turns_before_it_ends(index)):
                await asyncio.sleep(0)
            return index

        async def loop() -> None:
            async with Resumable(state_path, quiet=True) as r:
                items = breaking_at(3000, end)
                async for index in r.amap(call, items, ordered=ordered, window=64):
                    handed.append(index)

        asyncio.run(loop())

    first: list[int] = []
    with pytest.raises(InputError):
        run(1500, first)
    assert inspect(state_path).position == len(first)
    second: list[int] = []
    run(None, second)
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(3000))
    if ordered:
        assert first + second == list(range(3000))
    assert (inspect(state_path).position, inspect(state_path).finished) == (3000, True)


@pytest.mark.parametrize("ordered", [True, False])
def test_asave_from_another_task_during_amap_saves_what_is_done_then(
    state_path: Path, ordered: bool
) -> None:
    """Another task's asave() mid-loop returns once the loop saved after its current
    result: the file then counts at least the results done when it was asked, and no more
    than those handed out; a break later and the next run lose and repeat nothing."""
    handed: list[int] = []
    seen: list[tuple[int, int, int]] = []  # done when asked, saved, handed when saved

    async def run(stop: bool) -> None:
        asked = asyncio.Event()

        async def call(index: int) -> int:
            for _ in range(turns_before_it_ends(index)):
                await asyncio.sleep(0)
            return index

        async with Resumable(state_path, quiet=True, policy=NPolicy(10**9)) as r:

            async def save_now() -> None:
                await asked.wait()
                done = len(handed) - 1  # the item whose body runs is not done yet
                await r.asave()
                seen.append((done, inspect(state_path).position, len(handed)))

            saver = asyncio.create_task(save_now())
            async for index in r.amap(call, range(200), concurrency=8, ordered=ordered):
                if stop and index == 150:
                    break
                handed.append(index)
                if len(handed) == 50:
                    asked.set()
                await asyncio.sleep(0)  # the saver runs during some bodies
            await saver

    asyncio.run(run(stop=True))
    ((done, saved, handed_then),) = seen
    assert done <= saved <= handed_then
    first = list(handed)
    assert inspect(state_path).position == len(first)
    handed.clear()
    seen.clear()
    asyncio.run(run(stop=False))
    assert not set(first) & set(handed)
    assert sorted(first + handed) == list(range(200))


@pytest.mark.parametrize("driver", ["map", "amap"])
@pytest.mark.parametrize("on_change", ["restart", "continue"])
def test_a_changed_input_after_done_above_across_chunk_edges(
    tmp_path: Path, driver: str, on_change: Literal["restart", "continue"]
) -> None:
    """The input's first item changed since the run that left items done above the
    watermark: "restart" hands out every item once, in order, and forgets the failures;
    "continue" goes on as if it were the same input (the same items as an unchanged one)."""
    state = tmp_path / "job.state"
    leave_done_above_across_chunk_edges(state)
    changed = list(range(N))
    changed[0] = -1
    handed: list[int] = []
    if driver == "map":
        with Resumable(state, quiet=True) as r:
            handed += r.map(abs, changed, window=100, on_change=on_change)
    else:

        async def absolute(index: int) -> int:
            return abs(index)

        async def run() -> None:
            async with Resumable(state, quiet=True) as r:
                async for index in r.amap(absolute, changed, window=100, on_change=on_change):
                    handed.append(index)

        asyncio.run(run())
    if on_change == "restart":
        assert handed == [1, *range(1, N)]
    else:
        assert handed == [FAILED_BELOW, *sorted(set(range(W, N)) - DONE_ABOVE)]
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.finished, snapshot.failed) == (N, True, ())


@pytest.mark.parametrize("ordered", [True, False])
def test_ctrl_c_mid_chunk_of_a_resumed_map_then_a_third_run_completes_the_job(
    tmp_path: Path, ordered: bool
) -> None:
    """A run resumed with items done above the watermark across chunk edges gets ctrl+c in
    the body of an item inside the second chunk: the calls in flight are handed out, and
    the third run hands out exactly the items neither run did."""
    state = tmp_path / "job.state"
    leave_done_above_across_chunk_edges(state)
    second: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(state, quiet=True) as r:
        for index in r.map(abs, range(N), ordered=ordered, window=16, workers=4):
            second.append(index)
            if index == W + 1030:
                os.kill(os.getpid(), signal.SIGINT)
    # Counted: the items done before (the failure above, to be retried, no longer), and
    # those handed out, but 3 (a retry below the watermark, which counts it already).
    assert inspect(state).position == W + len(DONE_ABOVE) + len(second) - 1
    with Resumable(state, quiet=True) as r:
        third = list(r.map(abs, range(N), ordered=ordered, window=16, workers=4))
    assert not set(second) & set(third)
    expected = [FAILED_BELOW, *sorted(set(range(W, N)) - DONE_ABOVE)]
    if ordered:
        assert second + third == expected
    else:
        assert sorted(second + third) == sorted(expected)
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.finished, snapshot.failed) == (N, True, ())


@pytest.mark.parametrize("keyed", [False, True], ids=["by-position", "by-key"])
@pytest.mark.parametrize("driver", ["map", "amap"])
def test_items_appended_to_a_list_input_in_the_body_of_map_are_not_lost(
    state_path: Path, driver: str, keyed: bool
) -> None:
    """As iterate() (and a for loop) does: the items appended in the body come after the
    others, in the same run. Before, map and amap read the list ahead of the body (the
    window) to its end, its iterator stopped for good, and the job was saved finished at
    position 10 with the input's length 15: the next run over the same 15 items handed out
    nothing, 5 items silently lost."""
    items = list(range(10))
    key = {"key": str} if keyed else {}

    def run() -> list[int]:
        handed: list[int] = []
        if driver == "map":
            with Resumable(state_path, quiet=True) as r:
                for index in r.map(abs, items, window=16, **key):  # type: ignore[arg-type]
                    handed.append(index)
                    if index < 5:
                        items.append(100 + index)
            return handed

        async def absolute(index: int) -> int:
            return abs(index)

        async def loop() -> None:
            async with Resumable(state_path, quiet=True) as r:
                async for index in r.amap(absolute, items, window=16, **key):  # type: ignore[arg-type]
                    handed.append(index)
                    if index < 5:
                        items.append(100 + index)

        asyncio.run(loop())
        return handed

    assert run() == [*range(10), *range(100, 105)]
    assert len(items) == 15
    assert run() == []  # all done, finished at the length it has
    assert inspect(state_path).finished


# Killed (SIGKILL, by itself) in the body of item `kill_at`, saving after every item; over
# input "a" item 3 fails and is recorded, over input "b" (another first item) nothing
# fails, and on_change="restart" starts the job over.
KILLED_JOB = r"""
import os, signal, sys
from resumable import NPolicy, Resumable

state, which, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = list(range(20)) if which == "a" else [-1, *range(1, 20)]
with Resumable(state, quiet=True, policy=NPolicy(1)) as r:
    for item in r.iterate(items, on_error="record", on_change="restart"):
        with r.attempt():
            if which == "a" and item == 3:
                raise ValueError("fails in the first input")
        if item == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_failure_only_the_log_held_stays_gone_after_a_restart_and_another_kill(
    tmp_path: Path,
) -> None:
    """The job's first failure rides the progress log, and the run is killed: only the
    log holds it. The next run, over another input, starts over (on_change="restart") and
    is killed too: the run after it finds no failure from the first input."""
    script, state = tmp_path / "killed_job.py", tmp_path / "job.state"
    script.write_text(KILLED_JOB)
    for which, kill_at in (("a", 5), ("b", 7)):
        killed = subprocess.run(
            [sys.executable, str(script), str(state), which, str(kill_at)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if which == "a":
            assert [f.position for f in inspect(state).failed] == [3]
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.failed) == (7, ())
    with Resumable(state, quiet=True) as r:
        assert list(r.iterate([-1, *range(1, 20)])) == list(range(7, 20))
        assert not r.failed


async def one_turn_then(index: int) -> int:
    await asyncio.sleep(0)
    return index


def raising_at_5(error: BaseException) -> Any:
    """A plain function for amap: a coroutine, but raises `error` itself for item 5."""

    def call(index: int) -> Any:
        if index == 5:
            raise error
        return one_turn_then(index)

    return call


def two_arguments(index: int, extra: int) -> Any:
    return one_turn_then(index + extra)


wrong_arity: Any = two_arguments  # amap calls it with one: a TypeError of the call


@pytest.mark.parametrize(
    ("fn", "raised", "position"),
    [
        (raising_at_5(KeyboardInterrupt()), KeyboardInterrupt, 5),
        (raising_at_5(asyncio.CancelledError()), asyncio.CancelledError, 5),
        (raising_at_5(GeneratorExit()), GeneratorExit, 5),
        (raising_at_5(ValueError("x")), ValueError, 5),
        (wrong_arity, TypeError, 0),
    ],
    ids=["KeyboardInterrupt", "CancelledError", "GeneratorExit", "ValueError", "arity"],
)
def test_amap_raises_what_fn_raises_as_it_is_called_after_the_results_before_it(
    state_path: Path, fn: Any, raised: type[BaseException], position: int
) -> None:
    """fn raises as it is called, before any awaitable: the loop raises that error, as it
    is (a TypeError of the call itself is not taken for an fn that is not async), once
    the results before it were handed out, and they are done."""
    handed: list[int] = []

    async def run() -> None:
        async with Resumable(state_path, quiet=True) as r:
            async for index in r.amap(fn, range(10), concurrency=2, window=4):
                handed.append(index)

    with pytest.raises(raised) as caught:
        asyncio.run(asyncio.wait_for(run(), timeout=30))
    if raised is TypeError:
        assert "cannot be awaited" not in str(caught.value)
        assert "extra" in str(caught.value)
    assert handed == list(range(position))
    assert inspect(state_path).position == position


def test_amap_records_a_type_error_of_the_call_itself_for_each_item(state_path: Path) -> None:
    async def run() -> list[int]:
        async with Resumable(state_path, quiet=True) as r:
            return [index async for index in r.amap(wrong_arity, range(4), on_error="record")]

    assert asyncio.run(run()) == []
    failed = inspect(state_path).failed
    assert [(f.position, f.error_type) for f in failed] == [(i, "TypeError") for i in range(4)]
    assert all("extra" in f.message for f in failed)


def test_asave_from_another_task_returns_while_amap_waits_for_a_slow_call(
    state_path: Path,
) -> None:
    """Item 1's call waits until the save is made; items 0 and its body are done by then,
    and the loop waits for item 1 (window=1): the save is made without waiting for it."""
    saved: list[int] = []

    async def run() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def call(index: int) -> int:
            if index == 1:
                started.set()
                await release.wait()
            return index

        async with Resumable(state_path, quiet=True, policy=NPolicy(10**9)) as r:

            async def save_meanwhile() -> None:
                await started.wait()
                try:
                    await asyncio.wait_for(r.asave(), timeout=2)
                    saved.append(inspect(state_path).position)
                finally:
                    release.set()

            saver = asyncio.create_task(save_meanwhile())
            async for _ in r.amap(call, range(3), concurrency=1, window=1):
                pass
            await saver

    asyncio.run(run())
    assert saved == [1]


def test_no_queued_call_of_amap_starts_after_ctrl_c_is_seen_while_the_body_awaits(
    state_path: Path,
) -> None:
    started: list[int] = []
    seen: list[int] = []  # calls started once the signal was seen, and 20 turns later

    async def call(index: int) -> int:
        started.append(index)
        await asyncio.sleep(0)
        return index

    async def run() -> None:
        async with Resumable(state_path, quiet=True) as r:
            async for index in r.amap(call, range(40), concurrency=1, window=8):
                if index == 0:
                    await send_and_let_the_loop_see()
                    seen.append(len(started))
                    for _ in range(20):
                        await asyncio.sleep(0)
                    seen.append(len(started))

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run())
    assert seen[1] == seen[0]


def random_run(
    state: Path, rng: random.Random, size: int, failing: set[int]
) -> tuple[list[int], set[int], set[int]]:
    """One run of map or amap with random settings, stopped at random (a break, ctrl+c,
    or none); the items handed out, those done, and those whose body failed."""
    driver, kind = rng.choice(["map", "amap"]), rng.choice(["range", "list", "generator"])
    items: Iterable[int] = range(size)
    if kind == "list":
        items = list(items)
    elif kind == "generator":
        items = (index for index in range(size))
    ordered, window = rng.random() < 0.3, rng.choice([1, 7, 100, 1023, 1025, 3000])
    stop, stop_after = rng.choice([None, "break", "signal"]), rng.randrange(1, size + 1)
    failing_now = {index for index in failing if rng.random() < 0.6}
    handed: list[int] = []
    done: set[int] = set()

    def body(r: Resumable, index: int) -> bool:
        """The body of one result; whether the loop goes on."""
        if stop == "break" and len(handed) == stop_after:
            return False
        handed.append(index)
        with r.attempt():
            if index in failing_now:
                raise BoomError(index)
            done.add(index)
        return True

    if driver == "map":
        with contextlib.suppress(KeyboardInterrupt), Resumable(state, quiet=True) as r:
            for index in r.map(abs, items, ordered=ordered, window=window, on_error="record"):
                if not body(r, index):
                    break
                if stop == "signal" and len(handed) == stop_after:
                    os.kill(os.getpid(), signal.SIGINT)
        return handed, done, set(handed) - done

    turns = {index: rng.choice([0, 0, 1, 3]) for index in range(size)}
    for stuck in rng.sample(range(size), 2):
        turns[stuck] = 500  # results far above the watermark while it waits

    async def call(index: int) -> int:
        for _ in range(turns[index]):
            await asyncio.sleep(0)
        return index

    async def run() -> None:
        async with Resumable(state, quiet=True) as r:
            concurrency = rng.choice([1, 4, 64])
            async for index in r.amap(
                call,
                items,
                ordered=ordered,
                window=window,
                on_error="record",
                concurrency=concurrency,
            ):
                if not body(r, index):
                    break
                if stop == "signal" and len(handed) == stop_after:
                    await send_and_let_the_loop_see()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return handed, done, set(handed) - done


@pytest.mark.slow
def test_random_runs_of_map_and_amap_hand_out_no_item_twice_and_skip_none(
    tmp_path: Path,
) -> None:
    """Campaigns of runs with random drivers, inputs, windows, orders, stops and failures
    (max_attempts=3) over 1,024 to 3,000 items: no run hands out an item twice, nor one
    an earlier run did; a finished job did every item but those given up."""
    rng = random.Random(campaign_seed())
    for campaign in range(200):
        size = rng.choice([1024, 1025, 2049, 3000])
        failing = set(rng.sample(range(size), rng.choice([0, 3, 20])))
        state = tmp_path / f"job{campaign}.state"
        done_before: set[int] = set()
        failures: dict[int, int] = {}
        # Until the job finished and has no failed item left to retry (max_attempts=3).
        while (
            not state.exists()
            or not (snapshot := inspect(state)).finished
            or any(f.attempts < 3 for f in snapshot.failed)
        ):
            handed, done, failed = random_run(state, rng, size, failing)
            assert len(handed) == len(set(handed))
            assert not done_before & set(handed)
            done_before |= done
            for index in failed:
                failures[index] = failures.get(index, 0) + 1
            for index in done:
                failures.pop(index, None)
        assert {f.position: f.attempts for f in snapshot.failed} == failures
        assert set(range(size)) - done_before == set(failures)
