"""kill -9 of a real child process at any moment: nothing saved is lost, redone work is bounded.

The campaign runs tests/jobs/fast_job.py (NPolicy(n), items as fast as the saves allow)
and kills it with SIGKILL once the test has read a random number of its item lines, then
restarts it, until the job finishes. The child reports every completed save, so the test
knows a position the state file must at least hold after the kill.
"""

from __future__ import annotations

import random
import re
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.harness import Child, Job, campaign_seed

_READY = re.compile(r"ready (\d+) \d+")
_END = re.compile(r"end (\d+)")
_SAVED = re.compile(r"saved (\d+)")


@dataclass(frozen=True)
class Kill:
    """One kill: the position the state file held after it, and the last item the killed run
    wrote an effect for (its start position - 1 when it wrote none)."""

    position: int
    last_effect: int

    @property
    def redone(self) -> range:
        """The items whose effects the next run repeats: finished after the save, or in flight."""
        return range(self.position, self.last_effect + 1)


def start_position(child: Child, expected: int, context: str) -> None:
    """Read the child's ``ready`` line and check it resumes at `expected`."""
    line = child.read_line()
    match = _READY.fullmatch(line or "")
    assert match is not None, child.describe(f"{context}: no ready line")
    assert int(match[1]) == expected, child.describe(f"{context}: resumed elsewhere")


def check_after_kill(
    job: Job, child: Child, before: int, logged: int, every: int, context: str
) -> Kill:
    """After a kill of the run that started at position `before`, when the effects log had
    `logged` lines: the state file is readable, kept every reported save, never went back,
    and the work to redo is at most `every` finished items plus the one in flight."""
    saves = [int(m[1]) for line in child.seen if (m := _SAVED.fullmatch(line))]
    try:
        snapshot = job.snapshot()
    except FileNotFoundError:
        assert not saves, f"{context}: the child reported saves, yet there is no state file"
        position = 0
    else:
        assert not snapshot.from_backup, context
        assert not snapshot.finished, context
        position = snapshot.position
    assert position >= before, f"{context}: position went back from {before} to {position}"
    assert position >= max(saves, default=0), f"{context}: a reported save was lost"
    last_effect = max(job.effects_log()[logged:], default=before - 1)  # of this run only
    assert position <= last_effect + 1, f"{context}: position {position} counts undone items"
    redo = last_effect + 1 - position
    assert redo <= every + 1, f"{context}: {redo} items to redo with NPolicy({every})"
    return Kill(position, last_effect)


def kill9_campaign(job: Job, kills: int, every: int, most_per_run: int, seed: int) -> None:
    """Kill the job `kills` times at random moments, then let it finish; check it all.

    Each run is killed after the test read between 0 and `most_per_run` - 1 of its item
    lines. In the end the job finished with every item, and the effects log holds each item
    exactly once plus once more for each kill that left it to redo.
    """
    rng = random.Random(seed)
    total = kills * most_per_run + 500  # enough that no run reaches the end before its kill
    history: list[Kill] = []
    position = 0
    leftovers: list[Path] = []
    mid_save = 0  # kills that left a save's temp file behind
    while len(history) < kills:
        target = rng.randrange(most_per_run)
        context = f"kill {len(history) + 1} after {target} items"
        logged = len(job.effects_log())
        with job.fast("--items", str(total), "--every", str(every)) as child:
            start_position(child, position, context)
            assert not any(path.exists() for path in leftovers), f"{context}: temp file kept"
            ended = 0
            while ended < target:
                line = child.read_line()
                assert line is not None, child.describe(f"{context}: ended before the kill")
                ended += bool(_END.fullmatch(line))
            result = child.kill9()
        assert result.returncode == -signal.SIGKILL, child.describe(context)
        kill = check_after_kill(job, child, position, logged, every, context)
        history.append(kill)
        position = kill.position
        leftovers = job.temp_files()
        mid_save += bool(leftovers)
    redone = Counter(len(kill.redone) for kill in history)
    print(f"{kills} kills, {mid_save} in a save; items redone per kill: {sorted(redone.items())}")

    with job.fast("--items", str(total), "--every", str(every)) as child:
        start_position(child, position, "final run")
        result = child.finish()
    assert result.returncode == 0, child.describe("final run")
    assert child.seen[-1] == f"done {total} True"
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished) == (total, True)
    assert job.temp_files() == []
    assert job.lock_is_free()

    expected = Counter(range(total))
    for kill in history:
        expected.update(kill.redone)
    actual = Counter(job.effects_log())
    missing, extra = expected - actual, actual - expected
    assert not missing, f"items run fewer times than expected: {sorted(missing)[:20]}"
    assert not extra, f"items run more times than expected: {sorted(extra)[:20]}"


def test_kill9_at_random_moments_loses_no_saved_item_and_redoes_at_most_n_plus_one(
    tmp_path: Path,
) -> None:
    """Ten kills at random moments: no saved item is lost, each kill redoes at most
    NPolicy(5)'s 5 items plus the one in flight, and the job still finishes."""
    kill9_campaign(Job(tmp_path), kills=10, every=5, most_per_run=200, seed=campaign_seed())


@pytest.mark.slow
def test_kill9_at_random_moments_many_times_loses_no_saved_item(tmp_path: Path) -> None:
    """A hundred and twenty kills at random moments, with NPolicy(3): the same guarantees."""
    kill9_campaign(Job(tmp_path), kills=120, every=3, most_per_run=50, seed=campaign_seed())


def test_kill9_in_the_middle_of_a_save_keeps_the_previous_state_and_the_next_start_cleans_up(
    tmp_path: Path,
) -> None:
    """kill -9 while a save's temp file is written but not yet renamed: the state file still
    holds the previous save, and the next run removes the temp file and redoes the rest."""
    job = Job(tmp_path)
    with job.stepped("--items", "4", "--every", "2", "--block-in-save") as child:
        child.expect("ready 0 1")
        for item in range(4):
            child.expect(f"start {item}")
            child.send("go")
            child.expect(f"end {item}")
            if item == 1:  # the save of position 2 goes through
                child.expect("fsync")
                child.send("go")
        child.expect("fsync")  # the save of position 4 is halfway
        leftovers = job.temp_files()
        assert len(leftovers) == 1
        result = child.kill9()
    assert result.returncode == -signal.SIGKILL
    assert job.snapshot().position == 2
    assert job.lock_is_free()  # the kernel dropped the dead process's lock
    with job.stepped("--items", "4", "--every", "2") as child:
        child.expect("ready 2 2")
        assert not leftovers[0].exists()
        for item in (2, 3):
            child.expect(f"start {item}")
            child.send("go")
            child.expect(f"end {item}")
        child.expect("done 4 True")
        result = child.finish()
    assert result.returncode == 0
    assert job.effects_log() == [0, 1, 2, 3, 2, 3]
    assert job.temp_files() == []


def test_kill9_after_the_backup_is_kept_leaves_no_temp_file_once_a_later_run_finishes(
    tmp_path: Path,
) -> None:
    """kill -9 after a save linked the old state file as the backup but before it renamed the
    new one in (state and backup are then one file): the next run, which finishes the job,
    leaves no temp file behind."""
    job = Job(tmp_path)
    with job.stepped("--items", "4", "--every", "2", "--block-after-backup") as child:
        child.expect("ready 0 1")
        for item in range(4):
            child.expect(f"start {item}")
            child.send("go")
            child.expect(f"end {item}")
            # The first save (after item 1) keeps no backup: a new job has none to keep.
        child.expect("backup kept")  # the second save, between its two renames
        assert job.state.samefile(job.state.with_name("job.state.bak"))
        result = child.kill9()
    assert result.returncode == -signal.SIGKILL
    assert job.snapshot().position == 2
    with job.stepped("--items", "4", "--every", "2") as child:
        child.expect("ready 2 2")
        for item in (2, 3):
            child.expect(f"start {item}")
            child.send("go")
            child.expect(f"end {item}")
        child.expect("done 4 True")
        result = child.finish()
    assert result.returncode == 0
    snapshot = job.snapshot()
    assert (snapshot.position, snapshot.finished) == (4, True)
    assert job.temp_files() == []
