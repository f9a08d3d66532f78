"""kill -9 of a real child running ``r.map`` at any moment: nothing is lost, redone work is
bounded, the state file stays the size of the window.

The campaign runs tests/jobs/map_job.py (a pool of threads, ``NPolicy(n)``, ``window=W``):
its function logs ``called <i>`` and its body ``done <i>``, each with an fsync. The test
kills it with SIGKILL once it has read a random number of its ``end`` lines, reads what the
state file says is done, and restarts it, until the job finishes.

The bounds, per kill, and why they hold. Let S be the items the state file counts done
after the kill (the watermark and the items done above it, or the done keys):

- The bodies to run again, the items with a ``done`` line in the killed run that are not
  in S, are at most ``n``. NPolicy(n) saves as soon as n items are counted since the last
  save, and the loop counts an item (when it asks for the next result) and checks the
  policy before the next body starts. So at most n - 1 counted items wait for a save,
  plus the body the kill landed in; or n, when the kill landed in their save.
- The calls to run again, the items with a ``called`` line in the killed run that are not
  in S, are at most ``n + W - 1``: each is counted since the last save (at most n - 1, or
  n in their save), or in the body (one), or in flight. The loop submits a call only while
  fewer than W are in flight, and it takes the result for the body out of those, so in
  flight and in the body together are at most W, and at most W - 1 while a save runs.
  This is tighter than the policy's n plus the window plus the workers: the workers only
  run calls the window already let in.
- By position, every index in ``done_above`` is above the watermark and below it plus W
  (the loop submits nothing at or past the watermark + W), so ``done_above`` holds at most
  W - 1 indexes: the state file stays the size of the window.
- Nothing counted is undone: S holds only items with a ``done`` line, and S never shrinks.

In the end every item has a ``done`` line, and each item's ``called`` and ``done`` lines
number exactly one plus one per kill that left it to redo: the next run hands the body
exactly the items not in S, no more, and calls exactly those.

With ``processes=`` the job makes a ``ProcessPoolExecutor`` with that start method and
passes it as ``executor=``, in a session of its own. The kill is of the job alone, as
``kill -9 PID`` does; its worker processes would wait for work forever, so they watch the
job and exit when it dies (docs/concurrent.md, "Process pools"). After each kill the test
waits for every process of the job's group to end (a call still running in a worker may
log ``called`` after the job died: a call in flight, within the same bounds), and checks
the lock is free: no worker holds it.
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.documents import saved_keys, saved_progress
from jobs.harness import Child, Job, campaign_seed, wait_until_group_ended
from jobs.map_log import counted, log_lines, log_of

_READY = re.compile(r"ready (\d+) \d+")
_END = re.compile(r"end (\d+)")
_SAVED = re.compile(r"saved (\d+)")


@dataclass(frozen=True)
class Campaign:
    """One kill -9 campaign: how `map` runs, and how often and where it is killed."""

    kills: int
    every: int  # NPolicy(every)
    window: int
    workers: int = 8
    ordered: bool = False
    keyed: bool = False
    most_per_run: int = 200  # each run is killed after fewer ``end`` lines than this
    processes: str | None = None  # a process pool of `workers`, made with this start method
    asyncio: bool = False  # r.amap under asyncio.run, `workers` worker tasks

    @property
    def items(self) -> int:
        return self.kills * self.most_per_run + 500  # no run reaches the end before its kill

    def start(self, job: Job) -> Child:
        """Start map_job.py on `job`."""
        options = [
            "--items",
            str(self.items),
            "--every",
            str(self.every),
            "--workers",
            str(self.workers),
            "--window",
            str(self.window),
        ]
        options += ["--ordered"] * self.ordered + ["--keyed"] * self.keyed
        options += ["--asyncio"] * self.asyncio
        if self.processes is None:
            return Child("map_job.py", job.state, log_of(job), *options)
        options += ["--processes", self.processes]
        # In a session of its own: the group is the job and the processes of its pool.
        return Child("map_job.py", job.state, log_of(job), *options, new_session=True)


@dataclass(frozen=True)
class Kill:
    """One kill: the bodies and the calls of the killed run that the next runs redo."""

    bodies: frozenset[int]
    calls: frozenset[int]


def saved_done(job: Job) -> tuple[set[int], int]:
    """The items the state file counts done, as docs/state-file.md describes it, and how
    many indexes its ``done_above`` lists (0 for keys)."""
    if not job.state.exists():
        return set(), 0
    progress = saved_progress(job.state)
    if progress["kind"] == "keys":
        keys = saved_keys(job.state)
        assert all(type(key) is int for key in keys)
        assert len(keys) == progress["done"]
        return {int(key) for key in keys}, 0
    assert progress["kind"] == "watermark", progress
    above: list[int] = progress["done_above"]
    return set(range(progress["position"])) | set(above), len(above)


def expect_ready(child: Child, done: set[int], context: str) -> None:
    """Read the child's ``ready`` line and check it resumes with `done` done."""
    match = _READY.fullmatch(child.read_line() or "")
    assert match is not None, child.describe(f"{context}: no ready line")
    assert int(match[1]) == len(done), child.describe(f"{context}: resumed elsewhere")


def check_after_kill(
    job: Job, campaign: Campaign, child: Child, before: set[int], logged: int, context: str
) -> tuple[Kill, set[int]]:
    """After a kill of a run that started with `before` done and the log `logged` lines
    long: the state file kept every reported save, lost nothing, counts nothing undone,
    stays the size of the window, and leaves at most the bounds to redo."""
    done, above = saved_done(job)
    if done or job.state.exists():
        snapshot = job.snapshot()
        assert not snapshot.from_backup, context
        assert not snapshot.finished, context
        assert snapshot.position == len(done), context
    assert done >= before, f"{context}: items done before are no longer: {before - done}"
    saves = [int(m[1]) for line in child.seen if (m := _SAVED.fullmatch(line))]
    assert len(done) >= max(saves, default=0), f"{context}: a reported save was lost"
    lines = log_lines(job)
    ever_done = {item for what, item in lines if what == "done"}
    assert done <= ever_done, f"{context}: counts undone items {sorted(done - ever_done)}"
    assert above < campaign.window, f"{context}: done_above lists {above} indexes"
    run = lines[logged:]
    bodies = frozenset(item for what, item in run if what == "done") - done
    calls = frozenset(item for what, item in run if what == "called") - done
    n, window = campaign.every, campaign.window
    assert len(bodies) <= n, f"{context}: {len(bodies)} bodies to redo with NPolicy({n})"
    assert len(calls) <= n + window - 1, (
        f"{context}: {len(calls)} calls to redo with NPolicy({n}) and window={window}"
    )
    return Kill(bodies, calls), done


def map_kill9_campaign(job: Job, campaign: Campaign, seed: int) -> None:
    """Kill the map job `campaign.kills` times at random moments, then let it finish."""
    rng = random.Random(seed)
    began = time.monotonic()
    history: list[Kill] = []
    leftovers: list[Path] = []
    mid_save = 0  # kills that left a save's temp file behind
    outlived = 0.0  # the longest a process of the pool ran on after the job's kill
    done: set[int] = set()
    while len(history) < campaign.kills:
        target = rng.randrange(campaign.most_per_run)
        context = f"kill {len(history) + 1} after {target} results"
        logged = len(log_lines(job))
        with campaign.start(job) as child:
            expect_ready(child, done, context)
            assert not any(path.exists() for path in leftovers), f"{context}: temp file kept"
            ended = 0
            while ended < target:
                line = child.read_line()
                assert line is not None, child.describe(f"{context}: ended before the kill")
                ended += bool(_END.fullmatch(line))
            killed = time.monotonic()
            result = child.kill9()
        assert result.returncode == -signal.SIGKILL, child.describe(context)
        if campaign.processes is not None:
            # The pool's processes exit with the job (their calls' lines are all in the log
            # once they have), and none of them holds the job's lock.
            wait_until_group_ended(child.pid)
            outlived = max(outlived, time.monotonic() - killed)
            assert job.lock_is_free(), f"{context}: the lock is held after the kill"
        kill, done = check_after_kill(job, campaign, child, done, logged, context)
        history.append(kill)
        leftovers = job.temp_files()
        mid_save += bool(leftovers)

    total = campaign.items
    with campaign.start(job) as child:
        expect_ready(child, done, "final run")
        result = child.finish()
    assert result.returncode == 0, child.describe("final run")
    assert child.seen[-1] == f"done {total} True"
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished) == (total, True)
    assert saved_done(job)[1] == 0
    assert job.temp_files() == []
    assert job.lock_is_free()

    lines = log_lines(job)
    for what, redone in (
        ("done", [k.bodies for k in history]),
        ("called", [k.calls for k in history]),
    ):
        expected = Counter(range(total))
        for items in redone:
            expected.update(items)
        actual = counted(lines, what)
        missing, extra = expected - actual, actual - expected
        assert not missing, f"'{what}' fewer times than expected: {sorted(missing)[:20]}"
        assert not extra, f"'{what}' more times than expected: {sorted(extra)[:20]}"

    bodies = [len(kill.bodies) for kill in history]
    calls = [len(kill.calls) for kill in history]
    pool = f"; the pool had ended {outlived:.3f} s after a kill at most" * bool(campaign.processes)
    print(
        f"{campaign}: {len(history)} kills ({mid_save} in a save) in "
        f"{time.monotonic() - began:.1f} s; "
        f"bodies redone per kill: max {max(bodies)} (bound {campaign.every}), "
        f"{sorted(Counter(bodies).items())}; calls redone per kill: max {max(calls)} "
        f"(bound {campaign.every + campaign.window - 1}), {sorted(Counter(calls).items())}"
        f"{pool}"
    )


def test_kill9_of_map_loses_nothing_and_redoes_within_the_policy_and_the_window(
    tmp_path: Path,
) -> None:
    """Ten kills of ``map(ordered=False)`` with 8 threads, NPolicy(5) and window=16."""
    campaign = Campaign(kills=10, every=5, window=16)
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())


def test_kill9_of_map_by_key_loses_nothing_and_redoes_within_the_policy_and_the_window(
    tmp_path: Path,
) -> None:
    """Five kills of ``map(key=int, ordered=False)``: the done keys, the same bounds."""
    campaign = Campaign(kills=5, every=5, window=16, keyed=True, most_per_run=100)
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())


def test_kill9_of_ordered_map_loses_nothing_and_redoes_within_the_policy_and_the_window(
    tmp_path: Path,
) -> None:
    """Five kills of ``map(ordered=True)``: results in input order, the same bounds."""
    campaign = Campaign(kills=5, every=5, window=16, ordered=True, most_per_run=100)
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_kill9_of_map_in_a_process_pool_loses_nothing_and_the_pool_ends_with_the_job(
    tmp_path: Path, method: str
) -> None:
    """Ten kills of ``map(ordered=False)`` in a ``ProcessPoolExecutor(2)`` the job makes,
    whose workers exit when the job dies (docs/concurrent.md): the same bounds."""
    campaign = Campaign(kills=10, every=5, window=8, workers=2, processes=method)
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())


@pytest.mark.parametrize(
    "campaign",
    [
        Campaign(kills=10, every=5, window=16, asyncio=True),
        Campaign(kills=5, every=5, window=16, asyncio=True, keyed=True, most_per_run=100),
        Campaign(kills=5, every=5, window=16, asyncio=True, ordered=True, most_per_run=100),
    ],
    ids=["unordered", "keyed", "ordered"],
)
def test_kill9_of_amap_loses_nothing_and_redoes_within_the_policy_and_the_window(
    tmp_path: Path, campaign: Campaign
) -> None:
    """``amap`` under asyncio.run, its saves made in a thread of their own: the same bounds."""
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())


@pytest.mark.slow
@pytest.mark.parametrize(
    "campaign",
    [
        Campaign(kills=200, every=3, window=16, most_per_run=50),
        Campaign(kills=50, every=3, window=8, keyed=True, most_per_run=50),
        Campaign(kills=50, every=3, window=8, ordered=True, most_per_run=50),
        Campaign(kills=100, every=3, window=8, workers=2, most_per_run=50, processes="fork"),
        Campaign(kills=100, every=3, window=8, workers=2, most_per_run=50, processes="forkserver"),
        Campaign(kills=200, every=3, window=16, asyncio=True, most_per_run=50),
        Campaign(kills=50, every=3, window=8, asyncio=True, keyed=True, most_per_run=50),
        Campaign(kills=50, every=3, window=8, asyncio=True, ordered=True, most_per_run=50),
    ],
    ids=[
        "unordered",
        "keyed",
        "ordered",
        "fork",
        "forkserver",
        "amap",
        "amap-keyed",
        "amap-ordered",
    ],
)
def test_kill9_of_map_many_times_loses_nothing(tmp_path: Path, campaign: Campaign) -> None:
    """Hundreds of kills: the same guarantees."""
    map_kill9_campaign(Job(tmp_path), campaign, seed=campaign_seed())
