"""The key journal's files under hostile conditions, through the public API.

Bounded records (a damaged length field never makes the reader allocate what it claims),
the journals a damaged state file still names (kept when the job resumes from its
backup), generation numbers at their limit, and the job record that ties a journal to
its job. The files are real; those no save would write are built by hand after
docs/state-file.md (tests/jobs/documents.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from resumable import (
    NPolicy,
    Resumable,
    ResumableWarning,
    StateFileError,
    UsageError,
    inspect,
)
from resumable._store import progress_log

from jobs.documents import (
    JOB,
    JOB_ID,
    MAX_PAYLOAD,
    OTHER_JOB_ID,
    checksummed,
    document,
    files_in,
    frame,
    job_frame,
    key_frames,
    keyed,
)

V1_JOB = Path(__file__).resolve().parent / "fixtures" / "v1-keyed-journal"
MIB = 1 << 20


def run(
    path: Path, items: list[Any], stop_at: object = None, policy: NPolicy | None = None
) -> list[Any]:
    """A keyed run over `items` (each its own key); break before `stop_at`."""
    seen = []
    with Resumable(path, signals=(), policy=policy) as r:
        for item in r.iterate(items, key=lambda item: item):
            if item == stop_at:
                break
            seen.append(item)
    return seen


def journal_of(path: Path) -> dict[str, Any]:
    """The ``progress.journal`` object of the state file at `path`."""
    journal: dict[str, Any] = orjson.loads(path.read_bytes())["progress"]["journal"]
    return journal


def flip_a_bit(path: Path) -> bytes:
    """Damage the state file at `path` in its ``saved_at``; return the damaged bytes."""
    data = bytearray(path.read_bytes())
    data[data.index(b'"saved_at":"') + 13] ^= 1
    path.write_bytes(bytes(data))
    return bytes(data)


def open_job(path: Path) -> None:
    with Resumable(path, signals=()):
        pass


def refusal_and_peak_memory(path: Path) -> tuple[str, int]:
    """The StateFileError's message opening the job at `path`, and the peak of memory
    allocated through Python's allocators meanwhile (reading a file is, as bytes)."""
    tracemalloc.start()
    try:
        with pytest.raises(StateFileError) as caught:
            open_job(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(caught.value), peak


# -- bounded records (issue 21, item 6b) ---------------------------------------------------


@pytest.mark.parametrize("claimed", [2**32 - 1, MAX_PAYLOAD + 1])
def test_a_record_claiming_more_than_16_mib_is_damage_found_before_a_byte_of_it_is_read(
    state_path: Path, claimed: int
) -> None:
    """A flipped length field in a large committed journal (sparse here: no disk used)
    is refused at its header: no allocation of what it claims, nothing changed."""
    journal = state_path.with_name("job.state.keys-0")
    committed = 5 << 30
    with journal.open("wb") as file:
        file.write(job_frame(JOB_ID) + frame(b'["a"]', claimed=claimed))
        file.truncate(committed)
    state_path.write_bytes(checksummed(keyed(0, committed, 1)))
    before = files_in(state_path.parent)
    message, peak = refusal_and_peak_memory(state_path)
    assert f"damaged at byte {len(job_frame(JOB_ID))}: the record claims {claimed:,} bytes, " in (
        message
    )
    assert "more than the 16,777,216 a record holds" in message
    assert peak < MIB
    assert files_in(state_path.parent) == before


def test_a_record_claiming_more_than_the_committed_bytes_after_it_names_both_counts(
    state_path: Path,
) -> None:
    """A length field flipped to claim 1,000 bytes where the state file commits 9 after
    the header (the record's own payload): damage, with both figures in the message."""
    journal = state_path.with_name("job.state.keys-0")
    journal.write_bytes(job_frame(JOB_ID) + frame(b'["a","b"]', claimed=1_000))
    state_path.write_bytes(checksummed(keyed(0, journal.stat().st_size, 2)))
    before = files_in(state_path.parent)
    message, _ = refusal_and_peak_memory(state_path)
    assert (
        f"damaged at byte {len(job_frame(JOB_ID))}: the record claims 1,000 bytes, more than "
        "the 9 committed bytes after its header"
    ) in message
    assert files_in(state_path.parent) == before


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"job_id":"' + b"Z" * 32 + b'"}', "its job record holds no job id: a job id is 32"),
        (b'{"job_id":5}', "its job record holds no job id"),
        (
            b'{"job":"' + JOB_ID.encode() + b'"}',
            'its job record is not an object of one key, "job_id"',
        ),
        (b'{"job_id":"' + JOB_ID.encode() + b'"', "its job record is not valid JSON"),
    ],
    ids=["not hex", "not a str", "another key", "not JSON"],
)
def test_a_checksummed_job_record_that_holds_no_job_id_is_damage(
    state_path: Path, payload: bytes, problem: str
) -> None:
    """A job record whose CRC is right but whose content is not a job id (written by
    hand, by another tool): the journal is refused as damaged, naming why, and nothing
    changes."""
    journal = state_path.with_name("job.state.keys-0")
    journal.write_bytes(frame(payload, JOB) + b"".join(key_frames([["a"]])))
    state_path.write_bytes(checksummed(keyed(0, journal.stat().st_size, 1)))
    before = files_in(state_path.parent)
    with (
        pytest.raises(StateFileError, match=r"job\.state\.keys-0") as raised,
        Resumable(state_path),
    ):
        pass
    assert problem in str(raised.value)
    assert files_in(state_path.parent) == before


def test_a_long_record_with_a_bad_crc_is_refused_without_being_held_in_memory(
    state_path: Path,
) -> None:
    """A length field that says 15 MiB, within the bound, over a sparse stretch of zeros:
    the CRC is checked a piece at a time, so the reader never holds the 15 MiB."""
    journal = state_path.with_name("job.state.keys-0")
    committed = 64 * MIB
    with journal.open("wb") as file:
        file.write(job_frame(JOB_ID) + frame(b'["a"]', claimed=15 * MIB))
        file.truncate(committed)
    state_path.write_bytes(checksummed(keyed(0, committed, 1)))
    before = files_in(state_path.parent)
    message, peak = refusal_and_peak_memory(state_path)
    assert "its CRC-32 is" in message
    assert peak < 3 * MIB
    assert files_in(state_path.parent) == before


def test_a_key_of_almost_16_mib_round_trips_and_a_longer_one_is_refused_before_writing(
    state_path: Path,
) -> None:
    """The largest record holds a key of 16 MiB - 4 characters (with its quotes and
    brackets); a longer key is a UsageError at the save, and the journal is unchanged."""
    largest = "k" * (MAX_PAYLOAD - 4)
    run(state_path, ["a", largest])
    with Resumable(state_path, signals=()) as r:
        assert r.position == 2
        assert list(r.iterate(["a", largest, "b"], key=str)) == ["b"]
    before = files_in(state_path.parent)
    with pytest.raises(UsageError, match="too long to record"):
        run(state_path, [largest + "k"])
    assert files_in(state_path.parent) == before


# -- what a damaged state file names (issue 21, item 7) ------------------------------------


def test_a_run_resumed_from_the_backup_leaves_every_journal_byte_the_damaged_file_commits(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged file commits more of the same generation than the backup: the resumed
    run neither cuts nor deletes it, later runs neither, and the file set aside as
    .corrupt-<time> can be repaired by hand and resumed with all its keys."""
    monkeypatch.setattr(progress_log, "MAX_RECORDS", 0)  # the seam: each save rewrites the
    # state file, so that its backup is the save before the last
    keys = [f"k{i}" for i in range(20)]
    run(state_path, keys, stop_at="k10", policy=NPolicy(4))
    main, backup = journal_of(state_path), journal_of(state_path.with_name("job.state.bak"))
    assert main["generation"] == backup["generation"]
    assert main["length"] > backup["length"]
    journals = {k: v for k, v in files_in(state_path.parent).items() if ".keys-" in k}
    damaged = flip_a_bit(state_path)

    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        assert run(state_path, keys, stop_at="k15") == keys[8:15]
    assert run(state_path, [*keys, "new"]) == [*keys[15:], "new"]  # a normal run after it

    after = files_in(state_path.parent)
    assert {name: after[name] for name in journals} == journals  # byte for byte
    (corrupt,) = state_path.parent.glob("job.state.corrupt-*")
    assert corrupt.read_bytes() == damaged
    # Repair by hand: undo the flip, put it back in place.
    state_path.with_name("job.state.bak").unlink()
    state_path.write_bytes(flip_a_bit(corrupt))
    with Resumable(state_path, signals=()) as r:
        assert r.position == 10  # k0 to k9, what the damaged file committed
        assert list(r.iterate(keys, key=str)) == keys[10:]


def _folded_job(directory: Path, job_id: str | None) -> tuple[bytes, bytes]:
    """A keyed job whose last save folded generation 0 into generation 1: ``job.state``
    names generation 1 (8 keys), the backup generation 0 (4 keys). Returns the journals."""
    batches = [["k0", "k1"], ["k2", "k3"], ["k4", "k5"], ["k6", "k7"]]
    head = [] if job_id is None else [job_frame(job_id)]
    zero = b"".join([*head, *key_frames(batches)])
    one = b"".join([*head, *key_frames([[key for batch in batches for key in batch]])])
    directory.joinpath("job.state.keys-0").write_bytes(zero)
    directory.joinpath("job.state.keys-1").write_bytes(one)
    backup_length = len(b"".join([*head, *key_frames(batches[:2])]))
    directory.joinpath("job.state.bak").write_bytes(
        checksummed(keyed(0, backup_length, 4, job_id=job_id))
    )
    directory.joinpath("job.state").write_bytes(checksummed(keyed(1, len(one), 8, job_id=job_id)))
    return zero, one


@pytest.mark.parametrize("job_id", [None, JOB_ID], ids=["format-1", "format-2"])
def test_after_a_fold_a_run_resumed_from_the_backup_keeps_the_generation_the_damaged_file_names(
    state_path: Path, job_id: str | None
) -> None:
    """job.state names generation 1, its backup generation 0: opening the job from the
    backup deletes neither (the next save writes generation 2), and the damaged file,
    repaired, resumes with its 8 keys."""
    zero, one = _folded_job(state_path.parent, job_id)
    damaged = flip_a_bit(state_path)
    keys = [f"k{i}" for i in range(12)]
    with pytest.warns(ResumableWarning), Resumable(state_path, signals=()) as r:
        assert r.position == 4
        # Opened, nothing saved yet: a crash here must leave everything the file needs.
        assert state_path.with_name("job.state.keys-1").read_bytes() == one
        assert list(r.iterate(keys, key=str)) == keys[4:]
    assert journal_of(state_path)["generation"] == 2
    assert run(state_path, [*keys, "new"]) == ["new"]  # a later run deletes none either
    assert state_path.with_name("job.state.keys-0").read_bytes() == zero
    assert state_path.with_name("job.state.keys-1").read_bytes() == one
    (corrupt,) = state_path.parent.glob("job.state.corrupt-*")
    assert corrupt.read_bytes() == damaged
    os.replace(corrupt, state_path)
    flip_a_bit(state_path)
    state_path.with_name("job.state.bak").unlink()
    with Resumable(state_path, signals=()) as r:
        assert r.position == 8
        assert list(r.iterate(keys, key=str)) == keys[8:]


# -- counters at their limits (issue 21, item 9) -------------------------------------------


def test_a_counter_the_format_cannot_hold_is_named_in_the_error_not_blamed_on_r_state(
    state_path: Path,
) -> None:
    """``runs`` at 2**64 - 1 cannot count one more run: the error names ``runs`` (never
    r.state, which is fine), and the state file is left as it was."""
    progress = {"kind": "position", "position": 0, "finished": False}
    state_path.write_bytes(checksummed(document(progress, runs=2**64 - 1, state={"n": 1})))
    before = state_path.read_bytes()
    with pytest.raises(StateFileError) as caught, Resumable(state_path, signals=()) as r:
        for _ in r.iterate(range(3)):
            pass
    assert "runs" in str(caught.value)
    assert "r.state" not in str(caught.value)
    context = caught.value.__context__
    while context is not None:  # raised once: the exit does not try the save again
        assert not isinstance(context, StateFileError)
        context = context.__context__
    assert state_path.read_bytes() == before


def test_a_stray_journal_name_beyond_the_largest_generation_is_passed_over_with_a_warning(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``job.state.keys-18446744073709551615`` is no journal: a new keyed job starts at
    generation 0, says it ignored the file, and leaves it alone."""
    stray = state_path.with_name("job.state.keys-18446744073709551615")
    stray.write_bytes(b"not mine")
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert run(state_path, ["a", "b"]) == ["a", "b"]
        assert run(state_path, ["a", "b", "c"]) == ["c"]
    assert journal_of(state_path)["generation"] == 0
    assert any(stray.name in record.getMessage() for record in caplog.records)
    assert sorted(p.name for p in state_path.parent.glob("job.state.keys-*")) == [
        "job.state.keys-0",
        stray.name,
    ]
    assert stray.read_bytes() == b"not mine"


def test_a_stray_file_at_the_largest_generation_stops_a_new_keyed_job_naming_it(
    state_path: Path,
) -> None:
    """No generation is left above ``keys-4294967295``: a clear StateFileError, and no
    journal written; with the file moved away, the job becomes keyed."""
    stray = state_path.with_name("job.state.keys-4294967295")
    stray.write_bytes(b"")
    with pytest.raises(StateFileError, match=r"job\.state\.keys-4294967295 has the largest"):
        run(state_path, ["a"])
    assert [p.name for p in state_path.parent.glob("job.state.keys-*")] == [stray.name]
    stray.unlink()
    assert run(state_path, ["a"]) == ["a"]


@pytest.mark.parametrize("field", ["generation", "first_generation"])
def test_a_state_file_naming_a_generation_beyond_the_largest_is_refused_unchanged(
    state_path: Path, field: str
) -> None:
    data = keyed(0, 0, 0)
    data["progress"]["journal"][field] = 2**64 - 1
    state_path.write_bytes(checksummed(data))
    before = files_in(state_path.parent)
    with pytest.raises(StateFileError, match=f"{field} must be at most 4294967295"):
        open_job(state_path)
    assert files_in(state_path.parent) == before


# -- the journal tied to its job (issue 21, item 11) ---------------------------------------


def test_a_journal_starts_with_the_job_record_of_the_job_id_its_state_file_holds(
    state_path: Path,
) -> None:
    """As documented: magic 0x4A, the length, the CRC-32, then {"job_id": ...}."""
    run(state_path, ["a", 1])
    job_id = journal_of(state_path)["job_id"]
    assert len(job_id) == 32
    assert set(job_id) <= set("0123456789abcdef")
    assert orjson.loads(state_path.read_bytes())["format_version"] == 2
    journal = state_path.with_name("job.state.keys-0").read_bytes()
    assert journal == job_frame(job_id) + frame(b'["a",1]')
    other = state_path.with_name("other.state")
    run(other, ["a", 1])
    assert journal_of(other)["job_id"] != job_id


def test_a_journal_copied_from_another_job_is_refused_naming_both_files(tmp_path: Path) -> None:
    """Two jobs whose records line up byte for byte but for their keys: one's journal
    copied over the other's is not taken for its keys."""
    mine, theirs = tmp_path / "mine" / "job.state", tmp_path / "theirs" / "job.state"
    for path, prefix in ((mine, "m"), (theirs, "t")):
        path.parent.mkdir()
        run(path, [f"{prefix}{i}" for i in range(6)], stop_at=f"{prefix}4", policy=NPolicy(2))
    journal = mine.with_name("job.state.keys-0")
    assert journal.stat().st_size == theirs.with_name("job.state.keys-0").stat().st_size
    shutil.copyfile(theirs.with_name("job.state.keys-0"), journal)
    before = files_in(mine.parent)
    with pytest.raises(StateFileError) as caught:
        open_job(mine)
    message = str(caught.value)
    assert f"the key journal {journal} is not the journal of the state file {mine}" in message
    assert journal_of(theirs)["job_id"] in message
    assert journal_of(mine)["job_id"] in message
    assert files_in(mine.parent) == before


@pytest.mark.parametrize(
    ("state_job", "journal_job"),
    [(None, JOB_ID), (JOB_ID, None), (JOB_ID, OTHER_JOB_ID)],
    ids=["untied-state", "untied-journal", "other-job"],
)
def test_a_journal_whose_job_record_does_not_match_its_state_file_is_refused(
    state_path: Path, state_job: str | None, journal_job: str | None
) -> None:
    head = b"" if journal_job is None else job_frame(journal_job)
    data = head + b"".join(key_frames([["a"]]))
    state_path.with_name("job.state.keys-0").write_bytes(data)
    state_path.write_bytes(checksummed(keyed(0, len(data), 1, job_id=state_job)))
    before = files_in(state_path.parent)
    with pytest.raises(StateFileError, match="is not the journal of the state file"):
        open_job(state_path)
    assert files_in(state_path.parent) == before


def test_a_format_1_keyed_job_loads_and_is_tied_to_its_journal_at_its_next_save(
    tmp_path: Path,
) -> None:
    """tests/fixtures/v1-keyed-journal, saved by resumable-loop 0.1.0 (no job id, no job
    record), resumes with its keys and failure; its next save writes a new generation
    that starts with the job record, and the format-1 file, now the backup, still loads
    when the new state file is damaged."""
    shutil.copytree(V1_JOB, tmp_path / "job")
    state_path = tmp_path / "job" / "job.state"
    assert inspect(state_path).format_version == 1
    assert inspect(state_path).position == 11
    keys: list[str | int] = [f"https://example.org/{i}" for i in range(10)]
    keys += [2**70, "\udcff-not-utf8", 7, 8, "new"]
    with Resumable(state_path, signals=()) as r:
        assert r.position == 11
        assert [failure.key for failure in r.failed] == ["https://example.org/4"]
        assert r.state == {"note": "written by resumable-loop 0.1.0, format version 1"}
        assert list(r.iterate(keys, key=lambda k: k)) == ["https://example.org/4", 7, 8, "new"]
    journal = journal_of(state_path)
    assert journal["generation"] == 1
    tied = state_path.with_name("job.state.keys-1").read_bytes()
    assert tied.startswith(job_frame(journal["job_id"]))
    assert inspect(state_path).format_version == 2
    with Resumable(state_path, signals=()) as r:
        assert r.position == 15
    assert state_path.with_name("job.state.bak").read_bytes() == (V1_JOB / "job.state").read_bytes()
    flip_a_bit(state_path)
    with pytest.warns(ResumableWarning), Resumable(state_path, signals=()) as r:
        assert r.position == 11
