"""Save policies: small objects that decide when progress is written.

A policy never reads a clock. The controller (`Resumable`) reads the monotonic clock at call
time, builds a `SinceLastSave` snapshot and asks the policy two questions: is a save due
now (`should_save`), and how many more items may finish before it needs to ask again
(`items_until_check`). The second answer is what keeps the loop cheap: between checks the
loop only counts.

Write your own policy by subclassing `Policy`::

    class EveryMegabyte(Policy):
        def __init__(self, r: Resumable) -> None:
            self.r = r

        def should_save(self, since: SinceLastSave) -> bool:
            return self.r.state.get("unsaved_bytes", 0) >= 1_000_000
"""

from __future__ import annotations

import abc
import math
import operator
from typing import NamedTuple, SupportsIndex

__all__ = ["NPolicy", "Policy", "PolicySwitch", "SinceLastSave", "TimePolicy", "default_policy"]

#: What `items_until_check` answers when it cannot tell; the controller caps it.
AS_MANY_AS_YOU_LIKE = 2**62


class SinceLastSave(NamedTuple):
    """What happened since the last save (or since the run started), as a policy sees it.

    A named tuple rather than a frozen dataclass: the loop builds one per check, and a
    named tuple is built in half the time.

    Attributes:
        items: items finished since the last save.
        seconds: seconds since the last save, by the monotonic clock (never negative).
        seconds_per_item: the recent pace, measured between the last two checks; ``None``
            until it can be measured, ``0.0`` when the clock did not move (frozen time).
    """

    items: int
    seconds: float
    seconds_per_item: float | None = None


class Policy(abc.ABC):
    """Base class of save policies; combine policies with ``|``."""

    @abc.abstractmethod
    def should_save(self, since: SinceLastSave) -> bool:
        """Return True when the progress should be saved now."""

    def items_until_check(self, since: SinceLastSave) -> int:
        """Return how many more items may finish before `should_save` is asked again.

        The default, 1, asks after every item: always correct, but it reads the clock once
        per item. Override it when the policy can tell that a save cannot be due sooner.
        """
        return 1

    def __or__(self, other: Policy) -> PolicySwitch:
        if not isinstance(other, Policy):
            return NotImplemented
        return PolicySwitch(self, other)


class NPolicy(Policy):
    """Save after every `n` finished items."""

    def __init__(self, n: SupportsIndex) -> None:
        if isinstance(n, bool) or not hasattr(type(n), "__index__"):
            raise TypeError(f"NPolicy(n) takes a whole number of items, got {n!r}")
        count = operator.index(n)  # an int from numpy's integers too
        if count < 1:
            raise ValueError(f"NPolicy(n) needs n >= 1 (save every n items), got {count}")
        self.n = count

    def should_save(self, since: SinceLastSave) -> bool:
        return since.items >= self.n

    def items_until_check(self, since: SinceLastSave) -> int:
        left = self.n - since.items
        return left if left > 1 else 1

    def __repr__(self) -> str:
        return f"NPolicy({self.n})"


class TimePolicy(Policy):
    """Save when at least `seconds` have passed since the last save.

    The time is checked when an item finishes, so a save comes at the first item boundary
    after the interval. The loop does not read the clock after every item: from the pace it
    measured, it predicts how many items fit before the interval ends and checks then.
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"TimePolicy(seconds) takes a number of seconds, got {seconds!r}")
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"TimePolicy(seconds) needs a finite number > 0, got {seconds}")
        self.seconds = float(seconds)

    def should_save(self, since: SinceLastSave) -> bool:
        return since.seconds >= self.seconds

    def items_until_check(self, since: SinceLastSave) -> int:
        pace = since.seconds_per_item
        if not pace:
            return AS_MANY_AS_YOU_LIKE
        remaining = self.seconds - since.seconds
        if remaining <= 0:
            return 1
        # Rounding down errs early: a check that comes one item too soon costs one more
        # check, while one that comes too late would save late. (Clock readings carry
        # float error; freezegun's monotonic clock counts from 1970.) int() rounds a
        # positive number down, as math.floor does, at half the cost.
        return int(remaining / pace) or 1

    def __repr__(self) -> str:
        return f"TimePolicy({self.seconds:g})"


class PolicySwitch(Policy):
    """Save when any member policy says so: the either-or of policies.

    All members look at the same `SinceLastSave`, and every save resets it, so whichever
    member fires, the others start counting again: one moment never causes two saves.
    ``a | b | c`` flattens into one switch of three members.
    """

    def __init__(self, *policies: Policy) -> None:
        members: list[Policy] = []
        for policy in policies:
            if isinstance(policy, PolicySwitch):
                members.extend(policy.policies)
            elif isinstance(policy, Policy):
                members.append(policy)
            else:
                raise TypeError(f"PolicySwitch takes Policy objects, got {policy!r}")
        if not members:
            raise ValueError("PolicySwitch needs at least one policy")
        self.policies: tuple[Policy, ...] = tuple(members)

    # Plain loops rather than any() and min() over generator expressions: the loop asks
    # at every check, and a generator per question cost more than the members' answers.
    def should_save(self, since: SinceLastSave) -> bool:
        for policy in self.policies:  # noqa: SIM110 (any() would build a generator)
            if policy.should_save(since):
                return True
        return False

    def items_until_check(self, since: SinceLastSave) -> int:
        gap = AS_MANY_AS_YOU_LIKE
        for policy in self.policies:
            member_gap = policy.items_until_check(since)
            if type(member_gap) is not int:
                try:
                    member_gap = operator.index(member_gap)  # numpy's integers
                except TypeError:
                    return member_gap  # not a count (None, a float): the loop reports it
            if member_gap < gap:
                gap = member_gap
        return gap

    def __repr__(self) -> str:
        return " | ".join(repr(policy) for policy in self.policies)


def default_policy() -> Policy:
    """The policy used when none is given: save about once a second.

    After a crash this bounds the redone work to about one second, or one item when items
    take longer than that, while a fast loop pays for one save per second.
    """
    return TimePolicy(1.0)


def as_policy(policy: Policy | None) -> Policy:
    """Return `policy`, or the default policy for None; reject anything else clearly."""
    if policy is None:
        return default_policy()
    if isinstance(policy, Policy):
        return policy
    raise TypeError(
        f"policy must be a Policy such as NPolicy(100) | TimePolicy(60), got {policy!r}"
    )
