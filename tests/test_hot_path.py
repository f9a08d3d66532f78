"""The per-item path stays free of library code: a regression guard that counts calls.

Timing tests are flaky on shared machines; counting is exact. Speed itself is measured
by the benchmarks (nox -s bench, docs/performance.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import resumable
from resumable import NPolicy, Policy, Resumable, SinceLastSave, TimePolicy

ITEMS = 100_000
PACKAGE = str(Path(resumable.__file__).parent)


def numbers() -> Iterator[int]:
    yield from range(ITEMS)


@pytest.mark.parametrize(
    "make_input",
    [lambda: list(range(ITEMS)), numbers, lambda: iter(list(range(ITEMS)))],
    ids=["list", "gen", "iterator"],
)
def test_the_loop_runs_no_library_python_code_per_item(state_path: Path, make_input: Any) -> None:
    calls = 0

    def count_library_calls(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            calls += 1

    items = make_input()
    with Resumable(state_path, policy=NPolicy(10**9) | TimePolicy(3600)) as r:
        sys.setprofile(count_library_calls)
        try:
            for _ in r.iterate(items):
                pass
        finally:
            sys.setprofile(None)
    # A check every (at most) 1024 items, a few calls each, plus the completion save.
    assert calls < ITEMS / 20


def test_the_clock_is_read_once_per_check_not_per_item(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    real_monotonic = time.monotonic

    def counting_monotonic() -> float:
        nonlocal reads
        reads += 1
        return real_monotonic()

    monkeypatch.setattr(time, "monotonic", counting_monotonic)
    with Resumable(state_path, policy=TimePolicy(3600)) as r:
        for _ in r.iterate(range(ITEMS)):
            pass
    assert 0 < reads < ITEMS / 500


def test_the_policy_is_asked_once_per_check_not_per_item(state_path: Path) -> None:
    class Counting(Policy):
        asked = 0

        def should_save(self, since: SinceLastSave) -> bool:
            Counting.asked += 1
            return False

        def items_until_check(self, since: SinceLastSave) -> int:
            return 10**9

    with Resumable(state_path, policy=Counting()) as r:
        for _ in r.iterate(range(ITEMS)):
            pass
    assert 0 < Counting.asked < ITEMS / 500
