"""The state file: its format, its backup, and what happens when it is damaged."""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import enum
import gc
import math
import os
import random
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from unittest.mock import ANY

import orjson
import pytest

from resumable import (
    NPolicy,
    Resumable,
    ResumableWarning,
    StateFileError,
    StateLockedError,
    StateNotSerializableError,
    StateWriteError,
    inspect,
)

FORMAT_VERSION = 2  # the state file format this release writes (docs/state-file.md)


def make_job(path: Path, stop: int, state: dict[str, object] | None = None) -> bytes:
    """Run a job over range(10**6) until item `stop`; return the state file's bytes."""
    with Resumable(path) as r:
        if state:
            r.state.update(state)
        for item in r.iterate(range(10**6)):
            if item == stop:
                break
    return path.read_bytes()


def test_the_file_holds_version_progress_state_times_and_a_checksum(state_path: Path) -> None:
    make_job(state_path, 3, {"k": "v"})
    document = orjson.loads(state_path.read_bytes())
    assert document["format_version"] == FORMAT_VERSION
    progress = document["progress"]
    assert progress == {"kind": "position", "position": 3, "finished": False, "input": ANY}
    assert progress["input"] == {"length": 10**6, "head_items": 3, "head_hash": ANY}
    assert re.fullmatch(r"v2:blake2b:[0-9a-f]{32}", progress["input"]["head_hash"])
    assert document["state"] == {"k": "v"}
    assert document["runs"] == 1
    assert document["checksum"].startswith("crc32:")
    assert {"created_at", "saved_at", "writer"} <= document.keys()


def test_the_file_does_not_grow_with_the_items_processed(state_path: Path, tmp_path: Path) -> None:
    small = make_job(state_path, 10)
    large = make_job(tmp_path / "other.state", 100_000)
    assert len(large) - len(small) == len("100000") - len("10")


def test_the_previous_generation_is_kept_as_backup(state_path: Path) -> None:
    first = make_job(state_path, 3)
    make_job(state_path, 5)
    assert state_path.with_name("job.state.bak").read_bytes() == first
    assert inspect(state_path).position == 5


def corrupt_variants(good: bytes) -> dict[str, bytes]:
    document = orjson.loads(good)
    future = {**document, "format_version": FORMAT_VERSION + 1}
    return {
        "empty": b"",
        "not json": b"position=3\n",
        "a list": b"[1, 2, 3]",
        "missing progress": orjson.dumps({k: v for k, v in document.items() if k != "progress"}),
        "state not an object": orjson.dumps({**document, "state": [1]}),
        "checksum mismatch": good.replace(b'"position":3', b'"position":4'),
        "future version": orjson.dumps(future),
        "binary junk": bytes(range(256)),
    }


@pytest.mark.parametrize(
    "variant",
    [
        "empty",
        "not json",
        "a list",
        "missing progress",
        "state not an object",
        "checksum mismatch",
        "binary junk",
    ],  # a future version is no damage: its own tests below
)
def test_a_bad_state_file_without_backup_is_an_error_and_left_untouched(
    state_path: Path, variant: str
) -> None:
    bad = corrupt_variants(make_job(state_path, 3))[variant]
    state_path.write_bytes(bad)
    with (
        pytest.raises(StateFileError, match=r"no backup.*Nothing was changed"),
        Resumable(state_path),
    ):
        pass
    assert state_path.read_bytes() == bad
    assert not list(state_path.parent.glob("*.corrupt-*"))


def test_a_future_version_names_the_upgrade(state_path: Path) -> None:
    state_path.write_bytes(corrupt_variants(make_job(state_path, 3))["future version"])
    with pytest.raises(StateFileError, match=r"newer version of resumable-loop.*Upgrade"):
        inspect(state_path)


def test_a_future_version_is_not_taken_for_damage_even_with_a_backup(state_path: Path) -> None:
    """An older library must not go back to the backup (an older save) and set the newer
    file aside as damaged: it asks for an upgrade and changes nothing."""
    make_job(state_path, 3)
    newer = corrupt_variants(make_job(state_path, 5))["future version"]
    state_path.write_bytes(newer)
    before = sorted(os.listdir(state_path.parent))
    with pytest.raises(StateFileError, match=r"newer version of resumable-loop.*Upgrade"):
        inspect(state_path)
    with (
        pytest.raises(StateFileError, match=r"newer version of resumable-loop.*Upgrade"),
        Resumable(state_path),
    ):
        pass
    assert state_path.read_bytes() == newer
    assert sorted(os.listdir(state_path.parent)) == before


def test_every_truncation_of_a_state_file_is_detected(state_path: Path) -> None:
    good = make_job(state_path, 3, {"note": "x" * 50})
    for size in range(len(good)):
        state_path.write_bytes(good[:size])
        with pytest.raises(StateFileError):
            inspect(state_path)


def test_flipped_bits_are_detected(state_path: Path) -> None:
    good = make_job(state_path, 3, {"note": "hello", "count": 12345})
    rng = random.Random(20261126)
    for _ in range(300):
        damaged = bytearray(good)
        bit = rng.randrange(len(good) * 8)
        damaged[bit // 8] ^= 1 << (bit % 8)
        state_path.write_bytes(bytes(damaged))
        try:
            snapshot = inspect(state_path)
        except StateFileError:
            continue
        # A flip JSON cannot see (say, in the spacing of a key it ignores) must not change
        # what the file means.
        assert (snapshot.position, snapshot.state) == (3, {"note": "hello", "count": 12345})


def damage_a_job_at_5_with_its_backup_at_3(state_path: Path) -> bytes:
    """A job saved at 3, then at 5 (its backup at 3), whose state file is then cut: the
    bytes it now holds."""
    make_job(state_path, 3)
    make_job(state_path, 5)  # now at 5, backup at 3
    bad = b'{"truncated'
    state_path.write_bytes(bad)
    return bad


def test_a_corrupt_file_with_a_good_backup_resumes_from_the_backup(state_path: Path) -> None:
    bad = damage_a_job_at_5_with_its_backup_at_3(state_path)
    with (
        pytest.warns(ResumableWarning, match="resuming from the backup"),
        Resumable(state_path) as r,
    ):
        assert r.position == 3
        # A shorter input than the job's, to finish quickly: accepted as it is.
        assert list(r.iterate(range(5), on_change="continue")) == [3, 4]
    kept = list(state_path.parent.glob("job.state.corrupt-*"))
    assert [path.read_bytes() for path in kept] == [bad]
    assert inspect(state_path).finished


def test_after_the_fall_back_to_the_backup_only_the_first_save_sets_a_file_aside(
    state_path: Path,
) -> None:
    """The first save after resuming from the backup sets the damaged file aside as
    job.state.corrupt-<time>; the saves after it keep the previous save as the backup,
    as usual, and set nothing else aside (each rewrites the state file: r.state changes)."""
    bad = damage_a_job_at_5_with_its_backup_at_3(state_path)
    with (
        pytest.warns(ResumableWarning, match="resuming from the backup"),
        Resumable(state_path, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(range(10), on_change="continue"):  # a shorter input
            r.state["item"] = item
            if item == 7:
                break
    kept = list(state_path.parent.glob("job.state.corrupt-*"))
    assert [path.read_bytes() for path in kept] == [bad]
    # The save at the boundary of item 7, then the exit's (r.state changed in item 7).
    backup, last = inspect(state_path.with_name("job.state.bak")), inspect(state_path)
    assert (backup.position, backup.state, last.position, last.state) == (
        7,
        {"item": 6},
        7,
        {"item": 7},
    )


def test_inspect_reports_when_it_read_the_backup(state_path: Path) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    state_path.write_bytes(b"")
    with pytest.warns(ResumableWarning):
        snapshot = inspect(state_path)
    assert (snapshot.from_backup, snapshot.position) == (True, 3)
    assert state_path.read_bytes() == b""


def test_both_files_bad_is_an_error_naming_both(state_path: Path) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    state_path.write_bytes(b"{")
    state_path.with_name("job.state.bak").write_bytes(b"")
    with pytest.raises(StateFileError, match=r"job.state is not valid JSON.*bak is empty"):
        inspect(state_path)


def test_inspect_changes_nothing_and_needs_no_lock(state_path: Path) -> None:
    make_job(state_path, 3, {"a": 1})
    before = sorted(os.listdir(state_path.parent))
    content, mtime = state_path.read_bytes(), state_path.stat().st_mtime_ns
    with Resumable(state_path):  # even while a run holds the lock
        snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished, snapshot.state) == (3, False, {"a": 1})
    assert snapshot.runs == 1
    assert snapshot.saved_at >= snapshot.created_at
    assert state_path.read_bytes() == content
    assert state_path.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(state_path.parent)) == before


def test_inspect_of_a_missing_file(state_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no state file"):
        inspect(state_path)


def test_a_directory_as_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="is a directory"), Resumable(tmp_path):
        pass


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(StateWriteError, match="directory exists"),
        Resumable(tmp_path / "absent" / "job.state"),
    ):
        pass


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make `directory` unwritable for real: immutable for root, read-only for others."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", directory], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", directory], check=True)
    else:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with (
        unwritable(tmp_path),
        pytest.raises(StateWriteError, match="may write to it"),
        Resumable(tmp_path / "job.state"),
    ):
        pass


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"when": {1, 2}}, "['when']"),
        ({"deep": {"er": [1, object()]}}, "['deep']['er'][1]"),
        ({"nan": math.nan}, "['nan']"),
        ({"inf": [1.0, -math.inf]}, "['inf'][1]"),
        ({"big": 2**70}, "['big']"),
        ({"keys": {1: "a"}}, "['keys']"),
    ],
)
def test_unserialisable_state_names_the_key_and_loses_nothing_saved(
    state_path: Path, value: dict[str, object], where: str
) -> None:
    saved = make_job(state_path, 3)
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        r.state.update(value)
        for item in r.iterate(range(10**6)):  # the job's input: a refused run saves nothing
            if item == 6:
                break
    assert raised.value.key.startswith(where)
    assert f"r.state{where}" in str(raised.value)
    assert state_path.read_bytes() == saved  # the last good save stands


class Mode(enum.Enum):
    FAST = "fast"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    pass


@dataclasses.dataclass
class Cursor:
    page: int
    token: str


@dataclasses.dataclass
class Stats:
    mean: float


@pytest.mark.parametrize(
    ("value", "where", "advice"),
    [
        ({"last_run": datetime(2026, 1, 1, 12, 0)}, "['last_run']", "isoformat()"),
        ({"day": date(2026, 1, 1)}, "['day']", "isoformat()"),
        ({"batch": uuid.UUID(int=7)}, "['batch']", "str(value)"),
        ({"cursor": Cursor(3, "abc")}, "['cursor']", "dataclasses.asdict(value)"),
        ({"stats": Stats(math.nan)}, "['stats']", "dataclasses.asdict(value)"),
        ({"mode": Mode.FAST}, "['mode']", "value.value"),
        ({"level": Level.HIGH}, "['level']", "value.value"),
        ({"pair": (1, 2)}, "['pair']", "list(value)"),
        ({"a": {"b": [0, 1, 2, (3,)]}}, "['a']['b'][3]", "list(value)"),
        ({"tag": Tag("x")}, "['tag']", "str(value)"),
        ({"counts": collections.Counter(a=1)}, "['counts']", "dict(value)"),
        ({"ordered": collections.OrderedDict(a=1)}, "['ordered']", "dict(value)"),
        ({"frozen": frozenset({1})}, "['frozen']", "sorted(value)"),
        # Anything with tolist(), as numpy arrays have:
        ({"ids": array.array("i", [1, 2])}, "['ids']", "value.tolist()"),
        ({"rows": [{"id": 1}, {"id": 2, "at": datetime(2026, 1, 1)}]}, "['rows'][1]['at']", ""),
    ],
)
def test_a_value_that_would_come_back_as_another_type_is_refused_before_anything_is_written(
    state_path: Path, value: dict[str, object], where: str, advice: str
) -> None:
    saved = make_job(state_path, 3)
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        for _ in r.iterate(range(10**6)):
            r.state.update(value)
            r.save()
            break
    assert raised.value.key == where
    message = str(raised.value)
    assert message.startswith(f"r.state{where} is a")
    assert advice in message
    assert state_path.read_bytes() == saved  # the last good save stands
    assert inspect(state_path).position == 3


def test_a_key_that_is_not_a_str_is_refused_in_plain_english(state_path: Path) -> None:
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        r.state["by_id"] = {"x": 1, 3: "c"}
    assert raised.value.key == "['by_id'][3]"
    assert str(raised.value).startswith(
        "r.state['by_id'] has the key 3, an int: JSON objects have str keys only, so it "
        "would not come back as an int. Use str keys"
    )
    assert not state_path.exists()
    with pytest.raises(StateNotSerializableError) as raised, Resumable(state_path) as r:
        r.state["rows"] = [{"id": 1}, {"id": 2, 3: "c"}]
    assert raised.value.key == "['rows'][1][3]"
    assert str(raised.value).startswith("r.state['rows'][1] has the key 3, an int")


def test_a_state_of_a_dict_subclass_is_refused_as_a_whole(state_path: Path) -> None:
    with (
        pytest.raises(StateNotSerializableError, match=r"dict\(value\)") as raised,
        Resumable(state_path) as r,
    ):
        r.state = collections.OrderedDict(a=1)
    assert raised.value.key == ""


def test_a_keyed_job_refuses_a_bad_state_before_its_journal_is_written(state_path: Path) -> None:
    with pytest.raises(StateNotSerializableError), Resumable(state_path) as r:
        for item in r.iterate(["a", "b", "c"], key=str):
            if item == "b":
                r.state["when"] = datetime(2026, 1, 1)
                r.save()
    assert [p.name for p in state_path.parent.iterdir() if ".keys-" in p.name] == []


def test_plain_json_values_come_back_as_they_went_in(state_path: Path) -> None:
    value = {
        "s": "text",
        "i": -(2**63),
        "u": 2**64 - 1,
        "f": 1.5,
        "z": -0.0,
        "b": True,
        "n": None,
        "l": [1, [2, {"x": []}], {}],
        "deep": {"a": {"b": {"c": [None, False, "é"]}}},
        "rows": [{"id": 1, "ok": True}, {"id": 2, "tags": ["x"]}, {}],
    }
    make_job(state_path, 1, value)
    loaded = inspect(state_path).state
    assert loaded == value
    assert orjson.dumps(loaded, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        value, option=orjson.OPT_SORT_KEYS
    )
    assert type(loaded["b"]) is bool
    assert type(loaded["f"]) is float


def test_a_save_keeps_the_state_file_s_permissions(state_path: Path) -> None:
    """A state file made private stays private: saves replace it with one of the same mode."""
    make_job(state_path, 3)
    state_path.chmod(0o600)
    with Resumable(state_path, policy=NPolicy(1)) as r:
        for item in r.iterate(range(10**6)):
            if item == 6:
                break
    assert r.saves > 1
    assert state_path.stat().st_mode & 0o777 == 0o600
    assert state_path.with_name("job.state.bak").stat().st_mode & 0o777 == 0o600


def test_a_symlink_to_the_state_file_is_the_same_job(state_path: Path) -> None:
    """One lock for both names, and saves replace the file the link points to."""
    make_job(state_path, 3)
    link = state_path.with_name("link.state")
    link.symlink_to(state_path.name)
    with Resumable(link) as r:
        assert r.path == state_path
        with pytest.raises(StateLockedError), Resumable(state_path):
            pass
        for item in r.iterate(range(10**6)):
            assert item == 3  # resumed where the job stopped
            break
        r.state["via"] = "link"
        r.save()
    assert link.is_symlink()
    assert inspect(state_path).state == {"via": "link"}


def test_restart_refuses_a_directory_and_moves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "data.state"
    directory.mkdir()
    (directory / "precious.txt").write_text("x")
    with pytest.raises(StateFileError, match="is a directory"), Resumable(directory, restart=True):
        pass
    assert sorted(os.listdir(tmp_path)) == ["data.state", "data.state.lock"]
    assert (directory / "precious.txt").read_text() == "x"


def test_opening_the_same_file_twice_in_one_process_is_an_error(state_path: Path) -> None:
    with (
        Resumable(state_path),
        pytest.raises(StateLockedError, match="already open in this"),
        Resumable(str(state_path)),
    ):
        pass
    with Resumable(state_path):  # released on exit
        pass


def test_the_lock_is_released_when_entering_fails(state_path: Path) -> None:
    state_path.write_bytes(b"junk")
    with pytest.raises(StateFileError), Resumable(state_path):
        pass
    state_path.unlink()
    with Resumable(state_path):
        pass


def test_stale_temp_files_are_removed_on_start_and_others_left(state_path: Path) -> None:
    make_job(state_path, 3)
    stale = state_path.with_name(".job.state.4242.0123abcd.tmp")
    stale_backup = state_path.with_name(".job.state.bak.4242.0123abcd.tmp")
    other_job = state_path.with_name(".job.state2.4242.0123abcd.tmp")
    for path in (stale, stale_backup, other_job):
        path.write_bytes(b"half a sa")
    with Resumable(state_path):
        pass
    assert not stale.exists()
    assert not stale_backup.exists()
    assert other_job.exists()


def test_a_save_leaves_no_temp_file(state_path: Path) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    assert sorted(p.name for p in state_path.parent.iterdir()) == [
        "job.state",
        "job.state.bak",
        "job.state.lock",
    ]


def test_a_failed_save_raises_and_keeps_the_previous_state(state_path: Path) -> None:
    saved = make_job(state_path, 3)
    expected = r"could not save progress.*previous state file is intact"
    with (
        unwritable(state_path.parent),
        pytest.raises(StateWriteError, match=expected),
        Resumable(state_path) as r,
    ):
        for item in r.iterate(range(10**6)):
            if item == 6:
                break
        assert r.position == 6
    assert state_path.read_bytes() == saved
    assert not list(state_path.parent.glob(".*.tmp"))


def test_deleting_the_state_file_starts_over_even_with_a_backup_left(state_path: Path) -> None:
    make_job(state_path, 3)
    make_job(state_path, 5)
    state_path.unlink()
    assert state_path.with_name("job.state.bak").exists()
    with Resumable(state_path) as r:
        assert (r.position, r.runs) == (0, 1)


def damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def test_a_new_job_after_deleting_the_state_file_never_falls_back_to_the_old_backup(
    state_path: Path,
) -> None:
    """The old backup is moved aside at the new job's first save: damaging the new job's
    file then finds no backup of the wrong job to resume."""
    make_job(state_path, 3)
    old_backup = make_job(state_path, 5) and state_path.with_name("job.state.bak").read_bytes()
    state_path.unlink()
    make_job(state_path, 2)  # the new job's first save
    kept = sorted(state_path.parent.glob("job.state.reset-*.bak"))
    assert [path.read_bytes() for path in kept] == [old_backup]
    assert not state_path.with_name("job.state.bak").exists()
    damage(state_path)
    with pytest.raises(StateFileError, match=r"corrupt|not valid JSON"):
        inspect(state_path)


def test_restart_moves_the_earlier_job_aside_at_its_first_save(state_path: Path) -> None:
    make_job(state_path, 3)
    earlier = make_job(state_path, 5)
    earlier_backup = state_path.with_name("job.state.bak").read_bytes()
    with Resumable(state_path, restart=True) as r:
        assert r.position == 0
        assert state_path.read_bytes() == earlier  # nothing moved before the first save
        for item in r.iterate(range(10**6)):
            if item == 1:
                break
    aside = [path for path in state_path.parent.glob("job.state.reset-*") if path.suffix != ".bak"]
    assert [path.read_bytes() for path in aside] == [earlier]
    assert aside[0].with_name(aside[0].name + ".bak").read_bytes() == earlier_backup
    assert inspect(state_path).position == 1
    assert not state_path.with_name("job.state.bak").exists()  # none of this job's yet
    damage(state_path)
    with pytest.raises(StateFileError):
        inspect(state_path)


def test_a_run_whose_exit_never_ran_gives_back_the_handlers_and_the_lock_when_collected(
    state_path: Path,
) -> None:
    """A Resumable entered and dropped without its exit (a generator never closed, say):
    when the garbage collector takes it, on the main thread, the signal handlers from
    before it are back and the job opens again (the abandoned run saved nothing)."""
    before = signal.getsignal(signal.SIGTERM)
    run = Resumable(state_path)
    run.__enter__()
    assert signal.getsignal(signal.SIGTERM) != before
    del run
    gc.collect()
    assert signal.getsignal(signal.SIGTERM) == before
    with Resumable(state_path) as again:
        assert again.position == 0  # the lock was freed: it opens


def test_a_restart_stopped_before_its_first_save_leaves_the_earlier_job(state_path: Path) -> None:
    earlier = make_job(state_path, 5)
    run = Resumable(state_path, restart=True)
    run.__enter__()
    # As if killed: no exit runs. Its safety net frees the lock, as the kernel would.
    del run
    gc.collect()
    assert state_path.read_bytes() == earlier
    assert not list(state_path.parent.glob("job.state.reset-*"))
