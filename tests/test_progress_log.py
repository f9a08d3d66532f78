"""Progress saves appended to the progress log ``job.state.log`` (docs/state-file.md):
what a reader makes of the log as a crash leaves it, torn, damaged or stale.

A crash is copied, not caused: in the body of an item the job's files are exactly what a
kill -9 there would leave (every save before it returned), so the tests copy them and read
the copy. The strace tests (test_progress_log_strace.py) kill the process for real.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

import resumable
from resumable import NPolicy, Resumable, ResumableWarning, StateFileError, inspect
from resumable._store import document, progress_log

from jobs.documents import LOG_HEADER, log_records

MAGIC = 0x53
SAVES = 5  # the crashed copy: positions 1 to 5 saved, the first compacted


def crashed_copy(state: Path, into: Path) -> Path:
    """A copy of the job's folder as a kill -9 now would leave it; its state file."""
    shutil.copytree(state.parent, into)
    (into / f"{state.name}.lock").unlink()
    return into / state.name


def crash_after_saves(directory: Path, saves: int = SAVES) -> Path:
    """Run a job over range(10), saving after every item, and copy its files in the body
    of item `saves`: the state file holds position 1, the log positions 2 to `saves`."""
    state = directory / "job" / "job.state"
    state.parent.mkdir(parents=True)
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(10)):
            if item == saves:
                return crashed_copy(state, directory / "crash")
    raise AssertionError("the loop ended early")


def log_of(state: Path) -> Path:
    return state.with_name(state.name + ".log")


def record(payload: dict[str, object]) -> bytes:
    """A record whose CRC is right, holding `payload`."""
    body = orjson.dumps(payload)
    prefix = struct.pack("<BI", MAGIC, len(body))
    return prefix + struct.pack("<I", zlib.crc32(body, zlib.crc32(prefix))) + body


def position_of(state: Path) -> int:
    return inspect(state).position


# -- the round trip -------------------------------------------------------------------------


def test_a_progress_save_appends_a_record_and_leaves_the_state_file_as_it_was(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job.state"
    seen: list[bytes] = []
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(6)):
            if item >= 1:
                seen.append(state.read_bytes())
    assert len(set(seen)) == 1  # saves 2 to 6 appended; the state file is the first save's
    assert orjson.loads(seen[0])["progress"]["position"] == 1
    # The end of the run compacts: one state file, no log.
    assert not log_of(state).exists()
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.finished) == (6, True)


@pytest.mark.parametrize("leaving", ["an error", "break"])
def test_a_run_that_ends_by_an_error_leaves_its_records_and_one_by_break_compacts_them(
    tmp_path: Path, leaving: str
) -> None:
    """Only a run that ends by itself (no error, no signal) compacts at its exit: one left
    by an error, with nothing unsaved, keeps the log, and the next run's first save
    compacts (docs/state-file.md)."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(RuntimeError) if leaving == "an error" else nullcontext(),
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(range(10)):
            if item == 4:  # saves 2 to 4 appended; item 4 not done
                before = state.read_bytes()
                if leaving == "break":
                    break
                raise RuntimeError("the body failed")
    if leaving == "an error":
        assert state.read_bytes() == before
        assert len(log_records(log_of(state).read_bytes())) == 3
    else:
        assert orjson.loads(state.read_bytes())["progress"]["position"] == 4
        assert not log_of(state).exists()
    assert inspect(state).position == 4


def test_a_crash_resumes_from_the_last_record_and_the_next_save_compacts(
    tmp_path: Path,
) -> None:
    copy = crash_after_saves(tmp_path)
    assert len(log_records(log_of(copy).read_bytes())) == SAVES - 1
    assert orjson.loads(copy.read_bytes())["progress"]["position"] == 1
    assert position_of(copy) == SAVES
    ran = []
    with Resumable(copy, policy=NPolicy(1)) as r:
        assert r.position == SAVES
        for item in r.iterate(range(10)):
            ran.append(item)
            if item == SAVES + 1:  # the first save of this run compacted: the log is stale
                assert orjson.loads(copy.read_bytes())["progress"]["position"] == SAVES + 1
                assert position_of(copy) == SAVES + 1
            if item == SAVES + 2:  # the next save cut the stale log, then appended
                assert len(log_records(log_of(copy).read_bytes())) == 1
    assert ran == list(range(SAVES, 10))
    assert (inspect(copy).position, inspect(copy).finished) == (10, True)


def test_r_state_changed_makes_every_save_a_compaction(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(5)):
            r.state["last"] = item
            if item >= 2:
                assert orjson.loads(state.read_bytes())["state"] == {"last": item - 1}
                assert not log_of(state).exists()


def test_the_log_past_its_bound_is_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_log, "MAX_RECORDS", 3)  # the seam: 4,096 records
    state = tmp_path / "job.state"
    written: list[int] = []
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(9)):
            if item >= 1:
                written.append(orjson.loads(state.read_bytes())["progress"]["position"])
            if item == 8:
                assert position_of(crashed_copy(state, tmp_path / "crash")) == 8
    # Saves 1 (compaction), 2-4 (records), 5 (compaction), 6-8 (records).
    assert written == [1, 1, 1, 1, 5, 5, 5, 5]


def test_a_log_that_would_pass_4_mib_is_compacted_first(tmp_path: Path) -> None:
    """The log's byte bound, reached for real: a keyed job of 1,000-character keys saved
    every 60 items makes records of some 60 KB, so after some 69 of them the next would
    take the log past 4 MiB: that save compacts instead. The log never holds more."""
    state = tmp_path / "job.state"
    log = log_of(state)
    keys = [f"{number:06d}" + "x" * 994 for number in range(6_000)]
    sizes: list[int] = []
    compacted_at: list[int] = []
    with Resumable(state, policy=NPolicy(60)) as r:
        for number, _ in enumerate(r.iterate(keys, key=str)):
            if number % 60 == 1 and number > 60:  # the save of the items before is in
                sizes.append(log.stat().st_size if log.exists() else 0)
                if len(sizes) > 1 and sizes[-1] < sizes[-2]:
                    compacted_at.append(number)
    assert 0 < max(sizes) <= 4 << 20
    assert max(sizes) > (4 << 20) - 70_000  # filled to within a record of the bound
    assert len(compacted_at) == 1
    assert inspect(state).position == 6_000


def test_a_keyed_job_s_saves_append_too(tmp_path: Path) -> None:
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate([f"k{n}" for n in range(8)], key=str):
            if item == "k5":
                copy = crashed_copy(state, tmp_path / "crash")
    assert len(log_records(log_of(copy).read_bytes())) == 4
    assert position_of(copy) == 5
    with Resumable(copy) as r:
        assert list(r.iterate([f"k{n}" for n in range(8)], key=str)) == [
            "k5",
            "k6",
            "k7",
        ]


# -- a torn tail, bit flips -----------------------------------------------------------------


def test_a_log_torn_at_every_byte_of_its_last_record_gives_the_record_before(
    tmp_path: Path,
) -> None:
    copy = crash_after_saves(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    start, end = log_records(data)[-1]
    for cut in range(start, end):
        log.write_bytes(data[:cut])
        assert position_of(copy) == SAVES - 1, f"log cut at byte {cut} of {end}"
    log.write_bytes(data)
    assert position_of(copy) == SAVES


def check_bit_flips(tmp_path: Path, which: int, every_bit: bool) -> None:
    """Flip bits of record `which` of a crashed job's log one at a time. The last record:
    each read gives the position of the records before it (a torn tail looks the same).
    One with whole records after it: no crash tears that, so each read is refused as
    damage (this job's first save kept no backup to fall back on), the log unchanged."""
    copy = crash_after_saves(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    spans = log_records(data)
    start, end = spans[which]
    before = 1 + spans.index((start, end))  # the state file's position, then one per record
    for bit in range(start * 8, end * 8):
        if not every_bit and bit // 8 >= start + LOG_HEADER.size and bit % 8 != (bit // 8) % 8:
            continue  # the header's every bit, then one bit of each byte, in turn
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        log.write_bytes(damaged)
        if end == len(data):
            assert position_of(copy) == before, f"bit {bit % 8} of byte {bit // 8} flipped"
            continue
        with pytest.raises(StateFileError, match=r"job\.state\.log is damaged"):
            position_of(copy)
        assert log.read_bytes() == damaged


@pytest.mark.parametrize("which", [-1, 1], ids=["last record", "second record"])
def test_a_bit_flipped_in_a_record_is_detected_and_the_records_before_stand(
    tmp_path: Path, which: int
) -> None:
    check_bit_flips(tmp_path, which, every_bit=False)


@pytest.mark.slow
@pytest.mark.parametrize("which", [-1, 1], ids=["last record", "second record"])
def test_every_bit_flipped_in_a_record_is_detected_and_the_records_before_stand(
    tmp_path: Path, which: int
) -> None:
    check_bit_flips(tmp_path, which, every_bit=True)


# -- records that check but do not follow, a stale log ---------------------------------------


def test_a_record_that_checks_but_does_not_follow_is_damage_naming_the_log(
    tmp_path: Path,
) -> None:
    copy = crash_after_saves(tmp_path)
    log = log_of(copy)
    last = orjson.loads(log.read_bytes()[log_records(log.read_bytes())[-1][0] + LOG_HEADER.size :])
    with log.open("ab") as file:
        file.write(record({**last, "seq": last["seq"] + 2}))
    # A new job's first save keeps no backup: nothing stands in for the damaged job.
    with pytest.raises(StateFileError, match=r"job\.state\.log is damaged: a record at byte"):
        inspect(copy)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seq": "6"}, "a record checks but holds no save's progress"),
        ({"seq": 6.0}, "a record checks but holds no save's progress"),
        ({"base": 5}, "a record checks but holds no save's progress"),
        ({"progress": [6]}, "a record checks but holds no save's progress"),
        ({"saved_at": 6}, "a record checks but holds no save's progress"),
        ({"saved_at": "yesterday"}, "a saved_at is no ISO 8601 time"),
        ({"failed": "none"}, "a record's failed is no list of entries"),
    ],
    ids=[
        "seq a str",
        "seq a float",
        "base no str",
        "progress no object",
        "saved_at no str",
        "saved_at no time",
        "failed no list",
    ],
)
def test_a_record_that_checks_but_holds_a_malformed_field_is_damage_naming_it(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    """The next record, its CRC right (another tool's, or a bug's) and one field of the
    wrong type: damage naming the log and what is wrong, never taken as a save."""
    copy = crash_after_saves(tmp_path)
    log = log_of(copy)
    last = orjson.loads(log.read_bytes()[log_records(log.read_bytes())[-1][0] + LOG_HEADER.size :])
    with log.open("ab") as file:
        file.write(record({**last, "seq": last["seq"] + 1, **change}))
    with pytest.raises(StateFileError, match=r"job\.state\.log is damaged") as refused:
        inspect(copy)
    assert problem in str(refused.value)


def test_a_damaged_log_sends_the_job_to_the_backup_and_is_kept_aside(tmp_path: Path) -> None:
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1)) as r:  # run 1: ends compacted at position 3
        for item in r.iterate(range(10)):
            if item == 3:
                break
    with Resumable(state, policy=NPolicy(1)) as r:  # run 2: compacts, the backup is run 1's
        for item in r.iterate(range(10)):
            if item == 6:
                copy = crashed_copy(state, tmp_path / "crash")
                break
    log = log_of(copy)
    damaged = log.read_bytes() + record({"base": "0" * 16, "seq": 9, "progress": {}})
    log.write_bytes(damaged)
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        assert inspect(copy).position == 3
    with pytest.warns(ResumableWarning), Resumable(copy) as r:
        assert r.position == 3
        r.save()
    corrupt = [path for path in copy.parent.glob("job.state.corrupt-*") if path.suffix != ".log"]
    assert len(corrupt) == 1
    assert log_of(corrupt[0]).read_bytes() == damaged  # kept byte for byte beside it


def test_a_stale_log_from_before_a_compaction_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(10)):
            if item == SAVES:
                stale = log_of(state).read_bytes()
    log_of(state).write_bytes(stale)  # the log as it was before the exit compacted
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.finished) == (10, True)


def test_reset_moves_the_log_aside_with_the_state_file(tmp_path: Path) -> None:
    copy = crash_after_saves(tmp_path)
    aside = resumable.reset(copy)
    assert isinstance(aside, Path)
    assert not log_of(copy).exists()
    assert position_of(aside) == SAVES


def test_a_state_that_would_come_back_changed_is_refused_though_it_writes_the_same(
    tmp_path: Path,
) -> None:
    """A tuple writes as the list it replaced, NaN as the None: the bytes are those of the
    last rewrite, so a save of progress alone does not walk r.state again (the walk is
    most of such a save's Python) and appends progress only; the next rewrite walks it
    and refuses it, here the exit's. The state file never holds the changed value."""
    state = tmp_path / "job.state"
    for changed in ((1, 2), float("nan")):
        state.with_name("job.state.bak").unlink(missing_ok=True)
        state.unlink(missing_ok=True)
        with pytest.raises(resumable.StateNotSerializableError), Resumable(state) as r:
            r.state["value"] = [1, 2] if isinstance(changed, tuple) else None
            r.save()
            r.save()  # appended: r.state as the first save wrote it
            r.state["value"] = changed
            r.save()  # progress alone: the state file holds r.state as it wrote it
            assert len(log_records(log_of(state).read_bytes())) == 2
        assert orjson.loads(state.read_bytes())["state"]["value"] in ([1, 2], None)
        assert inspect(state).state == {"value": [1, 2] if isinstance(changed, tuple) else None}


def test_saves_of_progress_with_r_state_unchanged_do_not_walk_it_but_its_rewrites_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks: list[str] = []
    real = document.check_state

    def counted(state: dict[str, object]) -> None:
        walks.append(str(state))
        real(state)

    monkeypatch.setattr(document, "check_state", counted)
    with Resumable(tmp_path / "job.state", policy=NPolicy(1)) as r:
        r.state["note"] = "unchanged"
        for item in r.iterate(range(5)):
            if item == 1:
                assert walks == ["{'note': 'unchanged'}"]  # the first save: a rewrite
            if item == 4:
                assert len(walks) == 1  # saves 2 to 4: records of progress alone
                assert len(log_records(log_of(tmp_path / "job.state").read_bytes())) == 3
    # The end of the input rewrites the state file: r.state writes as before, but is
    # walked, so what a record skipped is caught there.
    assert len(walks) == 2


def test_a_record_saved_under_frozen_time_holds_the_frozen_time(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    with freeze_time("2026-03-04 05:06:07.000089", tick=False), Resumable(state) as r:
        r.save()
        r.save()  # a record
        data = log_of(state).read_bytes()
        start, end = log_records(data)[-1]
        payload = orjson.loads(data[start + LOG_HEADER.size : end])
        assert payload["saved_at"] == "2026-03-04T05:06:07.000089+00:00"
        assert r.save_log[-1].saved_at == datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=timezone.utc)
        assert inspect(crashed_copy(state, tmp_path / "crash")).saved_at == (
            datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=timezone.utc)
        )


def test_restart_takes_another_name_when_a_crash_left_a_log_under_the_first(
    tmp_path: Path,
) -> None:
    """A move aside cut short by a crash leaves the earlier job's log under the aside name
    (the log is linked there first): a restart in the same second takes the next name."""
    copy = crash_after_saves(tmp_path)
    with freeze_time("2026-01-02 03:04:05", tick=False):
        leftover = copy.with_name(f"{copy.name}.reset-20260102T030405.log")
        leftover.write_bytes(b"a log a crash left")
        with Resumable(copy, restart=True) as r:
            assert r.position == 0
            r.save()  # the first save sets the earlier job aside
    assert leftover.read_bytes() == b"a log a crash left"
    aside = copy.with_name(f"{copy.name}.reset-20260102T030405-2")
    assert position_of(aside) == SAVES


def test_a_keyed_rewrite_after_r_state_changed_walks_r_state_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed job writes journals before a rewrite, and refuses an unsaveable r.state
    before them: the check that refuses it is the one the rewrite counts, not a second."""
    walks: list[str] = []
    real = document.check_state

    def counted(state: dict[str, object]) -> None:
        walks.append(str(state))
        real(state)

    with Resumable(tmp_path / "job.state", policy=NPolicy(1_000)) as r:
        for item in r.iterate([f"key-{n}" for n in range(4)], key=str):
            r.state["item"] = item
            if item == "key-1":
                r.save()  # the run's first save
            if item == "key-3":
                monkeypatch.setattr(document, "check_state", counted)
                r.save()  # r.state changed since: a rewrite, keys into the journal first
                monkeypatch.undo()
    assert walks == ["{'item': 'key-3'}"]
    assert inspect(tmp_path / "job.state").state == {"item": "key-3"}
