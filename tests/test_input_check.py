"""A resume checks that the input is the one the job started with: length and first items."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

import orjson
import pytest

from resumable import InputChangedError, Resumable, inspect

OnChange = Literal["raise", "restart", "continue"]


def run(
    path: Path,
    items: Iterable[object],
    stop_at: int | None = None,
    on_change: OnChange = "raise",
) -> list[object]:
    """Loop over `items`, breaking before the body of the item at index `stop_at`."""
    seen: list[object] = []
    with Resumable(path) as r:
        for item in r.iterate(items, on_change=on_change):
            if len(seen) == stop_at:
                break
            seen.append(item)
    return seen


def recorded_input(path: Path) -> dict[str, object]:
    record = orjson.loads(path.read_bytes())["progress"]["input"]
    assert isinstance(record, dict)
    return record


def test_a_reordered_list_of_the_same_length_is_caught(state_path: Path) -> None:
    urls = [f"https://example.org/{n}" for n in range(10)]
    run(state_path, urls, stop_at=4)
    before = state_path.read_bytes()
    with pytest.raises(InputChangedError, match="its first 4 items differ from last time's"):
        run(state_path, list(reversed(urls)))
    assert state_path.read_bytes() == before  # nothing saved over it


def test_a_list_with_new_items_is_caught_by_its_length(state_path: Path) -> None:
    run(state_path, list(range(10)), stop_at=4)
    with pytest.raises(InputChangedError) as caught:
        run(state_path, list(range(15)))
    message = str(caught.value)
    assert "it had 10 items last time and has 15 now" in message
    assert "on_change='restart'" in message  # and says how to proceed
    assert "key=" in message


def test_restart_runs_a_changed_input_from_its_first_item_and_keeps_the_state(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Resumable(state_path) as r:
        r.state["note"] = "kept"
        for item in r.iterate(["a", "b", "c", "d"]):
            if item == "c":
                break
    with caplog.at_level(logging.WARNING, logger="resumable"), Resumable(state_path) as r:
        seen = list(r.iterate(["x", "y", "z"], on_change="restart"))
        assert r.state == {"note": "kept"}
    assert seen == ["x", "y", "z"]
    assert "the input changed (it had 4 items last time and has 3 now); starting over" in (
        caplog.text
    )
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (3, True)


def test_continue_goes_on_by_position_and_adopts_the_new_input(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(state_path, list(range(10)), stop_at=4)
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert run(state_path, list(range(12)), stop_at=2, on_change="continue") == [4, 5]
    assert "going on at item 4 as on_change='continue' asks" in caplog.text
    assert recorded_input(state_path)["length"] == 12
    assert run(state_path, list(range(12))) == list(range(6, 12))  # no complaint now


def test_continue_runs_the_items_a_finished_job_s_input_gained(state_path: Path) -> None:
    assert run(state_path, [0, 1, 2]) == [0, 1, 2]
    assert inspect(state_path).finished
    assert run(state_path, [0, 1, 2, 3, 4], on_change="continue") == [3, 4]
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (5, True)


def test_a_generator_with_other_first_items_is_caught(state_path: Path) -> None:
    run(state_path, (n for n in range(100)), stop_at=30)
    with pytest.raises(InputChangedError, match="its first 16 items differ"):
        run(state_path, (n + 1 for n in range(100)))
    assert inspect(state_path).position == 30


def test_restart_with_a_generator_hands_out_the_items_taken_for_the_check(
    state_path: Path,
) -> None:
    run(state_path, (n for n in range(100)), stop_at=30)
    assert run(state_path, (-n for n in range(5)), on_change="restart") == [0, -1, -2, -3, -4]


def test_a_job_finished_over_a_generator_retries_only_its_failed_item_from_a_longer_list(
    state_path: Path,
) -> None:
    """A generator has no length, so none was recorded: a job finished over one, with a
    failed item recorded, given a list with the same first items and more after them,
    retries the failed item and hands out nothing past its end (it stays finished: the
    items past the end are another job's, restart=True is the way to run them)."""

    def run_recording(items: Iterable[int], failing: int | None) -> list[int]:
        seen = []
        with Resumable(state_path) as r:
            for item in r.iterate(items, on_error="record"):
                seen.append(item)
                with r.attempt():
                    if item == failing:
                        raise ValueError(item)
        return seen

    assert run_recording((n for n in range(3)), failing=1) == [0, 1, 2]
    assert run_recording([0, 1, 2, 3, 4], failing=None) == [1]
    snapshot = inspect(state_path)
    assert (snapshot.position, snapshot.finished) == (3, True)


def test_a_longer_generator_with_the_same_start_resumes(state_path: Path) -> None:
    run(state_path, iter(range(10)), stop_at=6)
    assert run(state_path, iter(range(12))) == list(range(6, 12))


def test_a_file_whose_first_lines_changed_is_caught(state_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {n}\n" for n in range(50)))
    with data.open() as handle:
        run(state_path, handle, stop_at=20)
    data.write_text("".join(f"row {n}\n" for n in range(50)))
    with data.open() as handle, pytest.raises(InputChangedError, match="first 16 items differ"):
        run(state_path, handle)


def test_only_done_items_are_fingerprinted(state_path: Path) -> None:
    items = list(range(100))
    run(state_path, items, stop_at=5)
    assert recorded_input(state_path)["head_items"] == 5
    # Items after the position may change freely: they are not done.
    assert run(state_path, [*items[:5], *range(500, 595)], stop_at=20) == list(range(500, 520))
    assert recorded_input(state_path)["head_items"] == 16


class Opaque:
    """An item of a class with no known form: its repr shows its address, new every run."""

    def __init__(self, number: int) -> None:
        self.number = number


class OtherOpaque(Opaque):
    """Another such class."""


def test_items_of_other_classes_are_fingerprinted_by_their_type(state_path: Path) -> None:
    run(state_path, [Opaque(n) for n in range(10)], stop_at=4)
    assert recorded_input(state_path)["head_items"] == 4
    with pytest.raises(InputChangedError, match="its first 4 items differ"):
        run(state_path, [OtherOpaque(n) for n in range(10)])
    assert len(run(state_path, [Opaque(n) for n in range(10)])) == 6  # no false alarm


class DetachedRow:
    """An item whose repr raises, as an ORM object detached from its session does."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        raise RuntimeError("DetachedInstanceError: the session is closed")


def test_an_item_whose_repr_raises_runs_like_any_other(state_path: Path) -> None:
    rows = [DetachedRow(n) for n in range(5)]
    assert [row.number for row in run(state_path, rows, stop_at=2)] == [0, 1]  # type: ignore[attr-defined]
    assert [row.number for row in run(state_path, rows)] == [2, 3, 4]  # type: ignore[attr-defined]


class BrokenNumber:
    """A number-like item whose conversion to an int raises."""

    def __index__(self) -> int:
        raise RuntimeError("no number today")

    def __repr__(self) -> str:
        return "BrokenNumber()"


def test_an_item_that_cannot_be_fingerprinted_leaves_the_first_items_unchecked(
    state_path: Path,
) -> None:
    items = [BrokenNumber() for _ in range(6)]
    assert len(run(state_path, items, stop_at=3)) == 3
    assert recorded_input(state_path) == {"length": 6, "head_items": 0, "head_hash": None}
    assert len(run(state_path, items)) == 3  # the length still is compared, and matches


def test_a_changed_set_inside_an_item_is_caught(state_path: Path) -> None:
    run(state_path, [{"id": n, "tags": {"news", "sport"}} for n in range(5)], stop_at=3)
    with pytest.raises(InputChangedError, match="its first 3 items differ"):
        run(state_path, [{"id": n, "tags": {"news", "tech"}} for n in range(5)])


CHILD_JOB = """
import dataclasses, datetime, decimal, enum, pathlib, sys
from resumable import Resumable

class Color(enum.Enum):
    RED = 1

@dataclasses.dataclass
class Page:
    url: str
    tags: set

def record(n):
    return {
        "url": f"https://example.org/{n}",
        "tags": {f"tag-{t}" for t in range(20)},
        "seen": frozenset({n, "x", 2.5, None}),
        "when": datetime.datetime(2026, 1, 1, n),
        "path": pathlib.Path(f"/data/{n}"),
        "price": decimal.Decimal("1.10"),
        "color": Color.RED,
        "page": Page(str(n), {"a", "b", "c", "d"}),
        "row": (n, None, True, b"raw", 3j, [1.5, -0.0]),
    }

with Resumable(sys.argv[1]) as r:
    for item in r.iterate([record(n) for n in range(10)]):
        if item["url"].endswith(sys.argv[2]):
            break
        print(item["url"])
"""


def test_the_same_items_match_in_another_interpreter_with_other_string_hashing(
    state_path: Path, tmp_path: Path
) -> None:
    """Items holding sets of strings: their order, and so their repr, changes with
    PYTHONHASHSEED; their fingerprint does not."""
    script = tmp_path / "job.py"
    script.write_text(CHILD_JOB)

    def run_child(seed: str, stop: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(script), str(state_path), stop],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return [line.rsplit("/", 1)[1] for line in done.stdout.splitlines()]

    assert run_child("1", "/4") == ["0", "1", "2", "3"]
    assert run_child("2", "never") == ["4", "5", "6", "7", "8", "9"]
    assert inspect(state_path).finished


BIG_ITEMS = {
    "8 MB bytes": lambda: bytes(8_000_000),
    "8 MB str": lambda: "x" * 8_000_000,
    "a list of a million ints": lambda: list(range(1_000_000)),
}


@pytest.mark.parametrize("make", BIG_ITEMS.values(), ids=BIG_ITEMS)
def test_fingerprinting_big_items_reads_a_bounded_part_of_them(
    state_path: Path, make: Callable[[], object]
) -> None:
    items = [make()] * 3
    tracemalloc.start()
    try:
        run(state_path, items)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak:,} bytes"


FROM_BEFORE = Path(__file__).parent / "fixtures" / "v1-fingerprint.state"


def test_a_record_of_an_earlier_version_is_compared_by_length_then_recorded_anew(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tests/fixtures/v1-fingerprint.state was written before fingerprints had a version,
    when they hashed the items' reprs: its first 4 of 10 URLs are done."""
    shutil.copy(FROM_BEFORE, state_path)
    urls = [f"https://example.org/page/{n}" for n in range(10)]
    with pytest.raises(InputChangedError, match="it had 10 items last time and has 11 now"):
        run(state_path, [*urls, "https://example.org/page/10"])
    with caplog.at_level(logging.INFO, logger="resumable"):
        assert run(state_path, urls, stop_at=2) == urls[4:6]
    assert "recorded by an earlier version" in caplog.text
    assert recorded_input(state_path)["head_items"] == 6
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resumable"):
        with pytest.raises(InputChangedError, match="its first 6 items differ"):
            run(state_path, list(reversed(urls)))
        assert run(state_path, urls) == urls[6:]
    assert "earlier version" not in caplog.text


def test_a_state_file_from_before_input_checks_resumes_and_starts_recording(
    state_path: Path,
) -> None:
    run(state_path, list(range(10)), stop_at=4)
    document = orjson.loads(state_path.read_bytes())
    del document["progress"]["input"]
    rewrite_with_checksum(state_path, document)
    assert run(state_path, list(range(20)), stop_at=1) == [4]  # nothing to compare with
    assert recorded_input(state_path)["length"] == 20


def test_a_finished_job_given_a_changed_input_says_so(state_path: Path) -> None:
    run(state_path, ["a", "b"])
    with pytest.raises(InputChangedError, match="had 2 items last time and has 3 now"):
        run(state_path, ["a", "b", "c"])
    assert run(state_path, ["a", "b", "c"], on_change="restart") == ["a", "b", "c"]


def test_a_changing_input_over_three_runs(state_path: Path) -> None:
    first = [f"id-{n}" for n in range(8)]
    assert run(state_path, first, stop_at=3) == first[:3]
    second = [*first, "id-8"]  # one item more: caught, then accepted
    with pytest.raises(InputChangedError):
        run(state_path, second)
    assert run(state_path, second, stop_at=2, on_change="continue") == ["id-3", "id-4"]
    third = ["new", *second]  # a new first item: caught by length and by the fingerprint
    with pytest.raises(InputChangedError):
        run(state_path, third)
    assert run(state_path, third, on_change="restart") == third


def test_on_change_takes_one_of_three_words(state_path: Path) -> None:
    with Resumable(state_path) as r, pytest.raises(ValueError, match="'raise', 'restart'"):
        r.iterate([1, 2], on_change="ignore")  # type: ignore[call-overload]


def rewrite_with_checksum(path: Path, document: dict[str, object]) -> None:
    """Write `document` as a valid state file (an older writer's, say)."""
    document.pop("checksum", None)
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    checksum = f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()
    path.write_bytes(canonical[:-1] + checksum)


def test_a_refused_on_change_leaves_iterate_to_be_called_again(state_path: Path) -> None:
    with Resumable(state_path) as r:
        with pytest.raises(ValueError, match="on_change must be one of"):
            r.iterate([1, 2], on_change="maybe")  # type: ignore[call-overload]
        assert list(r.iterate([1, 2])) == [1, 2]


@pytest.mark.parametrize("make", [list, tuple, lambda r: r], ids=["list", "tuple", "range"])
def test_an_iterator_passed_in_goes_on_from_where_it_is(
    state_path: Path, make: Callable[[range], Iterable[int]]
) -> None:
    """An iterator handed to iterate() may have been advanced already: a resume skips the
    done items from where it is, as a for loop would go on, never from its input's start."""

    def advanced() -> Iterator[int]:
        source = iter(make(range(10)))
        next(source)  # the caller took item 0 for itself
        return source

    assert run(state_path, advanced(), stop_at=3) == [1, 2, 3]
    assert run(state_path, advanced()) == [4, 5, 6, 7, 8, 9]
