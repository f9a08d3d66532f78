"""Keyed progress and failure records ride the progress log (issue 18, docs/state-file.md,
"Progress log"): a save of progress alone is one record, which carries the keys finished
and the failure entries changed since the previous save; a rewrite of the state file (a
compaction) writes them into their journals first. One save, one flush. The records carry
the output lengths of a job's sinks too; a torn, flipped or failed record of any of these
kinds leaves the records before it.

A crash is copied, not caused, as in test_progress_log.py: in the body of an item the
job's files are exactly what a kill -9 there would leave (every save before it returned).
test_progress_log_strace.py kills the process for real at each system call.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from resumable import (
    NPolicy,
    Resumable,
    ResumableWarning,
    StateFileError,
    StateWriteError,
    inspect,
)

from jobs.documents import (
    journal_file,
    journal_keys,
    log_records,
    saved_keys,
    saved_progress,
    saved_records,
)
from jobs.harness import RESUMABLE_COMMAND, TIMEOUT, child_env

KEYS = [f"k{n}" for n in range(10)]


class PageError(Exception):
    """What a failing item's body raises."""


def crashed_copy(state: Path, into: Path) -> Path:
    """A copy of the job's folder as a kill -9 now would leave it; its state file."""
    shutil.copytree(state.parent, into)
    (into / f"{state.name}.lock").unlink(missing_ok=True)
    return into / state.name


def keyed_crash(directory: Path, at: str = "k5") -> Path:
    """Run a keyed job over KEYS, saving after every item, and copy its files in the body
    of item `at`: the state file commits k0 (the run's first save compacts), the log's
    records hold one key each after it."""
    state = directory / "job" / "job.state"
    state.parent.mkdir(parents=True)
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(KEYS, key=str):
            if item == at:
                return crashed_copy(state, directory / "crash")
    raise AssertionError("the loop ended early")


def log_of(state: Path) -> Path:
    return state.with_name(state.name + ".log")


def committed_keys(state: Path) -> set[str | int]:
    """The keys of the key journal up to the length the state file itself commits."""
    journal = orjson.loads(state.read_bytes())["progress"]["journal"]
    return journal_keys(journal_file(state, journal["generation"]), journal["length"])


def resumed(state: Path, items: list[str] | None = None) -> list[str]:
    """Run the keyed job at `state` to its end; the items whose body ran."""
    ran = []
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(KEYS if items is None else items, key=str):
            ran.append(item)
    return ran


def record(payload: dict[str, object]) -> bytes:
    """A record of the progress log whose CRC is right, holding `payload`."""
    body = orjson.dumps(payload)
    prefix = struct.pack("<BI", 0x53, len(body))
    return prefix + struct.pack("<I", zlib.crc32(body, zlib.crc32(prefix))) + body


# -- keys ----------------------------------------------------------------------------------


def test_a_keyed_save_of_progress_is_a_record_of_its_new_keys_and_the_journal_waits(
    tmp_path: Path,
) -> None:
    copy = keyed_crash(tmp_path)
    # The first save rewrote the state file, with k0 in the journal; saves 2 to 5 are
    # records carrying one key each, and wrote nothing to the journal.
    assert committed_keys(copy) == {"k0"}
    assert (
        journal_file(copy, 0).stat().st_size
        == orjson.loads(copy.read_bytes())["progress"]["journal"]["length"]
    )
    assert [record["keys"] for record in saved_records(copy)] == [["k1"], ["k2"], ["k3"], ["k4"]]
    assert saved_keys(copy) == set(KEYS[:5])
    assert inspect(copy).position == 5
    assert resumed(copy) == KEYS[5:]
    # The end of the run compacted: the journal holds every key, and no log is left.
    assert committed_keys(copy) == set(KEYS)
    assert not log_of(copy).exists()
    assert inspect(copy).position == 10


def test_a_compaction_puts_the_logged_keys_into_the_journal_and_a_crash_after_it_resumes(
    tmp_path: Path,
) -> None:
    """r.state changes at k4: that save compacts, the journal gets k1 to k4 (which rode
    the log) and k4's own, and the records after it carry the keys after it."""
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(KEYS, key=str):
            if item == "k4":
                r.state["seen"] = item
            if item == "k5":
                assert committed_keys(state) == set(KEYS[:5])
                assert saved_records(state) == []  # the compaction made the log stale
            if item == "k8":
                assert [record["keys"] for record in saved_records(state)] == [
                    ["k5"],
                    ["k6"],
                    ["k7"],
                ]
                copy = crashed_copy(state, tmp_path / "crash")
    assert inspect(copy).position == 8
    with Resumable(copy, policy=NPolicy(1)) as r:
        assert r.position == 8
        assert r.state == {"seen": "k4"}
        assert list(r.iterate([*reversed(KEYS), "new"], key=str)) == ["k9", "k8", "new"]
    assert committed_keys(copy) == {*KEYS, "new"}


def test_a_torn_keyed_record_s_keys_run_again_and_the_earlier_records_keys_do_not(
    tmp_path: Path,
) -> None:
    copy = keyed_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    start, end = log_records(data)[-1]  # the record of k4
    for cut in range(start, end):
        log.write_bytes(data[:cut])
        assert inspect(copy).position == 4, f"log cut at byte {cut} of {end}"
    for cut in (start + 1, (start + end) // 2, end - 1):
        log.write_bytes(data[:cut])
        again = crashed_copy(copy, tmp_path / f"cut-{cut}")
        assert resumed(again) == KEYS[4:], f"log cut at byte {cut} of {end}"


def test_inspect_and_status_count_the_keys_of_the_log(tmp_path: Path) -> None:
    copy = keyed_crash(tmp_path)
    assert orjson.loads(copy.read_bytes())["progress"]["done"] == 1
    assert inspect(copy).position == 5
    command = [sys.executable, "-c", RESUMABLE_COMMAND, "status", "--json", str(copy)]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    [report] = json.loads(done.stdout)
    assert (report["position"], report["progress_kind"]) == (5, "keys")


def test_a_keyed_job_resumes_from_the_backup_with_the_keys_the_backup_commits(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    assert resumed(state, KEYS[:3]) == KEYS[:3]  # run 1 ends compacted: k0 to k2
    with Resumable(state, policy=NPolicy(1)) as r:  # run 2: compacts, then appends
        for item in r.iterate(KEYS, key=str):
            if item == "k6":
                copy = crashed_copy(state, tmp_path / "crash")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # the state file is damaged: its backup is run 1's
    copy.write_bytes(bytes(data))
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        assert inspect(copy).position == 3
    with pytest.warns(ResumableWarning):
        ran = resumed(copy)
    assert ran == KEYS[3:]  # what the backup commits is not run again
    assert committed_keys(copy) == set(KEYS)
    corrupt = [path for path in copy.parent.glob("job.state.corrupt-*") if path.suffix != ".log"]
    assert len(corrupt) == 1  # kept for repair, with its log
    assert [record["keys"] for record in saved_records(corrupt[0])] == [["k4"], ["k5"]]


def test_keys_orjson_cannot_write_as_they_are_ride_the_log_tagged(tmp_path: Path) -> None:
    huge, surrogate = 2**70, "caf\udce9.txt"
    items: list[str | int] = [1, huge, surrogate, "plain"]

    def key(item: object) -> str | int:
        assert isinstance(item, (str, int))
        return item

    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(items, key=key):
            if item == "plain":
                copy = crashed_copy(state, tmp_path / "crash")
    assert [record["keys"] for record in saved_records(copy)] == [
        [{"int": format(huge, "x")}],
        [{"str": surrogate.encode("utf-8", "surrogatepass").hex()}],
    ]
    with Resumable(copy, policy=NPolicy(1)) as r:
        assert list(r.iterate([*items, 2], key=key)) == ["plain", 2]


def test_a_save_of_more_keys_than_a_record_holds_compacts_instead(tmp_path: Path) -> None:
    """100 keys of 700 characters are over the 64 KiB of a record: that save rewrites the
    state file, the keys in the journal first."""
    long_keys = [f"{n:03d}" + "x" * 697 for n in range(300)]
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(100)) as r:
        for item in r.iterate(long_keys, key=str):
            if item == long_keys[200]:  # saves at 100 (the first: a compaction) and 200
                assert saved_records(state) == []
                assert committed_keys(state) == set(long_keys[:200])
                copy = crashed_copy(state, tmp_path / "crash")
    assert inspect(copy).position == 200


@pytest.mark.parametrize(
    "damage",
    [{"keys": [1.5]}, {"keys": "k9"}, {"keys": [{"int": "5"}]}, {"failed": [3]}],
    ids=["a float key", "no list", "a tag no save writes", "an entry no object"],
)
def test_a_record_whose_keys_or_entries_no_save_writes_is_damage_naming_the_log(
    tmp_path: Path, damage: dict[str, object]
) -> None:
    copy = keyed_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    last = orjson.loads(data[log_records(data)[-1][0] + 9 :])
    log.write_bytes(data + record({**last, "seq": last["seq"] + 1, **damage}))
    # The run's first save kept no backup: nothing stands in for the damaged job.
    with pytest.raises(StateFileError, match=r"job\.state\.log is damaged"):
        inspect(copy)


@pytest.mark.parametrize(
    "entry",
    [{"key": "k9"}, {"key": "k9", "cleared": 1}, {"position": 3, "cleared": True}],
    ids=["no record's fields", "cleared not true", "a position in a keyed job"],
)
def test_a_record_whose_failure_entry_is_no_record_of_the_job_is_refused_naming_it(
    tmp_path: Path, entry: dict[str, object]
) -> None:
    """An entry that is an object, but no failure record or clearing of this job's kind:
    StateFileError naming the progress log and the entry's number, never a bare error."""
    copy = keyed_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    last = orjson.loads(data[log_records(data)[-1][0] + 9 :])
    log.write_bytes(data + record({**last, "seq": last["seq"] + 1, "failed": [entry]}))
    with pytest.raises(StateFileError, match="the progress log holds a bad failure entry"):
        Resumable(copy).__enter__()


# -- records carrying keys and failure entries: a torn tail, bit flips ---------------------


def both_kinds_crash(directory: Path) -> Path:
    """A keyed job saving every two items, k2 and k4 failing: a crash copy in k6's body.
    The state file commits k0 and k1 (the run's first save); the log's first record
    carries k3 and the failure of k2 (the job's first), its last k5 and the failure of k4."""
    state = directory / "job" / "job.state"
    state.parent.mkdir(parents=True)
    with Resumable(state, policy=NPolicy(2), quiet=True) as r:
        for item in r.iterate(KEYS, key=str, on_error="record"):
            with r.attempt():
                if item in ("k2", "k4"):
                    raise PageError(item)
            if item == "k6":
                return crashed_copy(state, directory / "crash")
    raise AssertionError("the loop ended early")


def keys_and_failures(state: Path) -> tuple[int, set[str | int]]:
    """The keys done, and the failed keys, that `inspect` finds."""
    snapshot = inspect(state)
    return snapshot.position, {item.where for item in snapshot.failed}


BEFORE_LAST = (3, {"k2"})  # k0, k1, k3 done, k2 failed: the records before the last


def test_a_record_of_keys_and_failures_torn_at_every_byte_gives_the_record_before(
    tmp_path: Path,
) -> None:
    copy = both_kinds_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    assert [
        (record["keys"], [e["key"] for e in record["failed"]]) for record in saved_records(copy)
    ] == [
        (["k3"], ["k2"]),
        (["k5"], ["k4"]),
    ]
    assert keys_and_failures(copy) == (4, {"k2", "k4"})
    start, end = log_records(data)[-1]
    for cut in range(start, end):
        log.write_bytes(data[:cut])
        assert keys_and_failures(copy) == BEFORE_LAST, f"log cut at byte {cut} of {end}"
    log.write_bytes(data[: (start + end) // 2])
    with Resumable(copy, policy=NPolicy(2), quiet=True) as r:
        ran = list(r.iterate(KEYS, key=str, on_error="record"))
    assert ran == ["k2", "k4", "k5", "k6", "k7", "k8", "k9"]  # k4's failure was torn off
    assert inspect(copy).failed == ()


def check_flips_in_a_record_of_both(tmp_path: Path, which: int, every_bit: bool) -> None:
    """Flip bits of record `which` (0: the first, 1: the last) one at a time. In the last
    record each flip reads as a torn tail (the records before it stand); in the first,
    which a whole record follows, each is damage (no backup to fall back on), the log
    kept as it is."""
    copy = both_kinds_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    start, end = log_records(data)[which]
    for bit in range(start * 8, end * 8):
        if not every_bit and bit // 8 >= start + 9 and bit % 8 != (bit // 8) % 8:
            continue  # the header's every bit, then one bit of each byte, in turn
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        log.write_bytes(damaged)
        where = f"bit {bit % 8} of byte {bit // 8} flipped"
        if end == len(data):
            assert keys_and_failures(copy) == BEFORE_LAST, where
            continue
        with pytest.raises(StateFileError, match=r"job\.state\.log is damaged"):
            keys_and_failures(copy)
        assert log.read_bytes() == damaged, where


@pytest.mark.parametrize("which", [1, 0], ids=["last record", "first record"])
def test_a_bit_flipped_in_a_record_of_keys_and_failures_is_detected(
    tmp_path: Path, which: int
) -> None:
    check_flips_in_a_record_of_both(tmp_path, which, every_bit=False)


@pytest.mark.slow
@pytest.mark.parametrize("which", [1, 0], ids=["last record", "first record"])
def test_every_bit_flipped_in_a_record_of_keys_and_failures_is_detected(
    tmp_path: Path, which: int
) -> None:
    check_flips_in_a_record_of_both(tmp_path, which, every_bit=True)


@pytest.mark.parametrize(
    "failed",
    [{"entries": -1, "items": 2}, {"entries": 2, "items": "2"}, {"entries": 2}],
    ids=["a negative count", "a count no int", "no journal and no items"],
)
def test_a_record_naming_no_failure_journal_with_bad_counts_is_refused(
    tmp_path: Path, failed: dict[str, object]
) -> None:
    """The failure entries before the journal starts: a record's progress says how many,
    and a count no save writes is refused (StateFileError) as any malformed progress."""
    copy = both_kinds_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    last = orjson.loads(data[log_records(data)[-1][0] + 9 :])
    assert last["progress"]["failed"] == {"entries": 2, "items": 2}
    forged = {**last, "seq": last["seq"] + 1, "progress": {**last["progress"], "failed": failed}}
    log.write_bytes(data + record(forged))
    with pytest.raises(StateFileError, match="failed"):
        inspect(copy)


# -- records carrying output lengths (sinks) ---------------------------------------------

LINES = "".join(f"line {n}\n" for n in range(10))  # the output of one uninterrupted run


def sink_crash(directory: Path) -> Path:
    """A positional job writing one line per item to a sink, saving after every item: a
    crash copy in item 6's body. The state file records the sink at 0 bytes (the save
    `r.sink` makes, the run's first: a rewrite); the log's records its lengths after
    lines 0 to 5."""
    state = directory / "job" / "job.state"
    state.parent.mkdir(parents=True)
    with Resumable(state, policy=NPolicy(1)) as r:
        out = r.sink(state.parent / "out.txt")
        for item in r.iterate(range(10)):
            if item == 6:
                return crashed_copy(state, directory / "crash")
            out.write(f"line {item}\n")
    raise AssertionError("the loop ended early")


def sink_length(state: Path) -> int:
    """The length `inspect` finds recorded for the job's sink."""
    return inspect(state).sinks[str(state.parent / "out.txt")]


def finish_sink_job(state: Path) -> str:
    """Run the job of `sink_crash` to its end; its output."""
    with Resumable(state, policy=NPolicy(1)) as r:
        out = r.sink(state.parent / "out.txt")
        for item in r.iterate(range(10)):
            out.write(f"line {item}\n")
    return (state.parent / "out.txt").read_text()


def test_a_record_of_output_lengths_torn_or_flipped_gives_the_lengths_before(
    tmp_path: Path,
) -> None:
    """The last record cut at every byte, or a bit flipped in each byte of its header and
    in every third byte of its payload: the length of the record before (lines 0 to 4),
    which the next run cuts the file back to; the finished output is that of one
    uninterrupted run. A bit flipped in a record that another follows is damage naming
    the log."""
    copy = sink_crash(tmp_path)
    log = log_of(copy)
    data = log.read_bytes()
    assert [record["sinks"]["out.txt"]["length"] for record in saved_records(copy)] == [
        len(LINES.split(f"line {n}")[0]) for n in range(1, 7)
    ]
    before = len(LINES.split("line 5")[0])
    spans = log_records(data)
    start, end = spans[-1]
    for cut in range(start, end):
        log.write_bytes(data[:cut])
        assert sink_length(copy) == before, f"log cut at byte {cut} of {end}"
    for byte in [*range(start, start + 9), *range(start + 9, end, 3)]:
        damaged = bytearray(data)
        damaged[byte] ^= 1 << (byte % 8)
        log.write_bytes(damaged)
        assert sink_length(copy) == before, f"bit {byte % 8} of byte {byte} flipped"
    first_start, first_end = spans[0]
    for byte in range(first_start, first_end, 7):
        damaged = bytearray(data)
        damaged[byte] ^= 1 << (byte % 8)
        log.write_bytes(damaged)
        with pytest.raises(StateFileError, match=r"job\.state\.log is damaged"):
            sink_length(copy)
    log.write_bytes(data[: (start + end) // 2])
    assert finish_sink_job(copy) == LINES


def fail_the_next_fdatasync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next os.fdatasync of this process fails with EIO; the ones after it flush."""
    real = os.fdatasync

    def fails_once(fd: int) -> None:
        monkeypatch.setattr(os, "fdatasync", real)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", fails_once)


def test_a_record_of_output_lengths_that_fails_leaves_them_to_the_exit_s_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the fdatasync of the record after line 3: the save raises StateWriteError
    naming the log; the exit's rewrite records the sink at the boundary it reached (lines
    0 to 3, fsynced before the record), and the next run finishes with the output of one
    uninterrupted run."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateWriteError, match=r"job\.state\.log.*EIO"),
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        out = r.sink(tmp_path / "out.txt")
        for item in r.iterate(range(10)):
            out.write(f"line {item}\n")
            if item == 3:
                fail_the_next_fdatasync(monkeypatch)
    assert not log_of(state).exists()
    assert (inspect(state).position, sink_length(state)) == (4, len(LINES.split("line 4")[0]))
    assert finish_sink_job(state) == LINES


# -- failure records -----------------------------------------------------------------------


def flushes_of(save: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flushes `save` makes: each fsync and fdatasync, passed on to the real one."""
    flushes: list[str] = []

    def spy(name: str, real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            flushes.append(name)
            real(fd)

        return flush

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", spy("fsync", os.fsync))
        patch.setattr(os, "fdatasync", spy("fdatasync", os.fdatasync))
        save()
    return flushes


@pytest.mark.parametrize("keyed", [False, True], ids=["by position", "by key"])
def test_a_save_that_records_a_failure_is_one_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyed: bool
) -> None:
    """The job's first failure is one record, as every later save of progress and
    failures: the failure journal waits for the next rewrite of the state file."""
    state = tmp_path / "job.state"
    seen: dict[str, list[str]] = {}
    with Resumable(state, policy=NPolicy(1_000), quiet=True) as r:
        loop = r.iterate(KEYS, key=str if keyed else None, on_error="record")
        for item in loop:
            with r.attempt():
                if item in ("k2", "k5"):
                    raise PageError(item)
            if item in ("k0", "k1", "k2", "k3", "k5", "k6"):
                seen[item] = flushes_of(r.save, monkeypatch)
            if item == "k2":
                assert list(tmp_path.glob("job.state.failed-*")) == []
                assert {failed.where for failed in inspect(state).failed} == (
                    {"k2"} if keyed else {2}
                )
    assert seen["k0"].count("fdatasync") == 0  # the run's first save: a rewrite
    assert seen["k1"] == ["fsync", "fdatasync"]  # the log opened: its directory flushed
    assert seen["k2"] == ["fdatasync"]  # the job's first failure: one record
    assert seen["k3"] == ["fdatasync"]
    assert seen["k5"] == ["fdatasync"]  # a new failure: one record
    assert seen["k6"] == ["fdatasync"]
    assert {item.where for item in inspect(state).failed} == ({"k2", "k5"} if keyed else {2, 5})
    assert saved_progress(state)["failed"]["items"] == 2  # the exit started the journal
    assert len(list(tmp_path.glob("job.state.failed-*"))) == 1


def test_failure_entries_ride_the_log_and_a_crash_keeps_them(tmp_path: Path) -> None:
    """k2 fails (the job's first failure) and k5 fails, each recorded in a record of the
    log, and k2 succeeds on its retry in the next run: a crash copy in each shows what the
    saves before it recorded."""
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    fail = {"k2", "k5"}
    with Resumable(state, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(KEYS, key=str, on_error="record"):
            with r.attempt():
                if item in fail:
                    raise PageError(item)
            if item == "k7":
                copy = crashed_copy(state, tmp_path / "crash")
    failed_entries = [entry for record in saved_records(copy) for entry in record.get("failed", [])]
    assert [entry["key"] for entry in failed_entries] == ["k2", "k5"]
    assert "failed" not in orjson.loads(copy.read_bytes())["progress"]  # no journal yet
    assert list(copy.parent.glob("job.state.failed-*")) == []
    failed = {item.where: item.attempts for item in inspect(copy).failed}
    assert failed == {"k2": 1, "k5": 1}
    assert inspect(copy).position == 5  # k0 to k6 but the two failed
    # The next run retries both; its first save starts the failure journal with the two
    # entries of the log; k2 succeeds (its record goes, an entry of the log), k5 fails
    # again; a crash copy in k9's body holds both entries.
    fail = {"k5"}
    with Resumable(copy, policy=NPolicy(1), quiet=True) as r:
        ran = []
        for item in r.iterate(KEYS, key=str, on_error="record"):
            ran.append(item)
            with r.attempt():
                if item in fail:
                    raise PageError(item)
            if item == "k9":
                second = crashed_copy(copy, tmp_path / "second")
    assert set(ran) == {"k2", "k5", "k7", "k8", "k9"}  # k7 was in its body
    assert {item.where: item.attempts for item in inspect(second).failed} == {"k5": 2}
    # The end of that run compacted: the failure journal holds the same.
    assert not log_of(copy).exists()
    assert saved_progress(copy)["failed"]["items"] == 1
    assert {item.where: item.attempts for item in inspect(copy).failed} == {"k5": 2}


def status_json(state: Path) -> dict[str, object]:
    """What ``resumable status --json`` reports of the job at `state`."""
    command = [sys.executable, "-c", RESUMABLE_COMMAND, "status", "--json", str(state)]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    [report] = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report


def test_a_failure_only_the_log_holds_is_shown_retried_and_kept_by_no_journal_once_cleared(
    tmp_path: Path,
) -> None:
    """Item 2 of a positional job fails, the job's first failure: a crash copy in item 4's
    body holds it in a record of the log alone (no failure journal), which inspect and
    `resumable status` show. The next run retries it first, it succeeds before the run's
    first save, and that save (a rewrite) finds nothing failed: no journal is ever made."""
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(range(6), on_error="record"):
            with r.attempt():
                if item == 2:
                    raise PageError(item)
            if item == 4:
                copy = crashed_copy(state, tmp_path / "crash")
    assert list(copy.parent.glob("job.state.failed-*")) == []
    assert saved_progress(copy)["failed"] == {"entries": 1, "items": 1}
    assert [failed.where for failed in inspect(copy).failed] == [2]
    report = status_json(copy)
    assert report["position"] == 4
    assert report["failed"] == [
        {**entry, "key": None}
        for record in saved_records(copy)
        for entry in record.get("failed", [])
    ]
    with Resumable(copy, policy=NPolicy(1), quiet=True) as r:
        ran = list(r.iterate(range(6), on_error="record"))
    assert ran == [2, 4, 5]  # the failed item first, then the rest
    assert inspect(copy).failed == ()
    assert "failed" not in orjson.loads(copy.read_bytes())["progress"]
    assert list(copy.parent.glob("job.state.failed-*")) == []


def test_a_failure_cleared_before_the_journal_starts_stays_cleared_by_later_failures(
    tmp_path: Path,
) -> None:
    """Item 2's failure rides the log alone; the next run retries it first and it
    succeeds, so that run's first save (a rewrite) keeps nothing; item 5 then fails, and
    the journal the exit starts holds that failure alone: item 2 is not failed again."""
    state = tmp_path / "job" / "job.state"
    state.parent.mkdir()
    with Resumable(state, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(range(8), on_error="record"):
            with r.attempt():
                if item == 2:
                    raise PageError(item)
            if item == 4:
                copy = crashed_copy(state, tmp_path / "crash")
    with Resumable(copy, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(range(8), on_error="record"):
            with r.attempt():
                if item == 5:
                    raise PageError(item)
    assert [failed.where for failed in inspect(copy).failed] == [5]
    assert saved_progress(copy)["failed"]["entries"] == 1


def failure_in_the_log_crash(directory: Path) -> Path:
    """A positional job over a generator of 6 items: run 1 stops at position 2, compacted
    (the backup of run 2's first save); in run 2 item 3 fails, the job's first failure,
    which only a record of the log holds in the crash copy made in item 5's body."""
    state = directory / "job" / "job.state"
    state.parent.mkdir(parents=True)
    with Resumable(state, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(iter(range(6)), on_error="record"):
            if item == 2:
                break
    with Resumable(state, policy=NPolicy(1), quiet=True) as r:
        for item in r.iterate(iter(range(6)), on_error="record"):
            with r.attempt():
                if item == 3:
                    raise PageError(item)
            if item == 5:
                return crashed_copy(state, directory / "crash")
    raise AssertionError("the loop ended early")


def test_restart_drops_a_failure_only_the_log_holds_and_keeps_it_aside(tmp_path: Path) -> None:
    copy = failure_in_the_log_crash(tmp_path)
    assert [item.where for item in inspect(copy).failed] == [3]
    with Resumable(copy, policy=NPolicy(1), quiet=True, restart=True) as r:
        assert r.failed == []
        assert list(r.iterate(iter(range(6)), on_error="record")) == list(range(6))
    assert inspect(copy).failed == ()
    [aside] = [
        path
        for path in copy.parent.glob("job.state.reset-*")
        if path.suffix not in (".bak", ".log")
    ]
    assert [item.where for item in inspect(aside).failed] == [3]  # its log moved with it


def test_a_damaged_state_file_goes_back_to_the_backup_without_the_failure_its_log_held(
    tmp_path: Path,
) -> None:
    """The backup is the state file before run 2's first save: position 2, no failure.
    Its items after it run again, item 3 among them, as an item not yet done; the damaged
    file's log, kept aside, still holds the failure."""
    copy = failure_in_the_log_crash(tmp_path)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        snapshot = inspect(copy)
    assert (snapshot.position, snapshot.failed) == (2, ())
    with pytest.warns(ResumableWarning), Resumable(copy, policy=NPolicy(1), quiet=True) as r:
        assert list(r.iterate(iter(range(6)), on_error="record")) == [2, 3, 4, 5]
    assert inspect(copy).failed == ()
    [log] = copy.parent.glob("job.state.corrupt-*.log")
    assert [entry["position"] for entry in saved_records_of_log(log)] == [3]


def saved_records_of_log(log: Path) -> list[dict[str, object]]:
    """The failure entries of every record of `log` that checks."""
    data = log.read_bytes()
    records = [orjson.loads(data[start + 9 : end]) for start, end in log_records(data)]
    return [entry for record in records for entry in record.get("failed", [])]


def test_a_keyed_append_that_fails_leaves_its_keys_to_the_exit_s_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the fdatasync of the record after k3: the save raises StateWriteError, the
    record is cut off, and the exit's rewrite puts k1 and k2 (which rode the log) and k3
    (whose record failed) into the key journal. The next run starts at k4."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateWriteError, match=r"job\.state\.log.*EIO"),
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(KEYS, key=str):
            if item == "k3":
                fail_the_next_fdatasync(monkeypatch)
    assert not log_of(state).exists()
    assert committed_keys(state) == set(KEYS[:4])
    assert resumed(state) == KEYS[4:]
