"""Save policies: small objects that decide when progress is written.

A policy never reads a clock. The checkpoint (`resumable._checkpoint`) reads the loop's
clock at call time, builds a `SinceLastSave` snapshot and asks the policy two questions: is
a save due now (`should_save`), and how many more items may finish before it needs to ask
again (`items_until_check`). The second answer is what keeps the loop cheap: between checks
the loop only counts. After every save, whatever asked for it, the policy hears of it
(`on_save`): a policy that keeps counts of its own starts them again there.

``a | b`` saves when either says so (`PolicySwitch`), ``a & b`` when both do (`AllOf`).
Write your own policy by subclassing `Policy`; to save by a quantity of your own (bytes
written, rows inserted), use `QuantityPolicy`::

    written = QuantityPolicy(5_000_000)  # about every 5 MB

    with Resumable("job.state", policy=written | TimePolicy(60)) as r:
        for record in r.iterate(records):
            written.add(out.write(record))
"""

from __future__ import annotations

import abc
import math
import operator
from typing import Final, NamedTuple, SupportsIndex

__all__ = [
    "NO_LIMIT",
    "AllOf",
    "ExactChecks",
    "NPolicy",
    "Policy",
    "PolicySwitch",
    "QuantityPolicy",
    "SinceLastSave",
    "TimePolicy",
    "default_policy",
]


class _NoLimit(int):
    """An int that shows its name, so that a test that compares with it says what it is."""

    def __repr__(self) -> str:
        return "NO_LIMIT"


#: What `items_until_check` answers when it sets no limit on the next check: as many items
#: as the loop likes (it still checks at least every 1024 items, growing its gap at most
#: twofold per check). `TimePolicy` answers it while it has no pace to predict from.
NO_LIMIT: Final[int] = _NoLimit(2**62)


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
    """Base class of save policies; combine them with ``|`` (either) and ``&`` (both)."""

    @abc.abstractmethod
    def should_save(self, since: SinceLastSave) -> bool:
        """Return True when the progress should be saved now."""

    def items_until_check(self, since: SinceLastSave) -> int:
        """Return how many more items may finish before `should_save` is asked again.

        The default, 1, asks after every item: always correct, but it reads the clock once
        per item. Override it when the policy can tell that a save cannot be due sooner.
        """
        return 1

    def on_save(self, since: SinceLastSave) -> None:  # noqa: B027 (optional to override)
        """Called after every save, whatever asked for it: this policy, another member of
        a combination, ``r.save()``, the end of the input or the exit. `since` is what the
        save covered. The default does nothing; a policy that counts something of its own
        starts counting again here."""

    def __or__(self, other: Policy) -> PolicySwitch:
        if not isinstance(other, Policy):
            return NotImplemented
        return PolicySwitch(self, other)

    def __and__(self, other: Policy) -> AllOf:
        if not isinstance(other, Policy):
            return NotImplemented
        return AllOf(self, other)


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
            return NO_LIMIT
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


def _members(policies: tuple[Policy, ...], kind: type[Policy], name: str) -> tuple[Policy, ...]:
    """The members of a combination of `kind`: nested ones of the same kind flattened."""
    members: list[Policy] = []
    for policy in policies:
        if type(policy) is kind:
            members.extend(policy.policies)  # type: ignore[attr-defined]
        elif isinstance(policy, Policy):
            members.append(policy)
        else:
            raise TypeError(f"{name} takes Policy objects, got {policy!r}")
    if not members:
        raise ValueError(f"{name} needs at least one policy")
    return tuple(members)


def _whole(gap: object) -> int | None:
    """A member's `items_until_check` answer as an int; None when it is not a count."""
    if type(gap) is int:
        return gap
    try:
        return operator.index(gap)  # type: ignore[arg-type]  # numpy's integers
    except TypeError:
        return None


class PolicySwitch(Policy):
    """Save when any member policy says so: the either-or of policies.

    All members look at the same `SinceLastSave`, and every save resets it, so whichever
    member fires, the others start counting again: one moment never causes two saves.
    ``a | b | c`` flattens into one switch of three members.
    """

    def __init__(self, *policies: Policy) -> None:
        self.policies: tuple[Policy, ...] = _members(policies, PolicySwitch, "PolicySwitch")

    # Plain loops rather than any() and min() over generator expressions: the loop asks
    # at every check, and a generator per question cost more than the members' answers.
    def should_save(self, since: SinceLastSave) -> bool:
        for policy in self.policies:  # noqa: SIM110 (any() would build a generator)
            if policy.should_save(since):
                return True
        return False

    def items_until_check(self, since: SinceLastSave) -> int:
        gap = NO_LIMIT
        for policy in self.policies:
            member_gap = policy.items_until_check(since)
            if type(member_gap) is not int:
                whole = _whole(member_gap)
                if whole is None:
                    return member_gap  # not a count (None, a float): the loop reports it
                member_gap = whole
            if member_gap < gap:
                gap = member_gap
        return gap

    def on_save(self, since: SinceLastSave) -> None:
        for policy in self.policies:
            policy.on_save(since)

    def __repr__(self) -> str:
        return " | ".join(repr(policy) for policy in self.policies)


class AllOf(Policy):
    """Save when every member policy says so: ``NPolicy(100) & TimePolicy(60)`` saves once
    100 items finished and at least 60 s passed since the last save.

    ``a & b & c`` flattens into one of three members. ``&`` binds tighter than ``|``, as
    in Python: ``a | b & c`` is ``a | (b & c)``.
    """

    def __init__(self, *policies: Policy) -> None:
        self.policies: tuple[Policy, ...] = _members(policies, AllOf, "AllOf")

    def should_save(self, since: SinceLastSave) -> bool:
        for policy in self.policies:  # noqa: SIM110 (all() would build a generator)
            if not policy.should_save(since):
                return False
        return True

    def items_until_check(self, since: SinceLastSave) -> int:
        """The largest of the members' answers: no save is due before every member's is."""
        gap = 1
        for policy in self.policies:
            member_gap = policy.items_until_check(since)
            if type(member_gap) is not int:
                whole = _whole(member_gap)
                if whole is None:
                    return member_gap  # not a count (None, a float): the loop reports it
                member_gap = whole
            if member_gap > gap:
                gap = member_gap
        return gap

    def on_save(self, since: SinceLastSave) -> None:
        for policy in self.policies:
            policy.on_save(since)

    def __repr__(self) -> str:
        return " & ".join(
            f"({policy!r})" if isinstance(policy, PolicySwitch) else repr(policy)
            for policy in self.policies
        )


class QuantityPolicy(Policy):
    """Save once `limit` of a quantity of your own (bytes, rows) was added since the last
    save. Add to it in the loop's body with `add`; every save starts it again from 0,
    whatever asked for the save.

    It predicts the next check from the amount per item so far, as `TimePolicy` does from
    the pace, so an item much bigger than the ones before is seen at the next check.
    """

    def __init__(self, limit: float) -> None:
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise TypeError(f"QuantityPolicy(limit) takes a number, got {limit!r}")
        if not math.isfinite(limit) or limit <= 0:
            raise ValueError(f"QuantityPolicy(limit) needs a finite number > 0, got {limit}")
        self.limit = limit
        self.unsaved: float = 0  # added since the last save

    def add(self, amount: float) -> None:
        """Count `amount` more of the quantity (the bytes an item wrote, say)."""
        self.unsaved += amount

    def should_save(self, since: SinceLastSave) -> bool:
        return self.unsaved >= self.limit

    def items_until_check(self, since: SinceLastSave) -> int:
        if since.items <= 0 or self.unsaved <= 0:
            return 1
        remaining = self.limit - self.unsaved
        if remaining <= 0:
            return 1
        return int(remaining * since.items / self.unsaved) or 1  # rounded down: early

    def on_save(self, since: SinceLastSave) -> None:
        self.unsaved = 0

    def __repr__(self) -> str:
        return f"QuantityPolicy({self.limit:g})"


class ExactChecks(Policy):
    """Never asks for a save; asks to be checked after every item. For tests:
    ``policy | ExactChecks()`` makes every item boundary a check, so a save comes at
    exactly the first item its policy allows, whatever the pace (the loop then reads the
    clock once per item, which a long job should not pay for)."""

    def should_save(self, since: SinceLastSave) -> bool:
        return False

    def __repr__(self) -> str:
        return "ExactChecks()"


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
