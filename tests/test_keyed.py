"""Keyed progress: ``iterate(items, key=...)`` skips done items by key, wherever they are."""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

from resumable import (
    NPolicy,
    Resumable,
    StateFileError,
    TimePolicy,
    UsageError,
    inspect,
)
from resumable._store import journal_files

from jobs.documents import (
    journal_file,
    journal_generations,
    journal_keys,
    key_frames,
    saved_keys,
    saved_records,
)
from jobs.harness import Job, campaign_seed


def run(
    path: Path,
    items: Iterable[object],
    stop_at: object = None,
    key: Callable[[object], str | int] | type[int] = str,
) -> list[object]:
    """Loop over `items` by key; break before the body of the item equal to `stop_at`."""
    seen: list[object] = []
    with Resumable(path) as r:
        for item in r.iterate(items, key=key):
            if item == stop_at:
                break
            seen.append(item)
    return seen


def done_keys(path: Path) -> set[str | int]:
    """The keys the state file commits, read from its journal and its progress log as
    docs/state-file.md says."""
    return saved_keys(path)


def test_new_items_run_done_ones_are_skipped_wherever_they_are(state_path: Path) -> None:
    assert run(state_path, ["a", "b", "c", "d"], stop_at="c") == ["a", "b"]
    # Reordered, one removed, two new: only c, d and the new ones run.
    assert run(state_path, ["new1", "d", "b", "c", "a", "new2"]) == ["new1", "d", "c", "new2"]
    assert done_keys(state_path) == {"a", "b", "c", "d", "new1", "new2"}
    assert inspect(state_path).position == 6
    assert inspect(state_path).progress_kind == "keys"


def test_a_changing_input_over_three_runs(state_path: Path) -> None:
    monday = [f"https://example.org/{n}" for n in range(10)]
    assert run(state_path, monday, stop_at=monday[6]) == monday[:6]
    tuesday = [*monday[3:], *[f"https://example.org/{n}" for n in range(10, 14)]]
    random.Random(2).shuffle(tuesday)
    ran_tuesday = run(state_path, tuesday, stop_at="https://example.org/11")
    wednesday = list(reversed(monday + [f"https://example.org/{n}" for n in range(10, 16)]))
    ran_wednesday = run(state_path, wednesday)
    everything = Counter(monday[:6] + ran_tuesday + ran_wednesday)
    assert set(everything) == set(wednesday)  # every item ran...
    assert max(everything.values()) == 1  # ...once


def test_the_item_in_flight_is_not_done_after_break_or_an_exception(state_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"), Resumable(state_path) as r:
        for item in r.iterate(["a", "b", "c"], key=str):
            if item == "b":
                raise ValueError("boom")
    assert done_keys(state_path) == {"a"}
    assert run(state_path, ["c", "b", "a"]) == ["c", "b"]


def test_str_and_int_keys_stay_distinct(state_path: Path) -> None:
    def identity(item: object) -> str | int:
        assert isinstance(item, (str, int))
        return item

    assert run(state_path, [1, "1", 2], key=identity) == [1, "1", 2]
    assert run(state_path, ["2", 1, "1", 2], key=identity) == ["2"]
    assert done_keys(state_path) == {1, "1", 2, "2"}


@pytest.mark.parametrize(
    ("bad", "named"),
    [(1.5, "float"), (True, "bool"), (b"x", "bytes"), (None, "NoneType"), (("a",), "tuple")],
)
def test_a_key_that_is_not_str_or_int_is_refused_naming_its_type(
    state_path: Path, bad: object, named: str
) -> None:
    run(state_path, ["a"])
    before = state_path.read_bytes()
    with pytest.raises(UsageError, match=rf"returned a {named}\b.*Return a str or an int"):
        run(state_path, ["b", "c"], key=lambda item: "b" if item == "b" else bad)  # type: ignore[arg-type, return-value]
    assert done_keys(state_path) == {"a", "b"}  # what finished before the bad key is kept
    assert orjson.loads(before)["progress"]["kind"] == "keys"


def test_a_job_keeps_the_kind_of_progress_it_started_with(state_path: Path, tmp_path: Path) -> None:
    with Resumable(state_path) as r:
        for item in r.iterate(range(5)):
            if item == 2:
                break
    with (
        Resumable(state_path) as r,
        pytest.raises(UsageError, match=r"by position \(2 done\).*restart=True"),
    ):
        r.iterate(range(5), key=str)
    keyed = tmp_path / "keyed.state"
    run(keyed, ["a", "b"], stop_at="b")
    with Resumable(keyed) as r, pytest.raises(UsageError, match="pass the same key= as before"):
        r.iterate(["a", "b"])
    with Resumable(keyed, restart=True) as r:
        assert list(r.iterate(range(3))) == [0, 1, 2]  # restart: free to choose again


def test_a_save_appends_only_the_new_keys_and_the_state_file_stays_small(
    state_path: Path,
) -> None:
    with Resumable(state_path, policy=NPolicy(100)) as r:
        for item in r.iterate(range(1000), key=int):
            if item == 500:
                size = state_path.stat().st_size
                journal = journal_file(state_path, 0).read_bytes()
            if item == 600:
                # A save of progress alone: the state file and the journal stay as they
                # were, and one record of the progress log holds the 100 new keys.
                assert state_path.stat().st_size == size
                assert journal_file(state_path, 0).read_bytes() == journal
                assert saved_records(state_path)[-1]["keys"] == list(range(500, 600))
    # The end of the run rewrote the state file: the journal holds every key.
    assert journal_keys(
        journal_file(state_path, 0), len(journal_file(state_path, 0).read_bytes())
    ) == set(range(1000))


def test_a_torn_journal_tail_is_ignored_and_cut_off(state_path: Path) -> None:
    run(state_path, ["a", "b", "c"], stop_at="c")
    journal = journal_file(state_path, 0)
    committed = journal.read_bytes()
    with journal.open("ab") as handle:  # what kill -9 in the middle of an append leaves
        handle.write(key_frames([["never", "committed"]])[0][:-3])
    assert run(state_path, ["c", "never", "committed"]) == ["c", "never", "committed"]
    assert done_keys(state_path) == {"a", "b", "c", "never", "committed"}
    # The torn bytes were cut off before the new record went in after the committed ones.
    assert journal.read_bytes() == committed + key_frames([["c", "never", "committed"]])[0]


def test_a_damaged_committed_journal_is_an_error_and_nothing_is_overwritten(
    state_path: Path,
) -> None:
    run(state_path, ["a", "b", "c"], stop_at="c")
    journal = journal_file(state_path, 0)
    data = bytearray(journal.read_bytes())
    data[-2] ^= 0x01
    journal.write_bytes(bytes(data))
    state = state_path.read_bytes()
    with pytest.raises(StateFileError, match="damaged at byte"):
        run(state_path, ["a", "b", "c"])
    assert state_path.read_bytes() == state
    assert journal.read_bytes() == bytes(data)


def test_ctrl_c_finishes_the_item_marks_it_done_and_stops(state_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(["a", "b", "c", "d"], key=str):
            if item == "b":
                signal.raise_signal(signal.SIGINT)  # a real signal; b still finishes
    assert done_keys(state_path) == {"a", "b"}


def test_a_finished_keyed_job_runs_the_items_added_since(state_path: Path) -> None:
    assert run(state_path, ["a", "b"]) == ["a", "b"]
    assert inspect(state_path).finished
    assert run(state_path, ["a", "b", "c"]) == ["c"]


def test_time_policy_saves_by_the_frozen_clock(state_path: Path) -> None:
    with (
        freeze_time("2026-11-27", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(10)) as r,
    ):
        for item in r.iterate(range(100), key=int):
            frozen.tick(1)
            if item == 35:
                break
        saves_in_the_loop = r.saves
    assert saves_in_the_loop == 3  # at 10, 20 and 30 seconds
    assert inspect(state_path).position == 35


def test_a_journal_of_many_records_is_folded_into_a_new_generation(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        journal_files, "FOLD_MIN_RECORDS", 3
    )  # the seam: fold past 3 records, not 1,000
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(range(10), key=int):
            if item == 8:
                break
            r.state["item"] = item  # every save rewrites the state file: a journal record
    generation = orjson.loads(state_path.read_bytes())["progress"]["journal"]["generation"]
    assert generation >= 2  # folded more than once
    assert done_keys(state_path) == set(range(8))
    assert set(journal_generations(state_path)) == set(range(generation + 1))
    assert run(state_path, range(10), key=int) == [8, 9]
    # That run deleted the job's retired generations, all but the one its backup may name.
    assert set(journal_generations(state_path)) == {generation - 1, generation}


def test_with_the_fold_threshold_at_3_records_a_save_of_one_key_folds_every_third_save(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold comes exactly when the journal would hold more than FOLD_MIN_RECORDS
    records (each save rewrites the state file here, as r.state changes, and appends a
    record to the journal): a new job's fourth save (records 1, 2, 3, then a fourth is
    due), and from then on every third (the folded journal holds one record, then two,
    three). Each body sees the save made after the item before it."""
    monkeypatch.setattr(journal_files, "FOLD_MIN_RECORDS", 3)  # the seam: fold past 3 records
    generations = []
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(range(11), key=int):
            r.state["item"] = item  # every save rewrites the state file: a journal record
            if state_path.exists():
                document = orjson.loads(state_path.read_bytes())
                generations.append(document["progress"]["journal"]["generation"])
    # After the saves of items 0 to 9, seen by the bodies of items 1 to 10.
    assert generations == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_journal_files_get_the_state_file_s_permissions(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job made private (chmod 600) keeps its keys private in the journal files it writes."""
    run(state_path, range(10), key=int, stop_at=3)
    state_path.chmod(0o600)
    monkeypatch.setattr(
        journal_files, "FOLD_MIN_RECORDS", 3
    )  # the seam: fold past 3 records, not 1,000
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(range(10), key=int):
            if item == 8:
                break
            r.state["item"] = item  # every save rewrites the state file: a journal record
    generations = journal_generations(state_path)
    assert len(generations) >= 2  # at least one journal file written by the private job
    newest = generations[max(generations)]
    assert newest.stat().st_mode & 0o777 == 0o600
    assert state_path.stat().st_mode & 0o777 == 0o600


def test_the_journal_files_of_a_new_job_get_the_usual_permission_bits_less_the_umask(
    state_path: Path,
) -> None:
    """Under umask 002 a new keyed job's files, its key and failure journals too, are
    0664, as open() makes any file: no execute bit, whatever the bits they are made with."""
    umask = os.umask(0o002)
    try:
        with Resumable(state_path, policy=NPolicy(1)) as r:
            for item in r.iterate(["a", "b", "c"], key=str, on_error="record"):
                with r.attempt():
                    if item == "b":
                        raise ValueError("b fails")
    finally:
        os.umask(umask)
    journals = [
        *state_path.parent.glob("job.state.keys-*"),
        *state_path.parent.glob("job.state.failed-*"),
    ]
    assert len(journals) == 2
    assert {path.name: path.stat().st_mode & 0o777 for path in journals} == {
        path.name: 0o664 for path in journals
    }


def test_the_first_journal_file_of_a_private_keyed_job_is_private(state_path: Path) -> None:
    """A keyed job that has finished no key yet has a state file and no journal. Made
    private (chmod 600), the journal file its next run creates to append keys is 0600
    whatever the umask, not just the files a fold writes."""
    run(state_path, ["a", "b", "c"], stop_at="a")  # breaks before any key is done
    assert sorted(p.name for p in state_path.parent.glob("job.state.keys-*")) == []
    state_path.chmod(0o600)
    umask = os.umask(0o022)  # what would give a new file 0644
    try:
        assert run(state_path, ["a", "b", "c"], stop_at="c") == ["a", "b"]
    finally:
        os.umask(umask)
    journals = list(state_path.parent.glob("job.state.keys-*"))
    assert len(journals) == 1
    assert journals[0].stat().st_mode & 0o777 == 0o600
    assert done_keys(state_path) == {"a", "b"}


def test_journal_files_of_an_unfinished_fold_and_of_an_earlier_job_are_handled(
    state_path: Path,
) -> None:
    earlier = journal_file(state_path, 0)
    earlier.write_bytes(b"an earlier job's journal, moved aside by reset")
    run(state_path, ["a", "b"], stop_at="b")  # a new job: generation 1, above the earlier
    assert orjson.loads(state_path.read_bytes())["progress"]["journal"]["generation"] == 1
    unfinished = journal_file(state_path, 5)
    unfinished.write_bytes(b"a fold that a crash cut short")
    assert run(state_path, ["a", "b"]) == ["b"]
    assert not unfinished.exists()  # this job's, named by no state file: deleted
    assert earlier.read_bytes() == b"an earlier job's journal, moved aside by reset"


def test_kill9_at_random_moments_loses_no_item_with_keys_in_a_new_order_each_run(
    tmp_path: Path,
) -> None:
    job = Job(tmp_path)
    rng = random.Random(campaign_seed())
    total, every = 300, 4
    for run_number in range(6):
        logged = len(job.effects_log())
        with job.fast(
            "--items", str(total), "--every", str(every), "--keyed", "--shuffle", str(run_number)
        ) as child:
            target = rng.randrange(1, 40)
            ended = 0
            while ended < target:
                line = child.read_line()
                assert line is not None, child.describe("ended before the kill")
                ended += line.startswith("end ")
            killed = child.kill9()
            assert killed.returncode == -signal.SIGKILL, child.describe("not killed")
        done = done_keys(job.state) if job.state.exists() else set()
        effects = job.effects_log()
        assert done <= set(effects), "a key counted done whose body never ended"
        this_run = set(effects[logged:])
        assert len(this_run - done) <= every + 1, "more to redo than the policy allows"
    with job.fast(
        "--items", str(total), "--every", str(every), "--keyed", "--shuffle", "99"
    ) as child:
        result = child.finish()
    assert result.returncode == 0
    assert done_keys(job.state) == set(range(total))
    assert set(job.effects_log()) == set(range(total))


@pytest.mark.parametrize("batch", [None, 2], ids=["items", "batches"])
def test_a_finished_keyed_job_whose_input_gains_items_is_not_finished_until_they_ran(
    state_path: Path, batch: int | None
) -> None:
    with Resumable(state_path) as r:
        ran = list(r.iterate(["a", "b"], key=str, batch=batch))
        assert ran == (["a", "b"] if batch is None else [["a", "b"]])
    assert inspect(state_path).finished
    with Resumable(state_path) as r:
        for item in r.iterate(["a", "b", "c", "d"], key=str, batch=batch):
            assert item == ("c" if batch is None else ["c", "d"])
            assert not r.finished
            break
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (2, False)
    with Resumable(state_path) as r:
        ran = list(r.iterate(["a", "b", "c", "d"], key=str, batch=batch))
        assert ran == (["c", "d"] if batch is None else [["c", "d"]])
    assert inspect(state_path).finished


def test_ctrl_c_while_done_keys_are_skipped_stops_there_and_raises_only_the_stop(
    state_path: Path,
) -> None:
    """The stop comes at a done key, before any item of this run finished: the loop's
    first check, with no item counted since the loop started, raises the stop itself."""
    with Resumable(state_path) as r:
        for item in r.iterate(["a", "b", "c"], key=str):
            if item == "c":
                break
    ran: list[str] = []

    def keys() -> Iterator[str]:
        yield "a"
        signal.raise_signal(signal.SIGINT)  # a ctrl+c while the input is read
        yield "b"
        yield "c"

    with pytest.raises(KeyboardInterrupt) as raised, Resumable(state_path, quiet=True) as r:
        for item in r.iterate(keys(), key=str):
            ran.append(item)
    assert ran == []
    assert raised.value.__context__ is None  # not raised while another error propagated
    assert inspect(state_path).position == 2


def test_a_refused_key_function_leaves_a_new_job_as_it_was(state_path: Path) -> None:
    with pytest.raises(TypeError, match="takes a function"), Resumable(state_path) as r:
        r.iterate(range(3), key="id")  # type: ignore[call-overload]
    with Resumable(state_path) as r:  # still free to be positional
        assert list(r.iterate(range(3))) == [0, 1, 2]
