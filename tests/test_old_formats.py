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
# When each format's fixtures had their second run (tests/fixtures/README.md).
SECOND_RUN = {
    1: datetime(2026, 11, 22, 12, tzinfo=timezone.utc),
    2: datetime(2026, 12, 2, 12, tzinfo=timezone.utc),
}
STATE = {1: {}, 2: {"note": "written by format version 2"}}  # r.state, as saved
VERSIONS = [pytest.param(version, id=f"version {version}") for version in SECOND_RUN]
KEYS: list[str | int] = ["a", "b", "c", 2**70, UNDECODABLE_NAME, 7]


def job_from(fixture: str, tmp_path: Path) -> Path:
    """A copy of the fixture's files; the path of its state file."""
    shutil.copytree(FIXTURES / fixture, tmp_path / fixture)
    return tmp_path / fixture / "job.state"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_positional_job_with_failures_is_read_and_resumed(tmp_path: Path, version: int) -> None:
    state = job_from(f"v{version}-positional-failures", tmp_path)
    snapshot = inspect(state)
    assert (snapshot.format_version, snapshot.position, snapshot.finished) == (version, 8, False)
    assert snapshot.state == STATE[version]
    assert snapshot.failed == tuple(
        FailedItem(
            key=None,
            position=position,
            error_type="__main__.Unavailable",
            message=f"item {position}: 503 Service Unavailable",
            attempts=2,
            failed_at=SECOND_RUN[version],
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


@pytest.mark.parametrize("version", VERSIONS)
def test_a_keyed_job_with_a_journal_and_failures_is_read_and_resumed(
    tmp_path: Path, version: int
) -> None:
    state = job_from(f"v{version}-keyed-failures", tmp_path)
    expected = {
        "c": "cannot read 'c'",
        2**70: f"cannot read {2**70}",
        UNDECODABLE_NAME: "cannot read 'caf\\udce9.txt'",
    }
    snapshot = inspect(state)
    assert (snapshot.format_version, snapshot.position, snapshot.finished) == (version, 3, True)
    assert snapshot.state == STATE[version]
    assert {item.key: (item.message, item.attempts) for item in snapshot.failed} == {
        key: (message, 2) for key, message in expected.items()
    }
    assert {item.failed_at for item in snapshot.failed} == {SECOND_RUN[version]}
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


@pytest.mark.parametrize(
    "fixture",
    [
        "v1-positional-failures",
        "v1-keyed-failures",
        "v2-positional-failures",
        "v2-keyed-failures",
    ],
)
def test_an_old_job_opened_without_a_loop_keeps_its_failure_records(
    tmp_path: Path, fixture: str
) -> None:
    state = job_from(fixture, tmp_path)
    before = inspect(state)
    with Resumable(state):
        pass
    after = inspect(state)
    assert after.failed == before.failed
    assert (after.position, after.finished) == (before.position, before.finished)


def test_a_job_with_a_sink_is_read_and_its_sink_cut_back_on_resume(tmp_path: Path) -> None:
    state = job_from("v2-sink", tmp_path)
    out = state.with_name("out.txt")
    snapshot = inspect(state)
    assert (snapshot.position, snapshot.sinks) == (8, {str(out): 36})
    assert out.read_bytes().endswith(b"8:written after the last save\n")
    with Resumable(state) as r:
        sink = r.sink(out)
        assert out.read_bytes() == b"".join(f"{n}:{n * n}\n".encode() for n in range(8))
        for item in r.iterate(range(10)):
            sink.write(f"{item}:{item * item}\n")
    assert out.read_bytes() == b"".join(f"{n}:{n * n}\n".encode() for n in range(10))
