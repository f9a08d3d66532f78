"""Testing your own loops: a clock you move by hand, and the saves a loop made.

Installed with resumable-loop, this module is a pytest plugin (the ``pytest11`` entry point
``resumable``): every test can ask for the `fake_clock` fixture, with nothing to configure.

::

    from resumable import NPolicy, TimePolicy
    from resumable.testing import run_loop


    def test_saves_every_minute_or_every_100_items(tmp_path, fake_clock):
        saves = run_loop(
            tmp_path / "job.state",
            range(300),
            policy=NPolicy(100) | TimePolicy(60),
            clock=fake_clock,
            seconds_per_item=1.0,
        )
        assert [save.position for save in saves] == [60, 120, 180, 240, 300]

The fake clock is what the loop reads only because it is passed as ``clock=``: it changes
no global time, so it works beside freezegun or time-machine, and with neither.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from resumable._checkpoint import SaveRecord
from resumable._resumable import Resumable
from resumable.policies import ExactChecks, Policy, default_policy

__all__ = ["FakeClock", "fake_clock", "run_loop"]

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that moves only when told to: ``Resumable(path, clock=clock)``.

    Calling it returns the time in seconds; `advance` moves it on, exactly (no real time
    passes, none is read).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _seconds(start, "FakeClock(start)")

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The time the clock shows, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` on (0 or more: a monotonic clock never goes back)."""
        step = _seconds(seconds, "FakeClock.advance(seconds)")
        if step < 0:
            raise ValueError(
                f"FakeClock.advance(seconds) needs seconds >= 0 (a monotonic clock never "
                f"goes back), got {seconds}"
            )
        self._now += step

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:g})"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} needs a finite number of seconds, got {value}")
    return float(value)


def run_loop(
    path: str | os.PathLike[str],
    items: Iterable[T],
    *,
    policy: Policy | None = None,
    clock: FakeClock | None = None,
    seconds_per_item: float | Callable[[T], float] = 0.0,
    body: Callable[[Resumable, T], object] | None = None,
    min_interval: float = 0.0,
    exact_checks: bool = False,
    **iterate_options: Any,
) -> list[SaveRecord]:
    """Run ``for item in r.iterate(items)`` to its end and return the run's saves
    (`Resumable.save_log`).

    Args:
        path: the state file; a test's ``tmp_path / "job.state"``.
        items: the input.
        policy: the policy under test (default: the library's).
        clock: the clock each item moves on; a new `FakeClock` when not given.
        seconds_per_item: how long each item takes on `clock`: a number of seconds, or a
            function of the item that returns one (items that slow down, that jitter).
            The clock moves after the body ran, as real work would. With ``batch=``,
            the item is a batch.
        body: called as ``body(r, item)`` for each item before the clock moves: work of
            the test's own, ``r.save()``, ``r.state`` updates, a ``QuantityPolicy.add``.
        min_interval: as for `Resumable`.
        exact_checks: check the policy after every item (``policy | ExactChecks()``), so
            that a save comes at exactly the first item its policy allows, whatever the
            pace. Without it the loop predicts from the pace when to check, as in
            production, and a time save can come later when items slow down.
        iterate_options: passed to `Resumable.iterate` (``key=``, ``batch=``, ...).
    """
    if clock is None:
        clock = FakeClock()
    if exact_checks:
        policy = (policy if policy is not None else default_policy()) | ExactChecks()
    duration = seconds_per_item
    with Resumable(path, policy=policy, min_interval=min_interval, clock=clock) as r:
        for item in r.iterate(items, **iterate_options):
            if body is not None:
                body(r, item)
            clock.advance(duration(item) if callable(duration) else duration)
    return r.save_log


try:
    import pytest
except ImportError:  # resumable.testing works without pytest; the fixture needs it
    pass
else:

    @pytest.fixture
    def fake_clock() -> FakeClock:
        """A `FakeClock` at 0 s: pass it as ``Resumable(path, clock=fake_clock)`` and move
        it with ``fake_clock.advance(seconds)``."""
        return FakeClock()
