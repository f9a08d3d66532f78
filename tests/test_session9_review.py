"""A hostile review of session 9's changes (review9): each test states what the user should
get; each was a strict xfail naming a bug found, until the lead fixed it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson

from resumable import Resumable, inspect


def progress_of(path: Path) -> dict[str, object]:
    progress: dict[str, object] = orjson.loads(path.read_bytes())["progress"]
    return progress


def leave_8_done_above_7(state: Path) -> None:
    """A first amap run that ends (a break) with item 8 done above the watermark, 7: the
    body had 8's result and asked for the next, 7's, then broke out."""

    async def run() -> None:
        eight = asyncio.Event()

        async def call(index: int) -> int:
            if index == 7:
                await eight.wait()  # 7 ends after 8: 8 is done above the watermark
            if index == 8:
                eight.set()
            return index

        async with Resumable(state, quiet=True) as r:
            async for index in r.amap(call, range(12), concurrency=4, window=3, ordered=False):
                if index == 7:
                    break

    asyncio.run(run())
    progress = progress_of(state)
    assert (progress["position"], progress["done_above"]) == (7, [8])


def test_an_item_done_above_the_watermark_is_not_run_again_by_amap(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    leave_8_done_above_7(state)
    ran: list[int] = []

    async def again() -> None:
        async def call(index: int) -> int:
            await asyncio.sleep(0)
            return index

        async with Resumable(state, quiet=True) as r:
            async for index in r.amap(call, range(12), window=1):
                ran.append(index)

    asyncio.run(again())
    assert ran == [7, 9, 10, 11]


def test_an_item_done_above_the_watermark_is_not_run_again_by_map(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    leave_8_done_above_7(state)
    ran: list[int] = []
    lock = threading.Lock()

    def call(index: int) -> int:
        with lock:
            ran.append(index)
        return index

    with Resumable(state, quiet=True) as r:
        handed = list(r.map(call, range(12), workers=1, window=1))
    assert handed == [7, 9, 10, 11]
    assert sorted(ran) == [7, 9, 10, 11]


class PageError(Exception):
    """What a failing item raises."""


def report_with_a_footer(state: Path, out: Path, failing: set[int]) -> None:
    """A positional job writing one line per item and a footer; the items in `failing`
    fail and are recorded."""
    with Resumable(state, quiet=True) as r:
        sink = r.sink(out)
        for item in r.iterate(range(6), on_error="record"):
            with r.attempt():
                if item in failing:
                    raise PageError(item)
                sink.write(f"{item}\n")
        sink.write("total\n")


def test_a_finished_job_s_retried_failure_appends_its_output_after_the_footer(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    report_with_a_footer(state, out, failing={3})
    assert out.read_text() == "0\n1\n2\n4\n5\ntotal\n"
    report_with_a_footer(state, out, failing=set())  # 3 is retried, and succeeds
    assert not inspect(state).failed
    # As a finished keyed job that takes new items: after the earlier footer, then anew.
    assert out.read_text() == "0\n1\n2\n4\n5\ntotal\n3\ntotal\n"


def keyed_report(state: Path, out: Path, keys: list[str], failing: set[str]) -> None:
    """A keyed job writing one line per item and a footer that counts the failed items."""
    with Resumable(state, quiet=True) as r:
        sink = r.sink(out)
        for key in r.iterate(keys, key=str, on_error="record"):
            with r.attempt():
                if key in failing:
                    raise PageError(key)
                sink.write(f"{key}\n")
        sink.write(f"done {r.position}, failed {len(r.failed)}\n")


def test_a_finished_keyed_job_s_new_failing_item_gets_its_footer_appended(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    keyed_report(state, out, ["a", "b"], failing=set())
    keyed_report(state, out, ["a", "b", "c"], failing={"c"})  # the input grew by c
    assert out.read_text() == "a\nb\ndone 2, failed 0\ndone 2, failed 1\n"
