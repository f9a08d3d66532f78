"""Failed items: ``on_error="record"`` with ``r.attempt()`` records, goes on, retries later."""

from __future__ import annotations

import logging
import random
import signal
import struct
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from freezegun import freeze_time

from resumable import (
    FailedItem,
    Interrupted,
    NPolicy,
    Resumable,
    ResumableWarning,
    StateFileError,
    StateNotSerializableError,
    UsageError,
    inspect,
)
from resumable._store import journal_files, progress_log

from jobs.harness import Job, campaign_seed


class UnavailableError(Exception):
    """What a flaky source raises: a 503, say."""


def run(
    path: Path,
    items: Iterable[str],
    failing: set[str],
    *,
    keyed: bool = False,
    stop_at: str | None = None,
    max_attempts: int = 3,
) -> list[str]:
    """Loop with on_error="record"; items in `failing` raise; return the items that ran."""
    ran: list[str] = []
    with Resumable(path) as r:
        key = str if keyed else None
        for item in r.iterate(items, key=key, on_error="record", max_attempts=max_attempts):
            if item == stop_at:
                break
            with r.attempt():
                ran.append(item)
                if item in failing:
                    raise UnavailableError(f"{item}: 503 Service Unavailable")
    return ran


def failed(path: Path) -> dict[str | int, int]:
    """What the state file records as failed: key or position -> attempts."""
    return {item.where: item.attempts for item in inspect(path).failed}


ITEMS = [f"page-{n}" for n in range(8)]


def test_a_failure_is_recorded_and_the_loop_goes_on(state_path: Path) -> None:
    with freeze_time("2026-11-27 12:00:00", tick=False):
        assert run(state_path, ITEMS, {"page-2", "page-5"}) == ITEMS
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (8, True)
    assert snapshot.failed == (
        FailedItem(
            key=None,
            position=2,
            error_type=f"{UnavailableError.__module__}.UnavailableError",
            message="page-2: 503 Service Unavailable",
            attempts=1,
            failed_at=datetime(2026, 11, 27, 12, tzinfo=timezone.utc),
        ),
        FailedItem(
            key=None,
            position=5,
            error_type=f"{UnavailableError.__module__}.UnavailableError",
            message="page-5: 503 Service Unavailable",
            attempts=1,
            failed_at=datetime(2026, 11, 27, 12, tzinfo=timezone.utc),
        ),
    )


def test_positional_failures_are_retried_first_on_the_next_run(state_path: Path) -> None:
    assert run(state_path, ITEMS, {"page-2"}, stop_at="page-5") == ITEMS[:5]
    # The failed page-2 before the rest; it works now, so its record goes.
    assert run(state_path, ITEMS, set()) == ["page-2", *ITEMS[5:]]
    assert failed(state_path) == {}


def test_positional_retries_of_a_generator_take_the_failed_items_on_the_way(
    state_path: Path,
) -> None:
    ran: list[int] = []
    with Resumable(state_path) as r:
        for item in r.iterate((n for n in range(100)), on_error="record"):
            with r.attempt():
                if item in (3, 40):
                    raise UnavailableError(item)
            if item == 60:
                break
    with Resumable(state_path) as r:
        for item in r.iterate((n for n in range(100)), on_error="record"):
            ran.append(item)
    assert ran == [3, 40, *range(60, 100)]
    assert failed(state_path) == {}


def test_an_item_that_keeps_failing_is_skipped_after_max_attempts_and_the_run_says_so(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(state_path, ITEMS, {"page-3"}, max_attempts=2)
    assert run(state_path, ITEMS, {"page-3"}, max_attempts=2) == ["page-3"]
    assert failed(state_path) == {3: 2}
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert run(state_path, ITEMS, set(), max_attempts=2) == []
    assert "skipping 1 item that failed 2 times or more" in caplog.text
    assert failed(state_path) == {3: 2}  # left recorded
    assert run(state_path, ITEMS, set(), max_attempts=5) == ["page-3"]  # a higher limit
    assert failed(state_path) == {}


def test_keyed_failures_are_retried_where_they_are_met_and_not_done(state_path: Path) -> None:
    assert run(state_path, ITEMS, {"page-1"}, keyed=True) == ITEMS
    assert failed(state_path) == {"page-1": 1}
    assert inspect(state_path).position == 7  # page-1 is not done
    reordered = ["new", *reversed(ITEMS)]
    assert run(state_path, reordered, {"page-1"}, keyed=True) == ["new", "page-1"]
    assert failed(state_path) == {"page-1": 2}
    assert run(state_path, reordered, set(), keyed=True) == ["page-1"]
    assert failed(state_path) == {}
    assert inspect(state_path).position == 9


def test_ctrl_c_sigterm_and_system_exit_are_never_recorded(state_path: Path) -> None:
    for stop in (KeyboardInterrupt(), Interrupted(15), SystemExit(3)):
        with pytest.raises(type(stop)), Resumable(state_path, signals=()) as r:
            for _ in r.iterate(ITEMS, key=str, on_error="record"):
                with r.attempt():
                    raise stop
        assert failed(state_path) == {}
        assert inspect(state_path).position == 0


def test_with_on_error_raise_the_exception_propagates_unrecorded(state_path: Path) -> None:
    with pytest.raises(UnavailableError), Resumable(state_path) as r:
        for item in r.iterate(ITEMS):
            with r.attempt():
                if item == "page-4":
                    raise UnavailableError(item)
    assert (inspect(state_path).position, failed(state_path)) == (4, {})


def test_an_exception_outside_attempt_ends_the_loop_as_usual(state_path: Path) -> None:
    with pytest.raises(UnavailableError), Resumable(state_path) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            if item == "page-4":
                raise UnavailableError(item)
    assert (inspect(state_path).position, failed(state_path)) == (4, {})


def test_attempt_outside_the_loop_and_bad_arguments_are_refused(state_path: Path) -> None:
    with Resumable(state_path) as r:
        with (
            pytest.raises(UsageError, match=r"in the body of `for item in r.iterate"),
            r.attempt(),
        ):
            pass
        with pytest.raises(ValueError, match="on_error must be 'raise' or 'record'"):
            r.iterate(ITEMS, on_error="ignore")  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="max_attempts must be a whole number >= 1"):
            r.iterate(ITEMS, max_attempts=0)


def test_attempt_after_the_loop_ended_is_refused_as_outside_the_body(state_path: Path) -> None:
    """Once the loop has run to its end, a failure in attempt() belongs to no item: the
    same UsageError as before any loop, nothing recorded."""
    with Resumable(state_path) as r:
        for _ in r.iterate(["a", "b"], on_error="record"):
            pass
        with (
            pytest.raises(UsageError, match=r"in the body of `for item in r.iterate"),
            r.attempt(),
        ):
            raise ValueError("after the loop")
    assert failed(state_path) == {}


def test_a_long_message_is_cut_and_builtin_types_are_named_plainly(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for _ in r.iterate(["x"], on_error="record"):
            with r.attempt():
                raise KeyError("k" * 2000)
    (record,) = inspect(state_path).failed
    assert record.error_type == "KeyError"
    assert len(record.message) == 500


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


# A file name as os.listdir gives it for bytes that are no UTF-8 (surrogateescape).
UNDECODABLE_NAME = b"caf\xe9.txt".decode("utf-8", "surrogateescape")


def test_failures_json_cannot_hold_as_such_are_recorded_and_saved(state_path: Path) -> None:
    """Keys with lone surrogates or beyond 64 bits, a message with a lone surrogate and an
    exception whose str() raises: each is recorded, the loop goes on, and every save works."""
    failing: dict[str | int, Exception] = {
        UNDECODABLE_NAME: OSError("cannot read"),
        2**70: ValueError("too big"),
        "named": OSError(f"cannot read {UNDECODABLE_NAME}"),
        "unprintable": UnprintableError(),
    }
    items: list[str | int] = [*failing, "fine"]
    ran: list[str | int] = []
    with Resumable(state_path) as r:
        for item in r.iterate(items, key=lambda item: item, on_error="record"):
            with r.attempt():
                ran.append(item)
                if item in failing:
                    raise failing[item]
    assert ran == items
    snapshot = inspect(state_path)
    assert snapshot.position == 1  # "fine" is done
    messages = {record.key: record.message for record in snapshot.failed}
    assert messages == {
        UNDECODABLE_NAME: "cannot read",
        2**70: "too big",
        "named": "cannot read caf\\udce9.txt",
        "unprintable": "<str() of the exception raised RuntimeError>",
    }
    with Resumable(state_path) as r:  # the next run retries exactly the failed ones
        again = list(r.iterate(items, key=lambda item: item, on_error="record"))
    assert again == [*failing]
    assert not inspect(state_path).failed


def journal_entries(path: Path, length: int) -> list[dict[str, Any]]:
    """The entries of a failure journal's first `length` bytes, read as docs/state-file.md
    describes the records: magic byte, length, CRC-32, payload; the job record first."""
    data = path.read_bytes()[:length]
    entries: list[dict[str, Any]] = []
    magics = []
    while data:
        magic, size, crc = struct.unpack_from("<BII", data)
        payload = data[9 : 9 + size]
        assert crc == zlib.crc32(payload, zlib.crc32(data[:5]))
        magics.append(magic)
        if magic == 0x46:
            entries.extend(orjson.loads(payload))
        data = data[9 + size :]
    assert magics[0] == 0x4A  # the job record
    assert set(magics[1:]) == {0x46}  # then entries
    return entries


def test_failure_records_are_appended_to_a_journal_the_state_file_names(
    state_path: Path,
) -> None:
    run(state_path, ITEMS, {"page-1", "page-4"}, stop_at="page-6")
    failed = orjson.loads(state_path.read_bytes())["progress"]["failed"]
    assert failed == {
        "generation": 0,
        "first_generation": 0,
        "length": failed["length"],
        "job_id": failed["job_id"],
        "entries": 2,
        "items": 2,
    }
    journal = state_path.with_name("job.state.failed-0")
    assert [entry["position"] for entry in journal_entries(journal, failed["length"])] == [1, 4]
    # The next run retries both: page-1 succeeds, page-4 fails again. The journal gains
    # one entry for each, in that order; the first two stay as they were.
    assert run(state_path, ITEMS, {"page-4"}) == ["page-1", "page-4", "page-6", "page-7"]
    failed = orjson.loads(state_path.read_bytes())["progress"]["failed"]
    assert (failed["entries"], failed["items"]) == (4, 1)
    cleared, again = journal_entries(journal, failed["length"])[2:]
    assert cleared == {"position": 1, "cleared": True}
    assert (again["position"], again["attempts"]) == (4, 2)


Mode = Literal["positional", "keyed"]


@pytest.mark.parametrize("mode", ["positional", "keyed"])
def test_kill9_while_failures_are_recorded_keeps_records_and_progress_consistent(
    tmp_path: Path, mode: Mode
) -> None:
    """Items divisible by 7 fail; the job saves after every item and is killed at random
    moments, some of them right after recording a failure. Every state file read is
    whole, and in the end each failing item is recorded and every other item ran."""
    job = Job(tmp_path)
    rng = random.Random(campaign_seed())
    total = 200
    options = ["--items", str(total), "--every", "1", "--fail-every", "7"]
    if mode == "keyed":
        options.append("--keyed")
    for _ in range(5):
        with job.fast(*options) as child:
            target = rng.randrange(1, 30)
            seen = 0
            while seen < target:
                line = child.read_line()
                assert line is not None, child.describe("ended before the kill")
                seen += line.startswith(("end ", "failed "))
            killed = child.kill9()
            assert killed.returncode == -signal.SIGKILL, child.describe("not killed")
        if job.state.exists():
            snapshot = inspect(job.state)  # readable after every kill
            assert all(item.where in range(0, total, 7) for item in snapshot.failed)
    with job.fast(*options) as child:
        assert child.finish().returncode == 0
    snapshot = inspect(job.state)
    recorded = {item.where for item in snapshot.failed}
    assert recorded == set(range(0, total, 7))
    assert set(job.effects_log()) == set(range(total)) - recorded


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_an_item_whose_run_stopped_after_its_failure_leaves_the_list_once_it_succeeds(
    state_path: Path, kind: str
) -> None:
    """The failure is recorded, then the run stops inside that item: it is not done, so
    the next run's main loop (not its retries) runs it, and its success clears the record."""

    def items() -> list[str] | Iterator[str]:
        return list(ITEMS) if kind == "list" else iter(ITEMS)

    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(items(), on_error="record"):
            with r.attempt():
                if item == "page-2":
                    raise UnavailableError("503")
            if item == "page-2":
                raise KeyboardInterrupt  # a second ctrl+c, say, after the failure
    assert (inspect(state_path).position, failed(state_path)) == (2, {2: 1})
    assert run(state_path, items(), set()) == ITEMS[2:]
    assert failed(state_path) == {}
    assert run(state_path, items(), set()) == []  # nothing runs a second time


def fail_page_2_then_stop(state_path: Path) -> None:
    """A run in which page-2 fails (recorded), then ctrl+c in its body."""
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            with r.attempt():
                if item == "page-2":
                    raise UnavailableError("503")
            if item == "page-2":
                raise KeyboardInterrupt


def test_an_item_failing_again_past_the_position_counts_its_attempts_on(
    state_path: Path,
) -> None:
    fail_page_2_then_stop(state_path)
    assert run(state_path, ITEMS, {"page-2"}) == ITEMS[2:]
    assert failed(state_path) == {2: 2}


def test_a_run_that_breaks_at_an_item_that_failed_before_keeps_its_record(
    state_path: Path,
) -> None:
    """The item was reached but not run: its failure record stays, attempts and all."""
    fail_page_2_then_stop(state_path)
    assert (inspect(state_path).position, failed(state_path)) == (2, {2: 1})
    assert run(state_path, ITEMS, set(), stop_at="page-2") == []
    assert (inspect(state_path).position, failed(state_path)) == (2, {2: 1})


def test_the_start_of_a_run_says_how_many_failed_items_it_retries_and_skips(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """page-1 fails twice (given up, max_attempts=2), page-3 once then succeeds: the
    third run retries nothing, and says only that it skips page-1."""
    run(state_path, ITEMS, {"page-1", "page-3"}, max_attempts=2)
    with caplog.at_level(logging.INFO, logger="resumable"):
        run(state_path, ITEMS, {"page-1"}, max_attempts=2)
    assert "retrying 2 failed items" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resumable"):
        assert run(state_path, ITEMS, set(), max_attempts=2) == []
    assert "skipping 1 item that failed 2 times or more" in caplog.text
    assert "retrying" not in caplog.text


def test_a_changed_input_started_over_drops_the_failure_records(state_path: Path) -> None:
    """Their positions were in the other input."""
    run(state_path, ITEMS, {"page-2"})
    assert failed(state_path) == {2: 1}
    with Resumable(state_path) as r:
        assert list(r.iterate(["other"], on_change="restart", on_error="record")) == ["other"]
    assert failed(state_path) == {}


def test_a_retry_saved_by_the_policy_is_not_saved_again_when_the_input_ends(
    state_path: Path,
) -> None:
    """A finished job's one failed item, retried under NPolicy(1): the policy's save after
    it holds everything; the end of the input makes no second save of the same progress."""
    run(state_path, ITEMS, {"page-2"})
    with Resumable(state_path, policy=NPolicy(1)) as r:
        assert list(r.iterate(ITEMS, on_error="record")) == ["page-2"]
        assert [record.reason for record in r.save_log] == ["policy"]
    assert failed(state_path) == {}


def test_positional_retries_are_saved_as_the_policy_asks(state_path: Path) -> None:
    """With NPolicy(1) each retried item is followed by a save, as in the main loop."""
    run(state_path, ITEMS, {"page-1", "page-3", "page-5"})
    saves_after: list[int] = []
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            saves_after.append(r.saves)  # saves before this item ran
            with r.attempt():
                pass
            if item == "page-3":
                # page-1 and page-3 succeeded; the file already knows page-1's did
                assert failed(state_path) == {3: 1, 5: 1}
    assert saves_after == [0, 1, 2]
    assert failed(state_path) == {}


def test_kill9_during_positional_retries_repeats_at_most_the_item_in_flight(
    tmp_path: Path,
) -> None:
    """The first run records the even items as failed; the second retries them with
    NPolicy(1) and is killed by SIGKILL in the middle of the retries. The retries it saved
    do not run again: the third run repeats at most one item."""
    job = Job(tmp_path)
    total = 60
    options = ["--items", str(total), "--every", "1", "--fail-every", "2", "--fail-first-run"]
    with job.fast(*options) as child:
        assert child.finish().returncode == 0
    assert set(failed(job.state)) == set(range(0, total, 2))
    with job.fast(*options) as child:
        while child.read_line() != "end 20":  # the 11th retried item ran
            pass
        child.kill9()
    retried_before_kill = [item for item in job.effects_log() if item % 2 == 0]
    assert retried_before_kill[:11] == list(range(0, 22, 2))
    still_failed = set(failed(job.state))
    assert len(set(retried_before_kill) & still_failed) <= 2  # run after the last save
    with job.fast(*options) as child:
        assert child.finish().returncode == 0
    effects = job.effects_log()
    assert sorted(set(effects)) == list(range(total))
    repeated = [item for item in set(effects) if effects.count(item) > 1]
    assert len(repeated) <= 2, f"ran again after kill -9: {sorted(repeated)}"
    assert failed(job.state) == {}


def test_failed_keys_count_as_finished_items_for_the_policy(state_path: Path) -> None:
    """An outage: every item fails. NPolicy(2) still saves every second item, so a crash
    keeps the attempts counted so far."""
    with Resumable(state_path, policy=NPolicy(2)) as r:
        for _ in r.iterate(ITEMS, key=str, on_error="record"):
            with r.attempt():
                raise UnavailableError("503")
        saves_in_loop = r.saves
    assert saves_in_loop == 4
    assert failed(state_path) == dict.fromkeys(ITEMS, 1)


def job_files(directory: Path) -> dict[str, int]:
    """The job's files in `directory` and their sizes (the lock file left out)."""
    return {
        path.name: path.stat().st_size
        for path in directory.iterdir()
        if path.name.startswith("job.state") and not path.name.endswith(".lock")
    }


@pytest.mark.parametrize("keyed", [False, True], ids=["positional", "keyed"])
def test_many_failure_records_keep_the_state_file_small_and_a_save_appends_the_change(
    state_path: Path, keyed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An outage: 10,000 items fail. Their records do not go into the state file, which a
    save rewrites whole, but into the failure journal, which a save appends to."""
    urls = [f"https://example.org/item/{n}" for n in range(10_000)]
    items = [*urls, "https://example.org/last"]
    message = "connection refused: the service is down " + "x" * 400
    key = str if keyed else None

    def outage(max_attempts: int) -> None:
        with Resumable(state_path) as r:
            for item in r.iterate(items, key=key, on_error="record", max_attempts=max_attempts):
                if item == items[-1] and r.runs == 1:
                    break
                with r.attempt():
                    raise ConnectionError(message)

    with caplog.at_level(logging.WARNING, logger="resumable"):
        outage(max_attempts=3)
    assert "MB" not in caplog.text  # no word of a big state file
    assert len(inspect(state_path).failed) == 10_000
    assert state_path.stat().st_size < 2_000
    before = job_files(state_path.parent)
    # The next run skips those (given up) and records the last item's failure: its save
    # writes one record, not 10,001.
    outage(max_attempts=1)
    after = job_files(state_path.parent)
    assert after["job.state"] < 2_000
    journal = next(name for name in after if name.startswith("job.state.failed-"))
    assert 0 < after[journal] - before[journal] < 1_000
    assert len(inspect(state_path).failed) == 10_001


def state_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


def test_a_journal_of_mostly_cleared_records_is_rewritten_into_a_new_generation(
    state_path: Path,
) -> None:
    """600 items fail, then all 600 succeed: the journal's 1,200 entries hold no record,
    so the save writes a new generation holding just the records left (none)."""
    keys = [f"item-{n}" for n in range(600)]
    run(state_path, keys, set(keys), keyed=True)
    assert state_document(state_path)["progress"]["failed"]["generation"] == 0
    run(state_path, keys, set(), keyed=True)
    failed = state_document(state_path)["progress"]["failed"]
    assert (failed["generation"], failed["entries"], failed["items"]) == (1, 0, 0)
    assert inspect(state_path).failed == ()
    assert inspect(state_path).position == 600
    # The old generation stays while the backup names it.
    assert (
        state_document(state_path.with_name("job.state.bak"))["progress"]["failed"]["generation"]
        == 0
    )
    assert state_path.with_name("job.state.failed-0").exists()


@pytest.mark.parametrize(
    ("failing", "passing", "expected"),
    [(500, 500, (0, 1_000, 0)), (501, 500, (1, 1, 1))],
    ids=["1,000 entries: appended", "1,001: rewritten"],
)
def test_a_failure_journal_is_rewritten_once_it_holds_more_than_1_000_entries(
    state_path: Path, failing: int, passing: int, expected: tuple[int, int, int]
) -> None:
    """The boundary of REWRITE_MIN_ENTRIES: `failing` items fail, then the first
    `passing` of them succeed (the run stops there), a cleared entry each. At 1,000
    entries the journal is appended to; at 1,001 (more than twice the 1 record left, too)
    its records are rewritten into a new generation: (generation, entries, items)."""
    keys = [f"item-{n}" for n in range(failing)]
    run(state_path, keys, set(keys), keyed=True)
    assert state_document(state_path)["progress"]["failed"]["entries"] == failing
    stop_at = keys[passing] if passing < failing else None
    run(state_path, keys, set(), keyed=True, stop_at=stop_at)
    failed = state_document(state_path)["progress"]["failed"]
    assert (failed["generation"], failed["entries"], failed["items"]) == expected
    assert [item.where for item in inspect(state_path).failed] == keys[passing:]


def test_a_failure_journal_of_more_than_twice_its_records_in_entries_is_rewritten(
    state_path: Path,
) -> None:
    """The other side of the rule: past 1,000 entries, a rewrite once the entries are more
    than twice the records standing. 600 items fail; then 100 succeed and 500 fail again:
    1,200 entries for 500 records (more than 1,000, and than 2 x 500), rewritten into a
    new generation of the 500."""
    keys = [f"item-{n}" for n in range(600)]
    run(state_path, keys, set(keys), keyed=True)
    run(state_path, keys, set(keys[100:]), keyed=True)
    failed = state_document(state_path)["progress"]["failed"]
    assert (failed["generation"], failed["entries"], failed["items"]) == (1, 500, 500)


def test_with_the_fold_threshold_at_3_records_the_failure_journal_folds_every_third_save(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the key journal (tests/test_keyed.py): the failure journal is rewritten exactly
    when it would hold more than FOLD_MIN_RECORDS records. Every item fails, and every
    save rewrites the state file (r.state changes), appending the failure to the journal
    as a record: the first starts it (one record), the next two append, the fourth is due
    and folds; then every third. Each body sees the save made after the item before it."""
    monkeypatch.setattr(journal_files, "FOLD_MIN_RECORDS", 3)  # the seam: fold past 3 records
    generations = []
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(range(11), on_error="record"):
            r.state["item"] = item
            if state_path.exists():
                failed = orjson.loads(state_path.read_bytes())["progress"]["failed"]
                generations.append(failed["generation"])
            with r.attempt():
                raise UnavailableError(f"{item}: 503 Service Unavailable")
    assert generations == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert len(inspect(state_path).failed) == 11


def test_a_damaged_failure_journal_is_refused_and_left_as_it_is(state_path: Path) -> None:
    run(state_path, ITEMS, {"page-1", "page-4"})
    journal = state_path.with_name("job.state.failed-0")
    journal.write_bytes(journal.read_bytes()[:-1])  # one byte short of what was committed
    damaged = journal.read_bytes()
    saved = state_path.read_bytes()
    with pytest.raises(StateFileError, match=r"failure journal .*job\.state\.failed-0"):
        inspect(state_path)
    with pytest.raises(StateFileError, match=r"failure journal .*job\.state\.failed-0"):
        Resumable(state_path).__enter__()
    assert (journal.read_bytes(), state_path.read_bytes()) == (damaged, saved)


def test_a_resume_from_the_backup_leaves_the_failure_journal_the_damaged_file_names(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged state file committed more of the journal than the backup: those bytes
    stay, for it to be repaired, and the run goes on in a new generation."""
    monkeypatch.setattr(progress_log, "MAX_RECORDS", 0)  # the seam: each save rewrites the
    # state file, so that its backup is the save before the last
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            with r.attempt():
                if item in ("page-1", "page-7"):
                    raise UnavailableError(item)
    journal = state_path.with_name("job.state.failed-0")
    committed = journal.read_bytes()
    backup = state_document(state_path.with_name("job.state.bak"))["progress"]["failed"]
    assert backup["length"] < len(committed)  # the backup saw page-1's failure only
    state_path.write_bytes(state_path.read_bytes()[:-5])  # damaged
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        # The backup's failure first, then its undone item.
        assert run(state_path, ITEMS, set()) == ["page-1", "page-7"]
    assert journal.read_bytes() == committed
    failed = state_document(state_path)["progress"]["failed"]
    assert failed["generation"] > 0
    assert failed["first_generation"] == failed["generation"]
    assert inspect(state_path).failed == ()


def test_a_failure_journal_copied_from_another_job_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours" / "job.state", tmp_path / "theirs" / "job.state"
    for path in (ours, theirs):
        path.parent.mkdir()
        run(path, ITEMS, {"page-1", "page-2"})  # the same records: only the job tells
    journal = ours.with_name("job.state.failed-0")
    journal.write_bytes(theirs.with_name("job.state.failed-0").read_bytes())
    with pytest.raises(StateFileError, match="is not the journal of the state file"):
        inspect(ours)


def test_a_state_that_cannot_be_saved_leaves_the_failure_journal_unwritten(
    state_path: Path,
) -> None:
    with pytest.raises(StateNotSerializableError), Resumable(state_path) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            if item == "page-1":
                r.state["when"] = datetime.now(timezone.utc)  # no JSON value
                r.save()
            with r.attempt():
                raise UnavailableError("503")  # page-0's failure waits for a save
    assert sorted(path.name for path in state_path.parent.iterdir()) == ["job.state.lock"]


@pytest.mark.parametrize("keyed", [False, True], ids=["positional", "keyed"])
def test_a_batch_that_succeeds_on_retry_clears_its_records_for_good(
    state_path: Path, keyed: bool
) -> None:
    def batches(failing: str | None) -> None:
        with Resumable(state_path) as r:
            key = str if keyed else None
            for batch in r.iterate(ITEMS[:4], key=key, batch=2, on_error="record"):
                with r.attempt():
                    if failing in batch:
                        raise UnavailableError("503")

    batches(failing="page-2")
    assert set(failed(state_path)) == ({"page-2", "page-3"} if keyed else {2, 3})
    batches(failing=None)
    assert failed(state_path) == {}  # read back from the journal
