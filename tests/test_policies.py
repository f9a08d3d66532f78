"""Policies decide from a SinceLastSave snapshot alone; they never read a clock."""

from __future__ import annotations

import math

import pytest

from resumable import (
    AllOf,
    ExactChecks,
    NPolicy,
    Policy,
    PolicySwitch,
    QuantityPolicy,
    SinceLastSave,
    TimePolicy,
)
from resumable.policies import NO_LIMIT


class Count:
    """A whole number that is not an int, as numpy's integers are: it has __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_npolicy_saves_once_n_items_finished() -> None:
    policy = NPolicy(10)
    assert not policy.should_save(SinceLastSave(items=9, seconds=999.0))
    assert policy.should_save(SinceLastSave(items=10, seconds=0.0))


def test_npolicy_asks_again_exactly_when_a_save_can_be_due() -> None:
    assert NPolicy(10).items_until_check(SinceLastSave(items=3, seconds=0.0)) == 7
    assert NPolicy(10).items_until_check(SinceLastSave(items=12, seconds=0.0)) == 1


def test_timepolicy_saves_once_the_interval_passed() -> None:
    policy = TimePolicy(60)
    assert not policy.should_save(SinceLastSave(items=10**9, seconds=59.999))
    assert policy.should_save(SinceLastSave(items=0, seconds=60.0))


def test_timepolicy_predicts_the_item_at_which_the_interval_ends() -> None:
    since = SinceLastSave(items=20, seconds=20.0, seconds_per_item=1.0)
    assert TimePolicy(60).items_until_check(since) == 40
    half_second_items = SinceLastSave(items=0, seconds=0.0, seconds_per_item=0.5)
    assert TimePolicy(60).items_until_check(half_second_items) == 120


def test_timepolicy_without_a_measured_pace_leaves_the_gap_to_the_controller() -> None:
    unknown = SinceLastSave(items=5, seconds=1.0, seconds_per_item=None)
    frozen = SinceLastSave(items=5, seconds=1.0, seconds_per_item=0.0)
    assert TimePolicy(60).items_until_check(unknown) > 10**9
    assert TimePolicy(60).items_until_check(frozen) > 10**9


def test_timepolicy_overdue_asks_at_the_next_item() -> None:
    since = SinceLastSave(items=5, seconds=61.0, seconds_per_item=1.0)
    assert TimePolicy(60).items_until_check(since) == 1


def test_npolicy_two_items_before_its_count_asks_again_after_two() -> None:
    """The boundary of the gap: two items left is a gap of two, one left a gap of one."""
    assert NPolicy(10).items_until_check(SinceLastSave(items=8, seconds=0.0)) == 2
    assert NPolicy(10).items_until_check(SinceLastSave(items=9, seconds=0.0)) == 1


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (60.5, 1),  # overdue by less than a second: still the next item, never a negative gap
        (59.5, 5),  # less than a second left: as many items as fit in it
        (59.95, 1),  # less than one item's time left: the next item, never a gap of 0
    ],
)
def test_timepolicy_near_the_end_of_its_interval_asks_at_the_last_item_that_fits(
    seconds: float, expected: int
) -> None:
    since = SinceLastSave(items=5, seconds=seconds, seconds_per_item=0.1)
    assert TimePolicy(60).items_until_check(since) == expected


def test_or_builds_a_switch_and_chains_flatten() -> None:
    combined = NPolicy(10) | TimePolicy(60) | NPolicy(3)
    assert isinstance(combined, PolicySwitch)
    assert len(combined.policies) == 3
    assert repr(combined) == "NPolicy(10) | TimePolicy(60) | NPolicy(3)"


def test_switch_saves_when_any_member_says_so() -> None:
    switch = PolicySwitch(NPolicy(10), TimePolicy(60))
    assert switch.should_save(SinceLastSave(items=10, seconds=0.0))
    assert switch.should_save(SinceLastSave(items=1, seconds=60.0))
    assert not switch.should_save(SinceLastSave(items=9, seconds=59.0))


def test_switch_asks_again_at_the_earliest_member_check() -> None:
    since = SinceLastSave(items=5, seconds=10.0, seconds_per_item=1.0)
    assert (NPolicy(10) | TimePolicy(60)).items_until_check(since) == 5
    assert (NPolicy(100) | TimePolicy(60)).items_until_check(since) == 50


def test_a_switch_takes_the_smallest_answer_whatever_its_integer_type() -> None:
    class NumpyLikeAnswer(Policy):  # answers with a whole number that is not an int
        def should_save(self, since: SinceLastSave) -> bool:
            return False

        def items_until_check(self, since: SinceLastSave) -> int:
            return Count(5)  # type: ignore[return-value]

    since = SinceLastSave(items=0, seconds=0.0)
    assert (NumpyLikeAnswer() | NPolicy(3)).items_until_check(since) == 3
    assert (NPolicy(8) | NumpyLikeAnswer()).items_until_check(since) == 5
    # AllOf takes the largest, as an int too.
    assert type((NPolicy(3) & NumpyLikeAnswer()).items_until_check(since)) is int
    assert (NPolicy(3) & NumpyLikeAnswer()).items_until_check(since) == 5
    assert (NPolicy(8) & NumpyLikeAnswer()).items_until_check(since) == 8


def test_a_custom_policy_needs_only_should_save() -> None:
    class EveryOtherItem(Policy):
        def should_save(self, since: SinceLastSave) -> bool:
            return since.items >= 2

    policy = EveryOtherItem()
    assert policy.should_save(SinceLastSave(items=2, seconds=0.0))
    assert policy.items_until_check(SinceLastSave(items=0, seconds=0.0)) == 1
    assert len((policy | NPolicy(5)).policies) == 2


@pytest.mark.parametrize("bad", [0, -1])
def test_npolicy_rejects_counts_below_one(bad: int) -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        NPolicy(bad)


@pytest.mark.parametrize("bad", [1.5, "10", True, None])
def test_npolicy_rejects_non_integers(bad: object) -> None:
    with pytest.raises(TypeError, match="whole number"):
        NPolicy(bad)  # type: ignore[arg-type]


def test_npolicy_takes_integers_of_other_types_as_an_int() -> None:
    policy = NPolicy(Count(10))
    assert type(policy.n) is int
    assert repr(policy) == "NPolicy(10)"


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan])
def test_timepolicy_rejects_intervals_that_are_not_finite_and_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number > 0"):
        TimePolicy(bad)


def test_timepolicy_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="number of seconds"):
        TimePolicy("60")  # type: ignore[arg-type]


def test_switch_rejects_non_policies_and_emptiness() -> None:
    with pytest.raises(TypeError, match="Policy objects"):
        PolicySwitch(NPolicy(1), 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        PolicySwitch()


def test_or_with_a_non_policy_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        NPolicy(1) | 5  # type: ignore[operator]


def test_and_builds_an_all_of_that_saves_when_every_member_says_so() -> None:
    both = NPolicy(10) & TimePolicy(60)
    assert isinstance(both, AllOf)
    assert not both.should_save(SinceLastSave(items=10, seconds=59.0))
    assert not both.should_save(SinceLastSave(items=9, seconds=600.0))
    assert both.should_save(SinceLastSave(items=10, seconds=60.0))


def test_all_of_asks_again_when_the_last_member_could_be_due() -> None:
    since = SinceLastSave(items=5, seconds=10.0, seconds_per_item=1.0)
    assert (NPolicy(10) & TimePolicy(60)).items_until_check(since) == 50
    assert (NPolicy(100) & TimePolicy(60)).items_until_check(since) == 95
    # One member due already: the other decides.
    due = SinceLastSave(items=20, seconds=10.0, seconds_per_item=1.0)
    assert (NPolicy(10) & TimePolicy(60)).items_until_check(due) == 50


def test_and_chains_flatten_and_bind_tighter_than_or() -> None:
    chained = NPolicy(1) & NPolicy(2) & NPolicy(3)
    assert len(chained.policies) == 3
    mixed = NPolicy(5) | NPolicy(10) & TimePolicy(60)
    assert isinstance(mixed, PolicySwitch)
    assert repr(mixed) == "NPolicy(5) | NPolicy(10) & TimePolicy(60)"
    assert (
        repr((NPolicy(5) | NPolicy(6)) & TimePolicy(60))
        == "(NPolicy(5) | NPolicy(6)) & TimePolicy(60)"
    )


def test_and_with_a_non_policy_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        NPolicy(1) & 5  # type: ignore[operator]
    with pytest.raises(TypeError, match="AllOf takes Policy objects"):
        AllOf(NPolicy(1), 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        AllOf()


def test_no_limit_is_a_named_answer() -> None:
    frozen = SinceLastSave(items=5, seconds=1.0, seconds_per_item=0.0)
    assert TimePolicy(60).items_until_check(frozen) == NO_LIMIT
    assert repr(TimePolicy(60).items_until_check(frozen)) == "NO_LIMIT"
    assert (TimePolicy(60) | TimePolicy(30)).items_until_check(frozen) == NO_LIMIT
    assert (NPolicy(9) | TimePolicy(30)).items_until_check(frozen) == 4


def test_on_save_reaches_every_member_of_a_combination() -> None:
    heard: list[tuple[str, SinceLastSave]] = []

    class Listening(Policy):
        def __init__(self, name: str) -> None:
            self.name = name

        def should_save(self, since: SinceLastSave) -> bool:
            return False

        def on_save(self, since: SinceLastSave) -> None:
            heard.append((self.name, since))

    since = SinceLastSave(items=3, seconds=2.0)
    (Listening("a") | Listening("b") & Listening("c")).on_save(since)
    assert heard == [("a", since), ("b", since), ("c", since)]
    NPolicy(3).on_save(since)  # the built-in policies need not hear of it


def test_a_quantity_policy_counts_what_it_is_given_until_a_save() -> None:
    written = QuantityPolicy(1000)
    written.add(400)
    assert not written.should_save(SinceLastSave(items=2, seconds=0.0))
    # 200 a item so far, 600 to go: three more items at the earliest.
    assert written.items_until_check(SinceLastSave(items=2, seconds=0.0)) == 3
    written.add(600)
    assert written.should_save(SinceLastSave(items=3, seconds=0.0))
    written.on_save(SinceLastSave(items=3, seconds=0.0))
    assert written.unsaved == 0
    assert not written.should_save(SinceLastSave(items=0, seconds=0.0))
    assert written.items_until_check(SinceLastSave(items=0, seconds=0.0)) == 1
    assert repr(written) == "QuantityPolicy(1000)"


def test_a_quantity_policy_asks_after_the_next_item_when_it_cannot_predict_or_is_due() -> None:
    written = QuantityPolicy(1000)
    # Items done but nothing added yet: no amount per item to predict from.
    assert written.items_until_check(SinceLastSave(items=4, seconds=0.0)) == 1
    written.add(1000)  # due already (its save may have been held by min_interval)
    assert written.items_until_check(SinceLastSave(items=4, seconds=0.0)) == 1
    nearly = QuantityPolicy(1000)
    nearly.add(950)  # 95 an item: the 50 left come within the next item (0.53 of one)
    assert nearly.items_until_check(SinceLastSave(items=10, seconds=0.0)) == 1
    later = QuantityPolicy(1000)
    later.add(700)  # 70 an item: the 300 left are 4.3 items' worth, rounded down
    assert later.items_until_check(SinceLastSave(items=10, seconds=0.0)) == 4


@pytest.mark.parametrize(
    ("bad", "error"), [("5", TypeError), (True, TypeError), (0, ValueError), (math.inf, ValueError)]
)
def test_a_quantity_policy_rejects_what_is_no_limit(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"QuantityPolicy\(limit\)"):
        QuantityPolicy(bad)  # type: ignore[arg-type]


def test_exact_checks_never_saves_and_asks_after_every_item() -> None:
    exact = ExactChecks()
    since = SinceLastSave(items=10**6, seconds=10**6, seconds_per_item=1.0)
    assert not exact.should_save(since)
    assert exact.items_until_check(since) == 1
    assert (TimePolicy(60) | exact).items_until_check(SinceLastSave(0, 0.0, 0.001)) == 1
