"""Resumable(clock=...): the loop's time comes from the clock given, read only at checks;
policies hear of every save (on_save), combine with & and count quantities of the user's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from freezegun import freeze_time

from resumable import (
    ExactChecks,
    NPolicy,
    Policy,
    QuantityPolicy,
    Resumable,
    SinceLastSave,
    TimePolicy,
)


class Clock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def saves_by_item(r: Resumable) -> list[int]:
    return [record.position for record in r.save_log]


def test_a_clock_given_drives_the_time_policy(state_path: Path) -> None:
    clock = Clock()
    with Resumable(state_path, policy=TimePolicy(60), clock=clock) as r:
        for _ in r.iterate(range(130)):
            clock.now += 1
    assert saves_by_item(r) == [60, 120, 130]
    assert [record.seconds for record in r.save_log] == [60.0, 120.0, 130.0]


def test_the_clock_given_is_read_once_per_check_not_per_item(state_path: Path) -> None:
    clock = Clock()
    with Resumable(state_path, policy=TimePolicy(3600), clock=clock) as r:
        for _ in r.iterate(range(100_000)):
            pass
    assert 0 < clock.reads < 100_000 / 500


def test_the_default_clock_is_freezeguns_and_a_clock_given_is_not(state_path: Path) -> None:
    clock = Clock()
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60) | ExactChecks(), clock=clock) as r,
    ):
        for _ in r.iterate(range(10)):
            frozen.tick(100)  # not the loop's clock
    assert saves_by_item(r) == [10]  # the completion only


def test_time_machine_drives_the_loop_through_clock_time_time(state_path: Path) -> None:
    """time-machine does not control time.monotonic, the default clock: pass time.time."""
    time_machine = pytest.importorskip("time_machine")
    with (
        time_machine.travel("2026-01-01 00:00", tick=False) as traveller,
        Resumable(state_path, policy=TimePolicy(60), clock=time.time) as r,
    ):
        for _ in r.iterate(range(130)):
            traveller.shift(1)
    assert saves_by_item(r) == [60, 120, 130]
    assert r.save_log[0].saved_at.isoformat() == "2026-01-01T00:01:00+00:00"


@pytest.mark.parametrize("bad", ["monotonic", 5])
def test_clock_must_be_callable(state_path: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="clock takes a function that returns seconds"):
        Resumable(state_path, clock=bad)  # type: ignore[arg-type]


def test_a_clock_that_returns_no_number_is_refused_when_the_loop_starts(state_path: Path) -> None:
    def wall_clock_text() -> str:
        return "12:00"

    with (
        pytest.raises(TypeError, match=r"the clock returned '12:00'; it must return"),
        Resumable(state_path, clock=wall_clock_text) as r,  # type: ignore[arg-type]
    ):
        r.iterate(range(3))
    assert not state_path.exists()


def test_exact_checks_make_a_time_save_come_at_the_first_item_after_the_interval(
    state_path: Path,
) -> None:
    """5,000 fast items, then slow ones: without exact checks the loop, predicting from the
    fast pace, checks hundreds of items later; with them, the save is at the first
    boundary after 60 s."""
    clock = Clock()

    def run(policy: Policy, path: Path) -> list[float]:
        with Resumable(path, policy=policy, clock=clock) as r:
            for index in r.iterate(range(5_020)):
                clock.now += 0.001 if index < 5_000 else 30
        return [record.seconds for record in r.save_log]

    assert run(TimePolicy(60) | ExactChecks(), state_path)[0] == pytest.approx(65.0)
    late = run(TimePolicy(60), state_path.with_name("late.state"))[0]
    assert late > 120  # documented: up to a chunk of the new, slow items late


class Counting(Policy):
    """Saves every 4 items; keeps its own count of saves heard of, and what they covered."""

    def __init__(self) -> None:
        self.heard: list[SinceLastSave] = []

    def should_save(self, since: SinceLastSave) -> bool:
        return since.items >= 4

    def items_until_check(self, since: SinceLastSave) -> int:
        return max(1, 4 - since.items)

    def on_save(self, since: SinceLastSave) -> None:
        self.heard.append(since)


def test_on_save_hears_of_every_save_whatever_asked_for_it(state_path: Path) -> None:
    policy = Counting()
    clock = Clock()
    with Resumable(state_path, policy=policy | TimePolicy(3600), clock=clock) as r:
        r.save()
        for item in r.iterate(range(10)):
            clock.now += 1
            if item == 5:
                r.save()  # five items done
    reasons = [record.reason for record in r.save_log]
    assert reasons == ["explicit", "policy", "explicit", "policy", "completion"]
    assert [since.items for since in policy.heard] == [0, 4, 1, 4, 1]
    assert [since.seconds for since in policy.heard] == [0.0, 4.0, 2.0, 3.0, 1.0]


def test_a_quantity_policy_saves_by_what_the_body_adds_and_every_save_resets_it(
    state_path: Path,
) -> None:
    written = QuantityPolicy(1000)
    with Resumable(state_path, policy=written) as r:
        for item in r.iterate(range(40)):
            written.add(300 if item < 10 else 50)
            if item == 20:
                r.save()
    # 300 an item: saved after items 4 and 8 (1200 each time); then 600 and 8 items of
    # 50; the explicit save in the body of item 20 resets the count, and the 19 items left
    # add 950: no policy save before the completion.
    assert [(s.reason, s.position) for s in r.save_log] == [
        ("policy", 4),
        ("policy", 8),
        ("policy", 18),
        ("explicit", 20),
        ("completion", 40),
    ]


def test_all_of_saves_once_every_member_is_due(state_path: Path) -> None:
    clock = Clock()
    with Resumable(state_path, policy=NPolicy(10) & TimePolicy(30), clock=clock) as r:
        for item in r.iterate(range(100)):
            clock.now += 1 if item < 50 else 10
    # 1 s items: the time decides (30 s); 10 s items: the count does (10 items).
    assert saves_by_item(r) == [30, 60, 70, 80, 90, 100]
