"""State files written by earlier versions are read and resumed (tests/fixtures/README.md).

The fixtures are copied before use: a run upgrades the files it saves.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from resumable import FailedItem, Resumable, inspect

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UNDECODABLE_NAME = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
SECOND_RUN = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
KEYS: list[str | int] = ["a", "b", "c", 2**70, UNDECODABLE_NAME, 7]


def job_from(fixture: str, tmp_path: Path) -> Path:
    """A copy of the fixture's files; the path of its state file."""
    shutil.copytree(FIXTURES / fixture, tmp_path / fixture)
    return tmp_path / fixture / "job.state"


def test_a_version_1_positional_job_with_failures_is_read_and_resumed(tmp_path: Path) -> None:
    state = job_from("v1-positional-failures", tmp_path)
    snapshot = inspect(state)
    assert (snapshot.format_version, snapshot.position, snapshot.finished) == (1, 8, False)
    assert snapshot.failed == tuple(
        FailedItem(
            key=None,
            position=position,
            error_type="__main__.Unavailable",
            message=f"item {position}: 503 Service Unavailable",
            attempts=2,
            failed_at=SECOND_RUN,
        )
        for position in (2, 5)
    )
    ran: list[int] = []
    with Resumable(state) as r:
        for item in r.iterate(range(10), on_error="record"):
            ran.append(item)
            with r.attempt():
                if item == 5:
                    raise OSError("still down")
    assert ran == [2, 5, 8, 9]  # the failed items first, then the rest
    upgraded = inspect(state)
    assert upgraded.format_version > 1
    assert (upgraded.position, upgraded.finished) == (10, True)
    assert [(item.position, item.attempts, item.message) for item in upgraded.failed] == [
        (5, 3, "still down")
    ]
    assert b"still down" not in state.read_bytes()  # kept in the failure journal


def test_a_version_1_keyed_job_with_failures_is_read_and_resumed(tmp_path: Path) -> None:
    state = job_from("v1-keyed-failures", tmp_path)
    expected = {
        "c": "cannot read 'c'",
        2**70: f"cannot read {2**70}",
        UNDECODABLE_NAME: "cannot read 'caf\\udce9.txt'",
    }
    snapshot = inspect(state)
    assert (snapshot.format_version, snapshot.position, snapshot.finished) == (1, 3, True)
    assert {item.key: (item.message, item.attempts) for item in snapshot.failed} == {
        key: (message, 2) for key, message in expected.items()
    }
    assert {item.failed_at for item in snapshot.failed} == {SECOND_RUN}
    ran: list[str | int] = []
    with Resumable(state) as r:
        for item in r.iterate(KEYS, key=lambda item: item, on_error="record"):
            ran.append(item)
            with r.attempt():
                if item == "c":
                    raise OSError("still down")
    assert ran == ["c", 2**70, UNDECODABLE_NAME]  # the done keys are skipped
    upgraded = inspect(state)
    assert upgraded.format_version > 1
    assert upgraded.position == 5
    assert [(item.key, item.attempts) for item in upgraded.failed] == [("c", 3)]


@pytest.mark.parametrize("fixture", ["v1-positional-failures", "v1-keyed-failures"])
def test_a_version_1_job_opened_without_a_loop_keeps_its_failure_records(
    tmp_path: Path, fixture: str
) -> None:
    state = job_from(fixture, tmp_path)
    before = inspect(state)
    with Resumable(state):
        pass
    after = inspect(state)
    assert after.failed == before.failed
    assert (after.position, after.finished) == (before.position, before.finished)
