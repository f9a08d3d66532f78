"""Failed items: ``on_error="record"`` with ``r.attempt()`` records, goes on, retries later."""

from __future__ import annotations

import logging
import random
import signal
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import orjson
import pytest
from freezegun import freeze_time

from resumable import FailedItem, Interrupted, NPolicy, Resumable, UsageError, inspect

sys.path.insert(0, str(Path(__file__).resolve().parent / "jobs"))
from harness import Job, campaign_seed


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


def test_failure_records_in_the_file_are_checked(state_path: Path) -> None:
    run(state_path, ITEMS, {"page-1"})
    document = orjson.loads(state_path.read_bytes())
    assert document["progress"]["failed"][0]["position"] == 1


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


def test_an_item_failing_again_past_the_position_counts_its_attempts_on(
    state_path: Path,
) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(ITEMS, on_error="record"):
            with r.attempt():
                if item == "page-2":
                    raise UnavailableError("503")
            if item == "page-2":
                raise KeyboardInterrupt
    assert run(state_path, ITEMS, {"page-2"}) == ITEMS[2:]
    assert failed(state_path) == {2: 2}


def test_a_changed_input_started_over_drops_the_failure_records(state_path: Path) -> None:
    """Their positions were in the other input."""
    run(state_path, ITEMS, {"page-2"})
    assert failed(state_path) == {2: 1}
    with Resumable(state_path) as r:
        assert list(r.iterate(["other"], on_change="restart", on_error="record")) == ["other"]
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
