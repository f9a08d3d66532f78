"""A fuzzer over state files: whatever the bytes, a clean load or a StateFileError.

Each example writes a state file as docs/state-file.md describes it, changed one way: a
field (of the document or of its progress) replaced by any JSON value, a field dropped,
a time that is no time, `r.state` nested up to past what orjson reads, or the bytes
themselves cut short, flipped or replaced; most changes keep a valid checksum, so the
reader's checks after the checksum are reached. Half the examples have a good backup.
Then `inspect` and `Resumable` open the job (without iterating).

Never allowed: any exception but `StateFileError` (a `ResumableWarning` when the backup
stands in), a hang (an alarm fails the example), the two readers disagreeing about a
file, or a changed file: opening a job without iterating writes nothing. A few hundred
examples run by default, thousands under the ``slow`` marker (``nox -s torture``).
"""

from __future__ import annotations

import signal
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Resumable, ResumableWarning, StateFileError, inspect

from jobs.documents import checksummed, document, files_in

SECONDS_BEFORE_A_HANG = 30
FIELDS = ["format_version", "progress", "state", "runs", "created_at", "saved_at", "writer"]
PROGRESS_FIELDS = ["kind", "position", "finished", "input", "failed"]

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def good_document(position: int, version: int) -> dict[str, Any]:
    """A positional job at `position` with a small state, as a save writes it."""
    progress = {
        "kind": "position",
        "position": position,
        "finished": False,
        "input": {"length": 100, "head_items": 0, "head_hash": None},
    }
    return document(progress, runs=2, version=version, state={"seen": [1, 2], "name": "x"})


@dataclass
class Case:
    """The bytes of the state file, and those of its backup (None: no backup)."""

    state: bytes
    backup: bytes | None


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def changed_documents(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([1, 2]))
    doc = good_document(draw(st.integers(0, 100)), version)
    change = draw(
        st.sampled_from(["field", "progress field", "drop", "time", "deep", "extra", "none"])
    )
    if change == "field":
        doc[draw(st.sampled_from(FIELDS))] = draw(_JSON)
    elif change == "progress field":
        doc["progress"][draw(st.sampled_from(PROGRESS_FIELDS))] = draw(_JSON)
    elif change == "drop":
        del doc[draw(st.sampled_from(FIELDS))]
    elif change == "time":
        doc[draw(st.sampled_from(["created_at", "saved_at"]))] = draw(st.text(max_size=40))
    elif change == "extra":
        doc[draw(st.text(min_size=1, max_size=8))] = draw(_JSON)
    data = checksummed(doc)
    if change == "deep":  # past what orjson writes, up to past what it reads
        depth = draw(st.integers(250, 1030))
        data = data.replace(b'"name":"x"', b'"name":' + nested(depth))
        if draw(st.booleans()):  # a checksum that matches the deep content
            body = orjson.loads(data.replace(nested(depth), b"0"))
            del body["checksum"]
            canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
            canonical = canonical.replace(b'"name":0', b'"name":' + nested(depth))
            data = canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()
    return data


@st.composite
def changed_bytes(draw: st.DrawFn) -> bytes:
    data = checksummed(good_document(draw(st.integers(0, 100)), 2))
    how = draw(st.sampled_from(["cut", "flip", "bytes"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        bit = draw(st.integers(0, len(data) * 8 - 1))
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        return bytes(flipped)
    return draw(st.binary(max_size=200))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    state = draw(st.one_of(changed_documents(), changed_bytes()))
    backup = checksummed(good_document(7, 2)) if draw(st.booleans()) else None
    return Case(state, backup)


class HangError(Exception):
    pass


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Raise `HangError` in the main thread after `seconds`."""

    def ring(signum: int, frame: FrameType | None) -> None:
        raise HangError(f"no outcome after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome_of_inspect(state: Path) -> tuple[str, int | None]:
    try:
        snapshot = inspect(state)
    except StateFileError:
        return "refused", None
    return ("backup" if snapshot.from_backup else "loaded"), snapshot.position


def outcome_of_opening(state: Path) -> tuple[str, int | None]:
    try:
        with Resumable(state, signals=()) as r:
            position = r.position
    except StateFileError:
        return "refused", None
    return "opened", position


def open_and_check(directory: Path, case: Case) -> None:
    state = directory / "job.state"
    state.write_bytes(case.state)
    if case.backup is not None:
        state.with_name("job.state.bak").write_bytes(case.backup)
    before = files_in(directory)
    with alarm(SECONDS_BEFORE_A_HANG), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumableWarning)  # the backup stands in: allowed
        looked, position = outcome_of_inspect(state)
        opened, opened_at = outcome_of_opening(state)
    # Resumable also restores the progress (inspect checks it too, for position progress)
    # and would load a keyed job's journal, which none of these has: it may refuse more.
    if looked == "refused":
        assert opened == "refused", "Resumable opened a file inspect refused"
    elif opened == "opened":
        assert opened_at == position
    assert files_in(directory) == before, "opening without iterating changed a file"


def check(tmp_path_factory: pytest.TempPathFactory, case: Case) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as directory:
        open_and_check(Path(directory), case)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_a_changed_state_file_loads_cleanly_or_is_refused_unchanged(
    tmp_path_factory: pytest.TempPathFactory, case: Case
) -> None:
    check(tmp_path_factory, case)


@pytest.mark.slow
@settings(max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_thousands_of_changed_state_files_load_cleanly_or_are_refused_unchanged(
    tmp_path_factory: pytest.TempPathFactory, case: Case
) -> None:
    check(tmp_path_factory, case)
