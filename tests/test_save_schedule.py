"""When the loop saves, under a frozen clock moved with freezegun's tick()."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from freezegun import freeze_time

from resumable import (
    CalledTooOftenError,
    NPolicy,
    Policy,
    Resumable,
    SinceLastSave,
    TimePolicy,
    inspect,
)

# The loop checks the policy at least every this many items (docs/policies.md): a time
# policy's save can come up to that many items late.
MAX_ITEMS_BETWEEN_CHECKS = 1024


def save_positions(
    path: Path,
    policy: Policy | None,
    items: int,
    seconds_per_item: float,
    min_interval: float = 0.0,
    restart: bool = False,
) -> list[int]:
    """Run a loop whose items take `seconds_per_item` of frozen time; list where it saved."""
    positions: list[int] = []
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(path, policy=policy, min_interval=min_interval, restart=restart) as r,
    ):
        for _ in r.iterate(range(items)):
            frozen.tick(seconds_per_item)
            if r.saves > len(positions):  # a save happened at the last boundary
                positions.append(r.position)
                assert r.saves == len(positions), "two saves at one boundary"
    return positions


def test_the_seed_scenario_never_saves_twice_for_one_moment(state_path: Path) -> None:
    """Items take 1 s, save every 10 items or every 60 s: at item 60 there is one save."""
    positions = save_positions(state_path, NPolicy(10) | TimePolicy(60), 61, 1.0)
    assert positions == [10, 20, 30, 40, 50, 60]


def test_a_time_save_restarts_the_item_count_of_a_switch(state_path: Path) -> None:
    # The first 8 items take 4 s: the time policy fires at 32 s (item 8). Later items are
    # fast, so NPolicy(10) fires next, counting from item 8: at item 18, not at item 10.
    positions: list[int] = []
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=NPolicy(10) | TimePolicy(30)) as r,
    ):
        for index in r.iterate(range(30)):
            frozen.tick(4 if index < 8 else 0.01)
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [8, 18, 28]


def test_timepolicy_saves_at_the_first_boundary_after_the_interval(state_path: Path) -> None:
    assert save_positions(state_path, TimePolicy(60), 200, 1.0) == [60, 120, 180]
    assert save_positions(state_path, TimePolicy(60), 100, 0.25, restart=True) == []
    assert save_positions(state_path, TimePolicy(2.5), 10, 1.0, restart=True) == [3, 6, 9]


def test_npolicy_saves_every_n_items(state_path: Path) -> None:
    assert save_positions(state_path, NPolicy(7), 30, 0.0) == [7, 14, 21, 28]


def test_the_default_policy_saves_about_once_a_second(state_path: Path) -> None:
    assert save_positions(state_path, None, 50, 0.1)[:3] == [10, 20, 30]
    # Items slower than a second: every item is saved, so a crash redoes one item.
    assert save_positions(state_path, None, 6, 3.0, restart=True) == [1, 2, 3, 4, 5]


def test_the_loop_reads_the_clock_freezegun_controls(state_path: Path) -> None:
    """Without a tick nothing time-based happens; a tick is seen within the check bound."""
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60)) as r,
    ):
        for index in r.iterate(range(20_000)):
            if index == 10_000:
                assert r.saves == 0
                frozen.tick(61)
            if r.saves:
                break
        assert 10_000 < r.position <= 10_000 + MAX_ITEMS_BETWEEN_CHECKS + 1


def test_a_clock_moved_backwards_counts_as_no_time(state_path: Path) -> None:
    with (
        freeze_time("2026-01-01 12:00", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60)) as r,
    ):
        for index in r.iterate(range(100)):
            frozen.move_to("2026-01-01 11:00" if index == 5 else "2026-01-01 11:00:30")
        assert r.saves == 1  # only the completion save


def test_after_the_clock_went_back_time_counts_again_from_the_next_check(
    state_path: Path,
) -> None:
    """Items of 1 s, the clock set back 1000 s during item 10: the jump is noticed at the
    check after item 16, the 8 s measured up to the check before it are kept, and the next
    save comes 60 s of measured time after the loop started: 52 items later, not 1000 s
    later, and not 60 s after the jump was noticed (which threw away what was measured)."""
    positions: list[int] = []
    with (
        freeze_time("2026-01-01 12:00:00", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60)) as r,
    ):
        for index in r.iterate(range(200)):
            if index == 10:
                frozen.move_to("2026-01-01 11:43:20")
            else:
                frozen.tick(1)
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [68, 128, 188]


class CheckEveryItem(Policy):
    """Never saves; asks after every item, so that every item boundary reads the clock."""

    def should_save(self, since: SinceLastSave) -> bool:
        return False


def test_a_small_move_back_of_the_clock_counts_as_no_time_not_as_negative_time(
    state_path: Path,
) -> None:
    """Items of 1 s, with a check at every item; during item 10 the clock goes back 5 s
    instead of moving on. That item took no time: the minute is full after item 61 (it was
    counted as -5 s, and the save came at item 66)."""
    positions: list[int] = []
    with (
        freeze_time("2026-01-01 12:00:00", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60) | CheckEveryItem()) as r,
    ):
        for index in r.iterate(range(130)):
            frozen.tick(-5 if index == 10 else 1)
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [61, 121]


def test_an_explicit_save_after_the_clock_went_back_counts_the_jump_as_no_time(
    state_path: Path,
) -> None:
    with (
        freeze_time("2026-01-01 12:00:00", tick=False) as frozen,
        Resumable(state_path, min_interval=10) as r,
    ):
        r.save()
        frozen.move_to("2026-01-01 11:00:00")
        with pytest.raises(CalledTooOftenError, match=r"came 0\.000 s after"):
            r.save()
        frozen.tick(10)
        r.save()  # 10 s after the jump: allowed
        assert r.saves == 2


def test_min_interval_defers_a_policy_save_to_the_next_check(state_path: Path) -> None:
    """The first policy save is never held (there is no save to be too close to); the
    next ones wait for min_interval, and come at the next check after it."""
    positions = save_positions(state_path, NPolicy(1), 12, 1.0, min_interval=5)
    assert positions == [1, 6, 11]


def test_after_a_save_held_by_min_interval_the_policy_is_asked_again_after_one_item(
    state_path: Path,
) -> None:
    """Items of 1 s, min_interval=1.5: each held save comes at the first item after the
    1.5 s (the second), not at a later one."""
    positions = save_positions(state_path, NPolicy(1), 12, 1.0, min_interval=1.5)
    assert positions == [1, 3, 5, 7, 9, 11]


def test_min_interval_does_not_hold_the_first_policy_save_from_the_opening(
    state_path: Path,
) -> None:
    """As for an explicit save: min_interval is the time between two saves. The first
    policy save of NPolicy(1), items of 1 s, min_interval=5, comes after item 1 (it was
    held 5 s from the opening of the with block: no save in 3 items)."""
    assert save_positions(state_path, NPolicy(1), 3, 1.0, min_interval=5) == [1]


def test_setup_before_the_loop_is_no_time_of_the_loop(state_path: Path) -> None:
    """The policy's time counts from the start of the loop, not from the opening of the
    with block: 50 s of setup before iterate() bring no save at item 10 of 1 s items."""
    positions: list[int] = []
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60)) as r,
    ):
        frozen.tick(50)
        for _ in r.iterate(range(130)):
            frozen.tick(1)
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [60, 120]


def test_a_frozen_clock_entered_inside_the_with_block_is_the_one_counted(
    state_path: Path,
) -> None:
    """freeze_time entered after the opening: the loop's time starts on the frozen clock
    (the opening's reading was the real clock's, and the first item looked decades long)."""
    positions: list[int] = []
    with (
        Resumable(state_path, policy=TimePolicy(60)) as r,
        freeze_time("2026-01-01", tick=False) as frozen,
    ):
        for _ in r.iterate(range(130)):
            frozen.tick(1)
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [60, 120]


def test_an_explicit_save_too_soon_raises(state_path: Path) -> None:
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=NPolicy(10**6), min_interval=10) as r,
    ):
        r.save()
        frozen.tick(9.5)
        with pytest.raises(CalledTooOftenError, match=r"9\.500 s after the previous save"):
            r.save()
        frozen.tick(0.5)
        r.save()
        assert r.saves == 2


@pytest.mark.parametrize(
    ("bad", "error", "says"),
    [
        ("5", TypeError, "takes a number of seconds"),
        (True, TypeError, "takes a number of seconds"),
        (-1, ValueError, "finite number >= 0"),
        (math.nan, ValueError, "finite number >= 0"),
        (math.inf, ValueError, "finite number >= 0"),
    ],
)
def test_min_interval_rejects_what_is_no_number_of_seconds(
    state_path: Path, bad: object, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        Resumable(state_path, min_interval=bad)  # type: ignore[arg-type]
    assert not state_path.exists()


def test_exit_and_completion_saves_ignore_min_interval(state_path: Path) -> None:
    with (
        freeze_time("2026-01-01", tick=False),
        Resumable(state_path, policy=NPolicy(1), min_interval=3600) as r,
    ):
        for index in r.iterate(range(5)):
            if index == 3:
                break
        assert r.saves == 1  # the first policy save, after item 1; the next wait an hour
    assert inspect(state_path).position == 3
    with freeze_time("2026-01-01", tick=False), Resumable(state_path, min_interval=3600) as r:
        list(r.iterate(range(5)))
        assert r.saves == 1
    assert inspect(state_path).finished


def test_a_save_resets_what_the_policy_sees(state_path: Path) -> None:
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=NPolicy(5)) as r,
    ):
        for index in r.iterate(range(12)):
            frozen.tick(1)
            if index == 3:
                r.save()  # four items done: the next policy save is five items later
        assert r.saves == 3  # explicit at 3, policy at 8, completion at 12


def test_the_time_policy_reads_the_clock_that_freezegun_moves(state_path: Path) -> None:
    """2000 items under a clock that stands still bring no time save; one tick does, at
    the next check. A clock captured at import (a default argument bound to the real
    time.monotonic) would never see the tick."""
    saved_at = None
    with (
        freeze_time("2026-01-01", tick=False) as frozen,
        Resumable(state_path, policy=TimePolicy(60), quiet=True) as r,
    ):
        for index in r.iterate(range(4000)):
            if r.saves:
                saved_at = index
                break
            if index == 2000:
                assert r.saves == 0
                frozen.tick(60)
    assert saved_at is not None
    assert 2000 < saved_at <= 2000 + MAX_ITEMS_BETWEEN_CHECKS


def test_saved_at_comes_from_the_frozen_wall_clock(state_path: Path) -> None:
    with freeze_time("2026-03-04 05:06:07", tick=False), Resumable(state_path) as r:
        list(r.iterate(range(3)))
    assert inspect(state_path).saved_at.isoformat() == "2026-03-04T05:06:07+00:00"


def test_the_example_in_docs_testing_md(tmp_path: Path) -> None:
    """docs/testing.md promises 4 saves: at items 60, 120, 180 and on completion."""
    with freeze_time("2026-01-01", tick=False) as frozen:
        with Resumable(tmp_path / "job.state", policy=TimePolicy(60)) as r:
            for _ in r.iterate(range(200)):
                frozen.tick(1)
        assert r.saves == 4


class HalfWay(Policy):
    """Saves every 10 items and answers items_until_check with `answer(items left)`."""

    def __init__(self, answer: Callable[[int], object]) -> None:
        self.answer = answer

    def should_save(self, since: SinceLastSave) -> bool:
        return since.items >= 10

    def items_until_check(self, since: SinceLastSave) -> int:
        return self.answer(10 - since.items)  # type: ignore[return-value]


@pytest.mark.parametrize("in_switch", [False, True])
@pytest.mark.parametrize(
    ("answer", "shown"), [(lambda left: left / 2, "4.5"), (lambda left: None, "None")]
)
def test_a_policy_answering_no_whole_number_gets_a_clear_error(
    state_path: Path, answer: Callable[[int], object], shown: str, in_switch: bool
) -> None:
    """A float or None from items_until_check is named, with the policy; the items done
    before it are saved."""
    seen: list[int] = []
    policy: Policy = HalfWay(answer)
    if in_switch:
        policy = NPolicy(1000) | policy
    with pytest.raises(TypeError) as raised, Resumable(state_path, policy=policy) as r:
        for item in r.iterate(range(100)):
            seen.append(item)
    message = str(raised.value)
    assert f"items_until_check() returned {shown};" in message
    assert "whole number of items" in message
    assert ("NPolicy(1000) | " in message) is in_switch
    assert "HalfWay" in message
    assert seen == [0]  # the first check comes after one item
    assert inspect(state_path).position == 1


class Count:
    """A whole number that is not an int, as numpy's integers are: it has __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_a_policy_may_answer_any_whole_number_type(state_path: Path) -> None:
    positions: list[int] = []
    with Resumable(state_path, policy=HalfWay(lambda left: Count(max(left, 1)))) as r:
        for _ in r.iterate(range(35)):
            if r.saves > len(positions):
                positions.append(r.position)
    assert positions == [10, 20, 30]
