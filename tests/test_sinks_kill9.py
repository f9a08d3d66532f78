"""A sink's file after real stops of a real child: kill -9 at random moments, ctrl+c, a
second ctrl+c inside an item, SIGTERM, an exception. Whatever stopped the runs, the file
the finished job leaves equals, byte for byte, the file of one uninterrupted run; and after
every kill, the file begins with the bytes the state file counts, as that run wrote them.

The job is tests/jobs/sink_job.py, for position (``iterate``), keyed and ``map`` progress.
"""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from resumable import inspect

from jobs.harness import Child, campaign_seed

LOOPS = ["iterate", "keyed", "map"]
KILLED_LOOPS = [*LOOPS, "amap"]  # amap's body is async: no stop at a pause in its item
_END = re.compile(r"end (\d+)")
MOST_PER_RUN = 40  # a run of a kill -9 campaign is killed after fewer items than this


def sink_job(directory: Path, *options: str) -> Child:
    """Start sink_job.py on the job in `directory` (its state file and its output)."""
    return Child("sink_job.py", directory / "job.state", directory / "out.jsonl", *options)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], bytes]:
    """The output of one run of the job over N items that nothing stops (each loop writes
    the same bytes: ``map`` hands the results out in input order)."""
    outputs: dict[int, bytes] = {}

    def output(items: int) -> bytes:
        if items not in outputs:
            directory = tmp_path_factory.mktemp("uninterrupted")
            with sink_job(directory, "--items", str(items), "--every", "3") as child:
                result = child.finish()
            assert result.returncode == 0, child.describe("the uninterrupted run")
            outputs[items] = (directory / "out.jsonl").read_bytes()
        return outputs[items]

    return output


def finish(directory: Path, items: int, loop: str, context: str) -> bytes:
    """Run the job to its end; its output."""
    with sink_job(directory, "--items", str(items), "--every", "3", "--loop", loop) as child:
        result = child.finish()
    assert result.returncode == 0, child.describe(context)
    assert child.seen[-1] == f"done {items} True", child.describe(context)
    return (directory / "out.jsonl").read_bytes()


def kill9_campaign(reference: bytes, tmp_path: Path, loop: str, kills: int, seed: int) -> None:
    """Kill the job `kills` times after a random number of its items, then finish it."""
    rng = random.Random(seed)
    items = campaign_items(kills)
    job = tmp_path / "job"
    job.mkdir()
    out = job / "out.jsonl"
    for kill in range(kills):
        target = rng.randrange(MOST_PER_RUN)
        context = f"kill {kill + 1} after {target} items (seed {seed})"
        with sink_job(job, "--items", str(items), "--every", "3", "--loop", loop) as child:
            ended = 0
            while ended < target:
                line = child.read_line()
                if line is None:
                    break  # it ran to the end before the test read its lines (a fast amap)
                ended += bool(_END.fullmatch(line))
            result = child.kill9()
        if result.returncode == 0:
            assert child.seen[-1] == f"done {items} True", child.describe(context)
            break  # the job finished: the final run below is a rerun of it
        assert result.returncode == -signal.SIGKILL, child.describe(context)
        try:
            recorded = inspect(job / "job.state").sinks[str(out)]
        except FileNotFoundError:  # killed before the sink's first save
            continue
        written = out.read_bytes()
        assert len(written) >= recorded, f"{context}: the state counts output not written"
        assert written[:recorded] == reference[:recorded], f"{context}: output differs"
    assert finish(job, items, loop, "final run") == reference


def campaign_items(kills: int) -> int:
    """Enough items that no run of a campaign of `kills` kills reaches the end."""
    return kills * MOST_PER_RUN // 2 + 100


@pytest.mark.parametrize("loop", KILLED_LOOPS)
def test_after_kill9_at_random_moments_the_output_equals_one_uninterrupted_runs(
    uninterrupted: Callable[[int], bytes], tmp_path: Path, loop: str
) -> None:
    reference = uninterrupted(campaign_items(10))
    kill9_campaign(reference, tmp_path, loop, kills=10, seed=campaign_seed())


@pytest.mark.slow
@pytest.mark.parametrize("loop", KILLED_LOOPS)
def test_after_200_kill9_the_output_equals_one_uninterrupted_runs(
    uninterrupted: Callable[[int], bytes], tmp_path: Path, loop: str
) -> None:
    reference = uninterrupted(campaign_items(200))
    kill9_campaign(reference, tmp_path, loop, kills=200, seed=campaign_seed())


STOPS = ["ctrl+c", "double ctrl+c", "SIGTERM", "exception"]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("stop", STOPS)
def test_a_stop_inside_an_item_leaves_output_equal_to_one_uninterrupted_runs(
    uninterrupted: Callable[[int], bytes], tmp_path: Path, loop: str, stop: str
) -> None:
    """Each run stops inside its item 7 or 30, after the first of its two writes. A first
    ctrl+c or SIGTERM lets the item finish (``map`` also hands the body the results of the
    calls in flight); a second ctrl+c and an exception stop it half written."""
    items = 40
    reference = uninterrupted(items)
    job = tmp_path / "job"
    job.mkdir()
    for at in (7, 30):
        how = "--raise-at" if stop == "exception" else "--pause-at"
        options = ("--items", str(items), "--every", "5", "--loop", loop, how, str(at))
        with sink_job(job, *options) as child:
            if stop != "exception":
                _half_way(child, at)
                child.send_signal(signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT)
                child.send("ping")
                child.expect("pong")  # the first signal was handled: a second one is not merged
                if stop == "double ctrl+c":
                    child.send_signal(signal.SIGINT)  # raises as the body reads its next line
                child.try_send("go on")
            result = child.finish()
        assert result.returncode != 0, child.describe(stop)
        finished_item = f"end {at}" in child.seen
        assert finished_item == (stop in ("ctrl+c", "SIGTERM")), child.describe(stop)
        position = inspect(job / "job.state").position
        if loop == "map" and finished_item:
            assert position > at, child.describe(stop)
        else:
            assert position == at + finished_item, child.describe(stop)
    assert finish(job, items, loop, f"the run after {stop}") == reference


def _half_way(child: Child, at: int) -> None:
    """Read up to the line that says item `at` is half written."""
    while (line := child.read_line()) is not None:
        if line == f"half {at}":
            return
    raise AssertionError(child.describe(f"item {at} was never half written"))


def test_an_exception_in_an_amap_body_leaves_output_equal_to_one_uninterrupted_runs(
    uninterrupted: Callable[[int], bytes], tmp_path: Path
) -> None:
    """Under asyncio, a body that raises after the first of its two writes: the item's
    half is cut off on the next run (its save, made in the save thread, did not count it)."""
    items = 40
    reference = uninterrupted(items)
    job = tmp_path / "job"
    job.mkdir()
    for at in (7, 30):
        options = ("--items", str(items), "--every", "5", "--loop", "amap", "--raise-at", str(at))
        with sink_job(job, *options) as child:
            result = child.finish()
        assert result.returncode != 0, child.describe("the exception")
        assert f"item {at} fails" in result.stderr, child.describe("another error")
        assert inspect(job / "job.state").position == at, child.describe("the exception")
    assert finish(job, items, "amap", "the run after the exceptions") == reference
