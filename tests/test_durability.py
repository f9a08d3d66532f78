"""Durability behaviours checked a second way, without strace: the directory flushed after
a save and after a new journal file, the journal's checksum on every byte of a record,
the check gap that at most doubles, and the journal generation a backup names.

The strace tests (test_faults_strace.py, test_journal.py) see the same system calls from
outside; these tests run wherever the suite runs, so dropping one of these behaviours
fails a test even on a machine without strace.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

from resumable import (
    NPolicy,
    Policy,
    Resumable,
    ResumableWarning,
    SinceLastSave,
    StateFileError,
    inspect,
)
from resumable._store import journal_files, progress_log

CHECK_CAP = 1024  # the loop checks at least every this many items (docs/policies.md)


# -- fsync, seen by a spy -------------------------------------------------------------------


@pytest.fixture
def fsync_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every os.fsync and os.fdatasync the library makes, as (kind, name), kind "dir" or
    "file" for an fsync, "data" for an fdatasync.

    A spy, not a mock: it records what it is handed and then calls the real os.fsync, so
    the data still reaches the disk. The library looks os.fsync up at call time.
    """
    calls: list[tuple[str, str]] = []
    real_fsync: Callable[[int], None] = os.fsync

    def spy(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append((kind, Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def data_spy(fd: int) -> None:
        calls.append(("data", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    if hasattr(os, "fdatasync"):
        real_fdatasync: Callable[[int], None] = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", data_spy)
    return calls


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="names descriptors through /proc (Linux)"
)


@needs_proc
def test_a_save_flushes_its_new_file_and_then_the_directory(
    state_path: Path, fsync_log: list[tuple[str, str]]
) -> None:
    """The new state file's data, then the directory that the rename changed: without the
    second, a power cut can undo the rename of a save that returned."""
    with Resumable(state_path, policy=NPolicy(10**9)) as r:
        for item in r.iterate(range(5)):
            if item == 3:
                fsync_log.clear()
                r.save()
                saved = list(fsync_log)
                break
    assert [kind for kind, _ in saved] == ["file", "dir"], saved
    assert saved[0][1].startswith(f".{state_path.name}.")  # the temp file, before the rename
    assert saved[0][1].endswith(".tmp")
    assert saved[1][1] == state_path.parent.name


@needs_proc
def test_a_new_journal_file_has_its_directory_flushed_after_its_first_record_only(
    state_path: Path, fsync_log: list[tuple[str, str]]
) -> None:
    """A keyed job's first save creates its key journal: the record, then the directory
    entry of the new file, then the state file and its directory. The saves of progress
    after it carry their keys in the progress log, whose directory entry is flushed once,
    when the run creates it, and leave the journal alone. A later rewrite (r.state
    changed) appends to the same journal, with no directory flush of its own."""
    journal = f"{state_path.name}.keys-0"
    log = f"{state_path.name}.log"
    temp = f".{state_path.name}."
    directory = state_path.parent.name
    saves: list[list[tuple[str, str]]] = []
    with Resumable(state_path, policy=NPolicy(10**9)) as r:
        for item in r.iterate(["a", "b", "c", "d", "e"], key=str):
            if item == "e":
                r.state["changed"] = True
            if item in ("b", "c", "d", "e"):
                fsync_log.clear()
                r.save()
                saves.append(
                    [
                        ("temp", kind) if name.startswith(temp) else (name, kind)
                        for kind, name in fsync_log
                    ]
                )
    assert saves[0] == [(journal, "file"), (directory, "dir"), ("temp", "file"), (directory, "dir")]
    assert saves[1] == [(directory, "dir"), (log, "data")]
    assert saves[2] == [(log, "data")]
    assert saves[3] == [(journal, "file"), ("temp", "file"), (directory, "dir")]


# -- the journal's checksum, on every byte of a record -----------------------------------


def keyed_run(path: Path, items: list[str], stop_at: str | None = None) -> list[str]:
    """A keyed run over `items` that breaks before the body of `stop_at`; what it ran."""
    ran: list[str] = []
    with Resumable(path, policy=NPolicy(10**9)) as r:
        for item in r.iterate(items, key=str):
            if item == stop_at:
                break
            ran.append(item)
    return ran


def test_a_flipped_bit_in_any_byte_of_a_journal_record_stops_the_next_run(
    state_path: Path,
) -> None:
    """The job's committed records (its job record and one of keys), damaged at each of
    their bytes in turn (a different bit each time): the next run refuses with
    StateFileError naming the journal, changes neither file, and runs nothing. With the
    byte restored it resumes."""
    items = ["alpha", "beta", "gamma", "delta"]
    assert keyed_run(state_path, items, stop_at="gamma") == ["alpha", "beta"]
    journal = state_path.with_name(f"{state_path.name}.keys-0")
    record = journal.read_bytes()
    assert orjson.loads(state_path.read_bytes())["progress"]["journal"]["length"] == len(record)
    state = state_path.read_bytes()
    for position in range(len(record)):
        damaged = bytearray(record)
        damaged[position] ^= 1 << position % 8
        journal.write_bytes(damaged)
        with pytest.raises(StateFileError, match=r"damaged at byte \d+") as refused:
            keyed_run(state_path, items)
        assert str(journal) in str(refused.value)
        assert journal.read_bytes() == damaged, position
        assert state_path.read_bytes() == state, position
    journal.write_bytes(record)
    assert keyed_run(state_path, items) == ["gamma", "delta"]


# -- the check gap grows at most twofold ------------------------------------------------


class AskedAt(Policy):
    """Never saves, always asks for the longest gap, and records where it was asked."""

    def __init__(self) -> None:
        self.positions: list[int] = []

    def should_save(self, since: SinceLastSave) -> bool:
        self.positions.append(since.items)  # no save ever: items since the start
        return False

    def items_until_check(self, since: SinceLastSave) -> int:
        return 10**9


def test_under_a_frozen_clock_the_gap_between_checks_at_most_doubles(state_path: Path) -> None:
    """A policy that asks for a billion items under a clock that measured no time still
    gets a check after 1, then 2, 4, ... items, up to the 1024-item cap: a wrong guess
    can never jump straight to the longest gap."""
    policy = AskedAt()
    with freeze_time("2026-01-01", tick=False), Resumable(state_path, policy=policy) as r:
        for _ in r.iterate(range(10_000)):
            pass
    gaps = [b - a for a, b in itertools.pairwise([0, *policy.positions])]
    doubling = [2**n for n in range(CHECK_CAP.bit_length())]  # 1, 2, 4, ..., 1024
    assert gaps[: len(doubling)] == doubling
    assert set(gaps[len(doubling) :]) == {CHECK_CAP}


# -- the journal generation the backup names --------------------------------------------


def committed_generation(path: Path) -> int:
    generation: int = orjson.loads(path.read_bytes())["progress"]["journal"]["generation"]
    return generation


def test_the_journal_generation_the_backup_names_is_kept_so_the_backup_resumes(
    state_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A save folds the journal into a new generation, so the state file names the new
    one and its backup the old one. A later run deletes retired generations, but not the
    one the backup names: when the state file is then damaged, the backup resumes, with
    exactly its keys."""
    monkeypatch.setattr(progress_log, "MAX_RECORDS", 0)  # the seam: each save rewrites the
    # state file, so that its backup is the save before the last
    monkeypatch.setattr(
        journal_files, "FOLD_MIN_RECORDS", 3
    )  # the seam: fold past 3 records, not 1,000
    items = [f"k{n}" for n in range(40)]
    ran: list[str] = []
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(items, key=str):
            # Each item's body sees the save made after the item before it: stop right
            # after a save that folded (the second fold: an older generation exists).
            if state_path.exists() and committed_generation(state_path) == 2:
                break
            ran.append(item)
    backup = state_path.with_name(f"{state_path.name}.bak")
    assert committed_generation(backup) == 1
    with Resumable(state_path):  # opens the job, which deletes generation 0, and saves nothing
        pass
    assert sorted(p.name for p in state_path.parent.glob("job.state.keys-*")) == [
        "job.state.keys-1",
        "job.state.keys-2",
    ]
    in_backup = inspect(backup).position
    assert in_backup == len(ran) - 1
    state_path.write_bytes(b"damaged")
    with (
        pytest.warns(ResumableWarning, match="backup"),
        caplog.at_level(logging.WARNING, logger="resumable"),
    ):
        rerun = keyed_run(state_path, items)
    assert rerun == items[in_backup:]
    # Its first save wrote every key into a new generation, above every file there, and
    # said so: the damaged file set aside may name the generations below.
    said = f"{state_path}: resumed from the backup; the key journal goes on in generation 3"
    assert any(message.startswith(said) for message in caplog.messages), caplog.messages
