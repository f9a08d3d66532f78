"""r.amap and r.aiterate under asyncio: the same promises as map and iterate, with saves
that do not stall the event loop and signals that go through it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

import resumable
from resumable import NPolicy, Policy, Resumable, SinceLastSave, TimePolicy, UsageError


async def double(number: int) -> int:
    await asyncio.sleep(0)
    return 2 * number


async def send_and_let_the_loop_see(signum: int = signal.SIGINT) -> None:
    """Send `signum` to this process's main thread and let the event loop run its handler.

    Under asyncio a signal is handled by the event loop: its C handler writes the signal's
    number to the loop's wakeup pipe before pthread_kill returns; on its next turn the loop
    reads the pipe and schedules the handler, which runs on the turn after. Three turns of
    the loop (each `sleep(0)` is one) cover that, whatever the loop had in hand.
    """
    signal.pthread_kill(threading.main_thread().ident or 0, signum)
    for _ in range(3):
        await asyncio.sleep(0)


def progress_of(path: Path) -> dict[str, object]:
    progress: dict[str, object] = orjson.loads(path.read_bytes())["progress"]
    return progress


def test_results_equal_asyncio_gather_in_input_order(state_path: Path) -> None:
    async def main() -> list[int]:
        async with Resumable(state_path) as r:
            return [result async for result in r.amap(double, range(500), concurrency=20)]

    async def gathered() -> list[int]:
        return list(await asyncio.gather(*(double(n) for n in range(500))))

    assert asyncio.run(main()) == asyncio.run(gathered())


@pytest.mark.parametrize(
    ("concurrency", "most_at_once"),
    [(10, 10), (None, 16)],  # docs/concurrent.md: concurrency=16 by default
    ids=["concurrency=10", "default"],
)
def test_unordered_results_are_every_result_once_and_calls_overlap(
    state_path: Path, concurrency: int | None, most_at_once: int
) -> None:
    running = most = 0

    async def slow(number: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001 * (number % 5))  # real waits: the calls overlap
        running -= 1
        return number

    async def main() -> list[int]:
        async with Resumable(state_path) as r:
            calls = r.amap(slow, range(300), concurrency=concurrency, ordered=False)
            got = [n async for n in calls]
            assert r.position == 300
            assert r.finished
            return got

    assert sorted(asyncio.run(main())) == list(range(300))
    assert most == most_at_once  # never more than concurrency at once, and that many


def test_a_finished_job_calls_nothing_on_the_next_run(state_path: Path) -> None:
    called: list[int] = []

    async def noted(number: int) -> int:
        called.append(number)
        return number

    async def run() -> list[int]:
        async with Resumable(state_path) as r:
            return [n async for n in r.amap(noted, range(50))]

    assert asyncio.run(run()) == list(range(50))
    called.clear()
    assert asyncio.run(run()) == []
    assert called == []


def test_saves_are_made_in_another_thread_than_the_event_loop_s(state_path: Path) -> None:
    """The policy hears of each save from the thread that made it."""
    saving_threads: set[int] = set()

    class Noting(NPolicy):
        def on_save(self, since: SinceLastSave) -> None:
            saving_threads.add(threading.get_ident())

    async def main() -> int:
        async with Resumable(state_path, policy=Noting(10)) as r:
            async for _ in r.amap(double, range(100)):
                pass
            async for _ in r.aiterate([]):
                pass
            return r.saves

    with pytest.raises(UsageError):  # one loop per job: the aiterate above is refused
        asyncio.run(main())
    saving_threads.clear()

    async def again() -> int:
        async with Resumable(state_path.with_name("b.state"), policy=Noting(10)) as r:
            async for _ in r.amap(double, range(100)):
                pass
            await r.asave()
            return r.saves

    saves = asyncio.run(again())
    assert saves == 11
    assert saving_threads
    assert threading.get_ident() not in saving_threads


def test_a_slow_first_item_holds_the_window_then_ctrl_c_then_a_rerun_calls_none_done(
    state_path: Path,
) -> None:
    called: list[int] = []
    first_release = asyncio.Event

    async def run(stop_at: int | None) -> list[int]:
        release = first_release()

        async def work(number: int) -> int:
            called.append(number)
            if number == 0 and stop_at is not None:
                await release.wait()
            return number

        got: list[int] = []
        async with Resumable(state_path, policy=NPolicy(10**9)) as r:
            async for result in r.amap(work, range(200), concurrency=8, window=32, ordered=False):
                got.append(result)
                if len(got) == stop_at:
                    # Everything the window allows past the watermark is done but item 0.
                    await send_and_let_the_loop_see()
                    release.set()
        return got

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop_at=31))
    first = set(called)
    progress = progress_of(state_path)
    # Item 0 was in flight at the signal: it finished and went to the body before the stop.
    assert progress["kind"] == "watermark"
    assert progress["position"] == 32
    assert progress["done_above"] == []
    called.clear()
    rest = asyncio.run(run(stop_at=None))
    assert sorted(rest) == list(range(32, 200))
    assert not first & set(called)


def test_ctrl_c_lets_the_calls_in_flight_finish_and_no_call_runs_twice_across_runs(
    state_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"

    async def logged(item: int) -> int:
        await asyncio.sleep(0.0005 * (item % 3))
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{item}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return item

    handed: list[int] = []

    async def run(stop: bool) -> None:
        async with Resumable(state_path) as r:
            async for result in r.amap(logged, range(400), concurrency=8, ordered=False):
                handed.append(result)
                if stop and len(handed) == 100:
                    os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop=True))
    assert len(handed) > 100  # the calls in flight were handed to the body after the signal
    asyncio.run(run(stop=False))
    called = [int(line) for line in log.read_text().split()]
    assert sorted(called) == list(range(400))
    assert sorted(handed) == list(range(400))


def test_a_ctrl_c_while_the_loop_waits_for_a_call_starts_no_call_after_it(
    state_path: Path,
) -> None:
    """The first ctrl+c stops submitting at once, also while the loop waits for a call:
    the loop wakes and takes back the calls queued. Before, the worker took the next
    queued call as the one in flight ended, before the loop ran: all four the window
    held were made and handed out."""
    started: list[int] = []
    handed: list[int] = []

    async def work(item: int) -> int:
        started.append(item)
        if item == 0:
            await send_and_let_the_loop_see()  # the handler runs: the loop is woken
            for _ in range(3):  # three more turns of the event loop: the loop runs
                await asyncio.sleep(0)
        return item

    async def run() -> None:
        async with Resumable(state_path) as r:
            async for result in r.amap(work, range(10), concurrency=1):
                handed.append(result)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run())
    assert (started, handed) == ([0], [0])
    assert progress_of(state_path)["position"] == 1


def test_a_second_ctrl_c_cancels_the_calls_running_and_they_are_not_done(
    state_path: Path,
) -> None:
    """The first ctrl+c in the body of item 4; the second while the loop waits for items
    5 and 6, which never end: they are cancelled, and item 4 (its body ran) is done."""
    cancelled: list[int] = []

    async def run(stop: bool) -> list[int]:
        got: list[int] = []
        never, first_seen = asyncio.Event(), asyncio.Event()

        async def work(item: int) -> int:
            try:
                if item in (5, 6) and stop:
                    await never.wait()  # still running at the second signal
            except asyncio.CancelledError:
                cancelled.append(item)
                raise
            return item

        async def second_signal() -> None:
            await first_seen.wait()  # runs once the body has gone back to the loop
            await send_and_let_the_loop_see()

        sender = asyncio.create_task(second_signal())
        async with Resumable(state_path) as r:
            async for result in r.amap(work, range(10), concurrency=4, window=4):
                got.append(result)
                if result == 4 and stop:
                    await send_and_let_the_loop_see()
                    first_seen.set()
        sender.cancel()
        return got

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop=True))
    assert sorted(cancelled) == [5, 6]
    assert progress_of(state_path)["position"] == 5
    assert asyncio.run(run(stop=False)) == [5, 6, 7, 8, 9]


def test_an_exception_in_a_call_is_raised_in_the_body_after_the_calls_in_flight(
    state_path: Path,
) -> None:
    started: set[int] = set()
    ended: set[int] = set()

    async def work(item: int) -> int:
        started.add(item)
        await asyncio.sleep(0.001 * (item % 4))
        if item == 3:
            raise ValueError("item 3 is bad")
        ended.add(item)
        return item

    async def main() -> list[int]:
        got: list[int] = []
        async with Resumable(state_path) as r:
            try:
                async for result in r.amap(work, range(100), concurrency=4, window=8):
                    got.append(result)
            finally:
                assert started - ended == {3}  # no call runs on behind the error
        return got

    with pytest.raises(ValueError, match="item 3 is bad"):
        asyncio.run(main())
    assert progress_of(state_path)["position"] == 3


def test_with_on_error_record_a_failed_call_is_recorded_and_retried_next_run(
    state_path: Path,
) -> None:
    async def flaky(item: int) -> int:
        if item % 10 == 7 and not state_path.with_name("fixed").exists():
            raise ConnectionError(f"no answer for {item}")
        return item

    async def run() -> tuple[list[int], int]:
        async with Resumable(state_path) as r:
            got = [n async for n in r.amap(flaky, range(30), on_error="record")]
            return got, len(r.failed)

    got, failed = asyncio.run(run())
    assert got == [n for n in range(30) if n % 10 != 7]
    assert failed == 3
    state_path.with_name("fixed").touch()
    got, failed = asyncio.run(run())
    assert got == [7, 17, 27]
    assert failed == 0


def test_amap_with_key_skips_done_keys_wherever_they_are(state_path: Path) -> None:
    async def run(items: list[str]) -> list[str]:
        async def upper(item: str) -> str:
            return item.upper()

        async with Resumable(state_path) as r:
            return [n async for n in r.amap(upper, items, key=str, ordered=False)]

    assert sorted(asyncio.run(run(["a", "b", "c"]))) == ["A", "B", "C"]
    assert asyncio.run(run(["d", "c", "b", "a", "e"])) in (["D", "E"], ["E", "D"])


def test_cancelling_the_task_from_outside_saves_what_is_done_and_goes_on_up(
    state_path: Path,
) -> None:
    called: list[int] = []
    got: list[int] = []

    async def run(stuck_at: int | None) -> list[int]:
        async def work(item: int) -> int:
            called.append(item)
            if item == stuck_at:
                await asyncio.Event().wait()
            return item

        async with Resumable(state_path) as r:
            async for result in r.amap(work, range(100), concurrency=4):
                got.append(result)
        return got

    async def outside() -> None:
        task = asyncio.create_task(run(stuck_at=40))
        while 39 not in got:  # then the loop waits for item 40, which never ends
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(outside())
    assert progress_of(state_path)["position"] == 40
    before = set(called)
    called.clear()
    got.clear()
    assert asyncio.run(run(stuck_at=None)) == list(range(40, 100))
    assert set(called) == set(range(40, 100))
    # Called again: only those the window had let in (4 per worker), not yet handed out.
    assert before & set(called) <= set(range(40, 40 + 16))


@pytest.mark.parametrize("how", ["wait_for", "timeout"])
def test_a_timeout_stops_the_loop_saves_and_raises_timeout_error(
    state_path: Path, how: str
) -> None:
    """``asyncio.wait_for`` and (Python 3.11+) ``asyncio.timeout`` cancel the task."""
    got: list[int] = []

    async def job() -> None:
        async with Resumable(state_path) as r:
            async for result in r.amap(double, range(10**9), concurrency=4):
                got.append(result)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            if how == "timeout" and sys.version_info >= (3, 11):
                async with asyncio.timeout(0.05):
                    await job()
            else:
                await asyncio.wait_for(job(), 0.05)

    asyncio.run(main())
    assert got
    assert progress_of(state_path)["position"] == len(got)


def test_amap_in_a_plain_with_block_says_it_needs_async_with(state_path: Path) -> None:
    async def main() -> None:
        with Resumable(state_path) as r:
            with pytest.raises(UsageError, match="async with"):
                r.amap(double, range(3))
            assert list(r.iterate(range(3))) == [0, 1, 2]  # the run goes on as it was

    asyncio.run(main())


def test_asave_after_the_exit_says_where_it_works(state_path: Path) -> None:
    async def main() -> None:
        async with Resumable(state_path) as r:
            pass
        with pytest.raises(UsageError, match="inside the async with block"):
            await r.asave()

    asyncio.run(main())


def test_iterate_and_map_in_an_async_with_block_save_by_their_policy(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        async with Resumable(tmp_path / "iterate.state", policy=NPolicy(10)) as r:
            for _ in r.iterate(range(100)):
                await asyncio.sleep(0)
            by_iterate = r.saves
        async with Resumable(tmp_path / "map.state", policy=NPolicy(10)) as r:
            for _ in r.map(abs, range(100), workers=2):
                await asyncio.sleep(0)
            return by_iterate, r.saves

    assert asyncio.run(main()) == (10, 10)


def test_ctrl_c_stops_iterate_in_an_async_with_block_after_the_item(state_path: Path) -> None:
    async def run(stop_at: int | None) -> list[int]:
        got: list[int] = []
        async with Resumable(state_path) as r:
            for item in r.iterate(range(1000)):
                got.append(item)
                if item == stop_at:
                    await send_and_let_the_loop_see()  # the item goes on to its end
        return got

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop_at=100))
    assert progress_of(state_path)["position"] == 101
    assert asyncio.run(run(stop_at=None)) == list(range(101, 1000))


def test_a_function_that_is_not_async_is_named_with_what_amap_takes(state_path: Path) -> None:
    def blocking(number: int) -> int:
        return number

    async def main() -> None:
        async with Resumable(state_path) as r:
            async for _ in r.amap(blocking, range(3)):
                pass

    with pytest.raises(TypeError, match=r"returned int, which cannot be awaited.*to_thread"):
        asyncio.run(main())
    assert progress_of(state_path)["position"] == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"concurrency": 0}, r"amap\(concurrency=...\) takes a whole number >= 1"),
        ({"window": 1.5}, r"amap\(window=...\) takes a whole number >= 1"),
        ({"ordered": "no"}, r"amap\(ordered=...\) takes True or False"),
        ({"on_error": "skip"}, "on_error must be"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(
    state_path: Path, arguments: dict[str, object], message: str
) -> None:
    async def main() -> None:
        async with Resumable(state_path) as r:
            with pytest.raises((ValueError, TypeError), match=message):
                r.amap(double, range(3), **arguments)  # type: ignore[arg-type]
            assert [n async for n in r.amap(double, range(3))] == [0, 2, 4]

    asyncio.run(main())


def test_the_saved_state_stays_the_size_of_the_window_with_one_item_stuck(
    state_path: Path,
) -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def work(item: int) -> int:
            if item == 0:
                await release.wait()
            return item

        async with Resumable(state_path, policy=NPolicy(10**9)) as r:
            results = r.amap(work, range(100_000), concurrency=4, window=64, ordered=False)
            async for result in results:
                if result == 63:  # every other item the window lets in is done
                    await r.asave()
                    assert len(progress_of(state_path)["done_above"]) == 62  # type: ignore[arg-type]
                    release.set()
        assert r.position == 100_000
        assert state_path.stat().st_size < 1_000

    asyncio.run(main())


def test_a_resumed_window_with_gaps_calls_nothing_past_the_watermark_plus_window(
    state_path: Path,
) -> None:
    """Items 1 to 6 done above a watermark of 0: a rerun's input jumps from index 0 to 7,
    and with item 0 stuck nothing from 8 on may be called (the window is 8 past 0)."""
    called: list[int] = []
    called_while_stuck: list[int] = []

    async def first_run() -> None:
        async def work(item: int) -> int:
            if item == 0:
                await asyncio.Event().wait()  # never ends: cancelled by the break
            return item

        async with Resumable(state_path) as r:
            got = 0
            async for _ in r.amap(work, range(100), concurrency=4, window=8, ordered=False):
                got += 1
                if got == 7:
                    break  # item 0's call is cancelled, and the 7th result is not done

    asyncio.run(first_run())
    assert progress_of(state_path)["done_above"] == [1, 2, 3, 4, 5, 6]

    async def second_run() -> None:
        release = asyncio.Event()

        async def work(item: int) -> int:
            called.append(item)
            if item == 0:
                await release.wait()
            return item

        async def watch() -> None:
            try:
                for _ in range(50):  # turns of the event loop, not time: the loop's chances
                    await asyncio.sleep(0)
                called_while_stuck.extend(called)
            finally:
                release.set()

        watcher = asyncio.create_task(watch())
        async with Resumable(state_path) as r:
            async for _ in r.amap(work, range(100), concurrency=4, window=8, ordered=False):
                pass
            assert r.position == 100
        await watcher

    asyncio.run(second_run())
    assert sorted(called_while_stuck) == [0, 7]
    assert sorted(called) == [0, *range(7, 100)]


def test_frozen_time_drives_the_time_policy_under_asyncio(state_path: Path) -> None:
    """freezegun's clock is the one TimePolicy is counted by, in amap as in iterate."""
    with freeze_time("2026-01-01", tick=False) as frozen:

        async def slow(item: int) -> int:
            frozen.tick(10)  # each call takes ten seconds of the frozen clock
            return item

        async def main() -> list[int]:
            async with Resumable(state_path, policy=TimePolicy(60)) as r:
                async for _ in r.amap(slow, range(30), concurrency=1, window=1):
                    pass
                return [record.position for record in r.save_log]

        positions = asyncio.run(main())
    assert positions[:4] == [6, 12, 18, 24]


def test_a_display_of_one_s_own_counts_this_run_s_results_and_the_log_says_finished(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Counter:
        def __init__(self) -> None:
            self.count, self.closed = 0, False

        def update(self, n: int = 1) -> None:
            self.count += n

        def close(self) -> None:
            self.closed = True

    async def run(stop_at: int | None) -> tuple[Counter, int]:
        shown = Counter()
        async with Resumable(state_path, policy=NPolicy(7)) as r:
            async for result in r.amap(double, range(40), progress=shown):
                if result == stop_at:
                    break  # this result's body did not end: not done
        assert not shown.closed  # yours to close, as with iterate
        return shown, r.position

    caplog.set_level("INFO", logger="resumable")
    first, position = asyncio.run(run(stop_at=2 * 24))
    assert (first.count, position) == (24, 24)
    assert "finished" not in caplog.text
    second, position = asyncio.run(run(stop_at=None))
    assert (second.count, position) == (16, 40)  # only what this run did
    assert "finished; 40 items done" in caplog.text


# -- aiterate ---------------------------------------------------------------------------


def numbers() -> Iterator[int]:
    yield from range(100)


def test_aiterate_hands_out_what_iterate_does_and_a_job_goes_on_with_either(
    state_path: Path,
) -> None:
    async def first_half() -> list[int]:
        got: list[int] = []
        async with Resumable(state_path, policy=NPolicy(7)) as r:
            async for item in r.aiterate(numbers()):
                if item == 50:
                    break
                got.append(item)
                await asyncio.sleep(0)
        return got

    assert asyncio.run(first_half()) == list(range(50))
    assert progress_of(state_path) | {"input": None} == progress_of(state_path) | {
        "kind": "position",
        "position": 50,
        "input": None,
    }
    with Resumable(state_path) as r:
        assert list(r.iterate(numbers())) == list(range(50, 100))


def test_aiterate_with_key_batch_and_recorded_failures(state_path: Path) -> None:
    async def main() -> tuple[list[list[str]], list[object]]:
        got: list[list[str]] = []
        async with Resumable(state_path) as r:
            async for batch in r.aiterate(list("abcdefg"), key=str, batch=3, on_error="record"):
                with r.attempt():
                    if "d" in batch:
                        raise ConnectionError("down")
                    got.append(batch)
            return got, [failure.key for failure in r.failed]

    got, failed = asyncio.run(main())
    assert got == [["a", "b", "c"], ["g"]]
    assert failed == ["d", "e", "f"]


def test_aiterate_stops_at_the_next_item_on_ctrl_c_and_saves(state_path: Path) -> None:
    async def run(stop_at: int | None) -> list[int]:
        got: list[int] = []
        async with Resumable(state_path, policy=NPolicy(10**9)) as r:
            async for item in r.aiterate(range(100)):
                got.append(item)
                if item == stop_at:
                    await send_and_let_the_loop_see()  # the body goes on: the item ends first
        return got

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop_at=20))
    assert progress_of(state_path)["position"] == 21
    assert asyncio.run(run(stop_at=None)) == list(range(21, 100))


async def pages_of(words: list[str], fetched: list[str]) -> AsyncIterator[str]:
    """An async input, as a paginated API gives one: each item waits on the loop."""
    for word in words:
        await asyncio.sleep(0)
        fetched.append(word)
        yield word


def test_an_async_input_by_key_resumes_where_it_stopped(state_path: Path) -> None:
    """aiterate and amap over an async iterable, by key: a rerun skips the done keys
    wherever they come, and reads the input again (a stream cannot be entered midway)."""
    words = [f"w{n}" for n in range(30)]

    async def first(stop_after: int) -> list[str]:
        got: list[str] = []
        async with Resumable(state_path) as r:
            async for word in r.aiterate(pages_of(words, []), key=str):
                got.append(word)
                if len(got) == stop_after:
                    break
        return got

    async def rest() -> list[str]:
        async def upper(word: str) -> str:
            return word.upper()

        async with Resumable(state_path) as r:
            results = r.amap(upper, pages_of(words, []), key=str, concurrency=4)
            return [word async for word in results]

    assert asyncio.run(first(stop_after=12)) == words[:12]  # the twelfth: its body broke off
    assert asyncio.run(rest()) == [word.upper() for word in words[11:]]


def test_a_signal_while_an_async_input_makes_the_loop_wait_starts_no_more_calls(
    state_path: Path,
) -> None:
    called: list[str] = []
    gate = asyncio.Event

    async def run(stop: bool) -> list[str]:
        opened = gate()

        async def slow_stream() -> AsyncIterator[str]:
            for n in range(10):
                if n == 5 and stop:
                    await send_and_let_the_loop_see()  # the ctrl+c while the stream waits
                    opened.set()
                await asyncio.sleep(0)
                yield f"w{n}"

        async def note(word: str) -> str:
            called.append(word)
            return word

        got: list[str] = []
        async with Resumable(state_path) as r:
            async for word in r.amap(note, slow_stream(), key=str, concurrency=2):
                got.append(word)
        return got

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(stop=True))
    assert called == [f"w{n}" for n in range(5)]  # none after the signal
    assert asyncio.run(run(stop=False)) == [f"w{n}" for n in range(5, 10)]


@pytest.mark.parametrize("ordered", [True, False])
def test_results_reach_the_body_while_an_async_input_waits(state_path: Path, ordered: bool) -> None:
    """The stream's next page comes only once the body has had the first results (a
    consumer that acknowledges what it got): before the feeder, the loop waited for the
    stream before it handed out results, and the two waited for each other for good."""

    async def main() -> list[int]:
        more = asyncio.Event()

        async def stream() -> AsyncIterator[int]:
            for n in range(3):
                yield n
            await more.wait()
            yield 3

        got: list[int] = []
        async with Resumable(state_path) as r:
            async for x in r.amap(double, stream(), key=str, concurrency=4, ordered=ordered):
                got.append(x)
                if len(got) == 3:
                    more.set()
        return got

    # The deadline turns the old hang into a failure; it is not waited for when it works.
    assert sorted(asyncio.run(asyncio.wait_for(main(), 30))) == [0, 2, 4, 6]


def test_ctrl_c_while_an_async_input_waits_for_good_stops_the_loop(state_path: Path) -> None:
    """A stream that never hands out its next item: the first ctrl+c, which comes while
    the loop waits on it, stops the loop after the calls in flight (it used to wait for
    the stream), and the rerun calls only the items whose results the body did not get."""
    got: list[int] = []

    async def main() -> None:
        waiting = asyncio.Event()

        async def stream() -> AsyncIterator[int]:
            for n in range(3):
                yield n
            waiting.set()
            await asyncio.Event().wait()
            yield 3

        async def ctrl_c_once_it_waits() -> None:
            await waiting.wait()
            await send_and_let_the_loop_see()

        async with Resumable(state_path) as r:
            sender = asyncio.create_task(ctrl_c_once_it_waits())
            async for x in r.amap(double, stream(), key=str, concurrency=4):
                got.append(x)
            await sender

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(asyncio.wait_for(main(), 30))
    called: list[int] = []

    async def noted(n: int) -> int:
        called.append(n)
        return 2 * n

    async def rerun() -> None:
        async def stream() -> AsyncIterator[int]:
            for n in range(4):
                yield n

        async with Resumable(state_path) as r:
            async for _ in r.amap(noted, stream(), key=str):
                pass

    asyncio.run(rerun())
    assert sorted(called) == [n for n in range(4) if 2 * n not in got]
    assert len(called) < 4, "the body got no result before the stop"


def test_an_async_input_by_position_is_refused_with_what_to_do(state_path: Path) -> None:
    async def main() -> None:
        async with Resumable(state_path) as r:
            with pytest.raises(UsageError, match="pass key= to track its items by key"):
                r.aiterate(pages_of(["a"], []))
            with pytest.raises(UsageError, match="batch"):
                r.aiterate(pages_of(["a"], []), key=str, batch=2)
            assert [w async for w in r.aiterate(pages_of(["a", "b"], []), key=str)] == ["a", "b"]

    asyncio.run(main())


def test_a_custom_policy_sees_saves_under_asyncio_as_under_iterate(state_path: Path) -> None:
    """The owed save is made before the next item: the same save positions as iterate."""

    class Every(Policy):
        def should_save(self, since: SinceLastSave) -> bool:
            return since.items >= 3

    async def run_async() -> list[int]:
        async with Resumable(state_path, policy=Every()) as r:
            async for _ in r.aiterate(range(10)):
                pass
            return [record.position for record in r.save_log]

    with Resumable(state_path.with_name("sync.state"), policy=Every()) as r:
        for _ in r.iterate(range(10)):
            pass
    assert asyncio.run(run_async()) == [record.position for record in r.save_log]


# -- the mutation run of _drivers.aio (docs/reliability.md) ---------------------------------


def test_a_retried_failure_above_the_watermark_that_succeeds_is_no_longer_failed(
    state_path: Path,
) -> None:
    """Run 1: item 0 waits for good (the watermark stays at 0), item 7 fails and is
    recorded, passed above the watermark; the body breaks at the next result. Run 2: item
    7 is retried first and succeeds: its record goes, and the job finishes with none."""
    fixed = False
    blocked = asyncio.Event()  # never set: item 0 of the first run is cancelled at the break

    async def flaky(item: int) -> int:
        if item == 0 and not fixed:
            await blocked.wait()
        if item == 7 and not fixed:
            raise ConnectionError("no answer for 7")
        return item

    async def run() -> tuple[list[int], list[object]]:
        got = []
        async with Resumable(state_path) as r:
            async for n in r.amap(flaky, range(30), on_error="record", ordered=False):
                got.append(n)
                if r.failed and not fixed:
                    break
            return got, [item.where for item in r.failed]

    got, failed = asyncio.run(run())
    assert failed == [7]
    assert 0 not in got
    saved = progress_of(state_path)
    assert saved["position"] == 0
    assert 7 in saved["done_above"]  # type: ignore[operator]
    fixed = True
    got, failed = asyncio.run(run())
    assert failed == []
    assert 7 in got
    assert progress_of(state_path)["position"] == 30
    assert resumable.inspect(state_path).failed == ()


def test_the_debug_line_of_calls_cancelled_comes_after_a_break_not_a_completed_loop(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run(stop_at: int | None) -> None:
        async with Resumable(state_path) as r:
            async for n in r.amap(double, range(10)):
                if n == stop_at:
                    break

    cancelled = "the calls in flight were cancelled"
    with caplog.at_level(logging.DEBUG, logger="resumable"):
        asyncio.run(run(stop_at=4))
    assert cancelled in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="resumable"):
        asyncio.run(run(stop_at=None))
    assert "finished" in caplog.text
    assert cancelled not in caplog.text


def test_an_async_input_is_read_at_most_a_window_ahead_of_the_calls(state_path: Path) -> None:
    """While the first call waits, amap takes from the stream the window's calls (one
    running, three queued) and, read ahead by its feeder, a window more: 8 items of 100
    with window=4, not one more (docs/concurrent.md). The first
    call lets the event loop run 50 turns (no time passes) before it counts: the feeder
    reads without waiting, so it has long stopped at its limit."""
    pulled = 0
    counted: list[int] = []

    async def stream() -> AsyncIterator[str]:
        nonlocal pulled
        for number in range(100):
            pulled += 1
            yield f"k{number:03d}"

    async def first_waits(item: str) -> str:
        if item == "k000":
            for _ in range(50):
                await asyncio.sleep(0)
            counted.append(pulled)
        return item

    async def run() -> list[str]:
        async with Resumable(state_path) as r:
            results = r.amap(first_waits, stream(), key=str, concurrency=1, window=4)
            return [item async for item in results]

    assert len(asyncio.run(run())) == 100
    assert counted == [8]
