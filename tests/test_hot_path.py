"""The per-item path stays free of library code: a regression guard that counts calls.

Timing tests are flaky on shared machines; counting is exact. Speed itself is measured
by the benchmarks (nox -s bench, docs/performance.md).
"""

from __future__ import annotations

import math
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest

import resumable
from resumable import NPolicy, Policy, Resumable, SinceLastSave, TimePolicy

ITEMS = 100_000
PACKAGE = str(Path(resumable.__file__).parent)
CHUNK_CAP = 1024  # the loop checks at least every this many items (docs/policies.md)
# A check whose gap starts at one item and grows at most twofold per check reaches the cap
# after this many checks: 1, 2, 4, ..., 1024.
RAMP_CHECKS = CHUNK_CAP.bit_length()
# Library calls one check makes with a two-policy switch: the switch asks both policies
# twice (should_save, items_until_check), plus the chunk, the clock, the boundary (16 today).
CALLS_PER_CHECK = 20
CALLS_ONCE = 100  # iterate(), the first and last chunk, the completion save (about 50 today)


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
    checks = math.ceil(ITEMS / CHUNK_CAP) + RAMP_CHECKS
    assert calls <= checks * CALLS_PER_CHECK + CALLS_ONCE  # 2280; 1 per item would be 100,000


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


class AskEveryItem(Policy):
    """Never saves, and asks after every item: a check per item."""

    def should_save(self, since: SinceLastSave) -> bool:
        return False


def library_opcodes(state_path: Path, items: int) -> int:
    """The bytecode instructions the library runs in a loop over `items` items."""
    opcodes = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal opcodes
        if event == "call":
            if not frame.f_code.co_filename.startswith(PACKAGE):
                return None
            frame.f_trace_opcodes = True
        elif event == "opcode":
            opcodes += 1
        return trace

    with Resumable(state_path, policy=AskEveryItem(), signals=()) as r:
        previous = sys.gettrace()  # coverage's tracer under nox -s coverage: put it back
        sys.settrace(trace)
        try:
            for _ in r.iterate(range(items)):
                pass
        finally:
            sys.settrace(previous)
    return opcodes


def write_state_with_failures_ahead(path: Path, positions: range) -> None:
    """A state file at position 1 that records failures at `positions` (format version 1,
    as the library wrote it before failure records had a journal)."""
    failed = [
        {
            "position": position,
            "error_type": "TimeoutError",
            "message": "timed out",
            "attempts": 1,
            "failed_at": "2026-11-26T10:40:17+00:00",
        }
        for position in positions
    ]
    document = {
        "format_version": 1,
        "progress": {"kind": "position", "position": 1, "finished": False, "failed": failed},
        "state": {},
        "runs": 1,
        "created_at": "2026-11-26T09:12:01+00:00",
        "saved_at": "2026-11-26T10:40:17+00:00",
        "writer": "resumable-loop 0.1.0",
    }
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    path.write_bytes(canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode())


def test_failure_records_ahead_of_the_position_cost_a_check_nothing(tmp_path: Path) -> None:
    """Records of failures at positions the run has not reached are looked at when the run
    passes them, not at every check: a check costs the same with one record ahead as with
    five hundred (it went through all of them)."""
    # Python 3.12 traces no opcode of the first traced loop in a process: warm up first.
    write_state_with_failures_ahead(tmp_path / "warm-up.state", range(10_000, 10_001))
    library_opcodes(tmp_path / "warm-up.state", 10)
    growth = []
    for ahead in (1, 500):
        state = tmp_path / f"{ahead}.state"
        cost = []
        for items in (500, 1_500):
            # Beyond the input: never passed.
            write_state_with_failures_ahead(state, range(10_000, 10_000 + ahead))
            cost.append(library_opcodes(state, items))
        growth.append(cost[1] - cost[0])  # what 1,000 more checks cost
    assert abs(growth[1] - growth[0]) < 1_000, growth


# r.amap makes one Python call of its own per result (its async generator's step): the
# input is read, numbered and queued in C, and the watermark moves on inline when results
# come in order. A worker is woken per batch of calls, not per call, and the queue topped
# up when the loop has nothing to hand out. Before, the input's generator and the
# watermark's count made it about 3.1, and waking a worker and topping up per result
# about ten.
AMAP_CALLS_PER_RESULT = 1.5


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_amap_makes_a_bounded_number_of_library_calls_per_result(
    state_path: Path, ordered: bool
) -> None:
    import asyncio

    results = 20_000
    calls = 0

    def count_library_calls(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            calls += 1

    async def instant(number: int) -> int:
        return number

    async def main() -> int:
        handed = 0
        async with Resumable(state_path, policy=NPolicy(10**9) | TimePolicy(3600)) as r:
            loop = r.amap(instant, range(results), concurrency=100, ordered=ordered)
            sys.setprofile(count_library_calls)
            try:
                async for _ in loop:
                    handed += 1
            finally:
                sys.setprofile(None)
        return handed

    assert asyncio.run(main()) == results
    assert results < calls <= results * AMAP_CALLS_PER_RESULT
