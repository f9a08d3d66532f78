"""A model of the whole library, checked by Hypothesis against a real state file.

The machine runs one job over ``range(N)`` with a save policy drawn once, under a frozen
clock (freezegun, ``tick=False``) that only its rules move. It drives the loop by hand,
as a for statement would: ``next()`` hands out an item, whose body then "runs" until the
next ``next()`` (the item is then done) or until the run ends some other way. A rule
processes items, raises in the body, breaks, sends ctrl+c, crashes, restarts the job or
lets time pass; after every step the saved state is compared with the model.

The policy is wrapped in `Recording`, which answers exactly as the drawn policy does and
notes each question the loop asks, so the model knows when the loop checked the policy.

The crash bound asserted, with gap = the items whose body ended in the crashed run minus
the saved position (the items the next run does again):

- ``NPolicy(k)``: gap <= k. At most k - 1 items are done since the last save, plus the
  item in flight when its body had ended before the loop asked for the next one. (Between
  two checks the loop hands out no more items than ``items_until_check`` allowed, which
  ``NPolicy`` answers exactly; that is asserted too.)
- ``TimePolicy(t)``: every unsaved item's body ended less than t seconds before the loop's
  last policy check (or before the open, if the loop has not checked yet): at that check
  the policy saw less than t seconds since the last save, and those items ended after it.
  So gap <= the items whose body ended after (time of the last check - t).

  Counted back from the crash, "the items of the last t seconds plus the one in flight"
  is no bound: the loop reads the clock only at item boundaries, and only at the item
  counts it predicted from the pace, so time passing inside the item in flight, or a jump
  in the pace, lets unsaved items grow older than t (by up to one chunk of items, as
  docs/policies.md says). Hypothesis finds an example within a few steps: three items
  that take no time, one second passes in the fourth, crash: two items to redo, none of
  which ended in the last second.
"""

from __future__ import annotations

import gc
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resumable import NPolicy, Policy, Resumable, SinceLastSave, StateSnapshot, TimePolicy, inspect

from jobs.harness import DEFAULT_SIGNALS, Handler

N = 50
SIGNALS = DEFAULT_SIGNALS
T = TypeVar("T")


@dataclass(frozen=True)
class PolicySpec:
    """The drawn policy: NPolicy(every), TimePolicy(seconds), or both joined with ``|``."""

    every: int | None
    seconds: int | None

    def build(self) -> Policy:
        members: list[Policy] = []
        if self.every is not None:
            members.append(NPolicy(self.every))
        if self.seconds is not None:
            members.append(TimePolicy(self.seconds))
        policy = members[0]
        for member in members[1:]:
            policy = policy | member
        return policy

    def due(self, since: SinceLastSave) -> bool:
        """Whether a save is due, as the docs define the policies."""
        by_count = self.every is not None and since.items >= self.every
        by_time = self.seconds is not None and since.seconds >= self.seconds
        return by_count or by_time


POLICIES = st.one_of(
    st.builds(PolicySpec, every=st.integers(1, 8), seconds=st.none()),
    st.builds(PolicySpec, every=st.none(), seconds=st.integers(1, 12)),
    st.builds(PolicySpec, every=st.integers(1, 8), seconds=st.integers(1, 12)),
)


@dataclass(frozen=True)
class Check:
    """One time the loop asked the policy whether to save."""

    since: SinceLastSave
    due: bool


class Recording(Policy):
    """The drawn policy, answering as it does, with a record of the loop's questions."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.checks: list[Check] = []
        self.until = 1  # the last items_until_check answer (the first chunk is one item)

    def should_save(self, since: SinceLastSave) -> bool:
        due = self.policy.should_save(since)
        self.checks.append(Check(since, due))
        return due

    def items_until_check(self, since: SinceLastSave) -> int:
        self.until = self.policy.items_until_check(since)
        return self.until


def no_interrupt(action: Callable[[], T]) -> T:
    """Run `action`; a KeyboardInterrupt from it is a test failure, not a stop of pytest."""
    try:
        return action()
    except KeyboardInterrupt as error:
        raise AssertionError(f"unexpected KeyboardInterrupt: {error!r}") from None


class JobModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="resumable-model-"))
        self.path = self.directory / "job.state"
        self.freezer = freeze_time("2026-01-01", tick=False)
        self.frozen = self.freezer.start()
        self.clock = 0  # seconds of frozen time since the machine started
        self.handlers: dict[int, Handler] = {s: signal.getsignal(s) for s in SIGNALS}
        self.spec = PolicySpec(every=1, seconds=None)  # replaced by the drawn one
        self.effects: list[int] = []  # every item whose body ran to its end, in order
        self.saved_seen = 0  # the highest position the state file ever held
        self.finished = False  # whether a run saw the input run out
        # The open run, if any.
        self.r: Resumable | None = None
        self.it: Iterator[int] | None = None
        self.policy = Recording(self.spec.build())
        self.start = 0  # where the run started: the saved position
        self.position = 0  # items done: body ended and the loop asked for the next
        self.current: int | None = None  # the item whose body runs
        self.loop_over = False  # next() raised StopIteration
        self.ended_at: dict[int, int] = {}  # clock when the body of an item ended, this run
        self.saves = 0  # r.saves as last seen
        self.saved_position = 0  # the position of this run's last save, or its start
        self.saved_clock = 0  # when that save was made, or when the run opened
        # (position, clock) of the open and of every policy check of this run since.
        self.checked: list[tuple[int, int]] = [(0, 0)]
        self.previous_until = 1  # how many items the policy said may pass before a check
        self.interrupt: KeyboardInterrupt | None = None  # what the last next() raised

    # -- helpers ------------------------------------------------------------------------

    def snapshot(self) -> StateSnapshot | None:
        try:
            return inspect(self.path)
        except FileNotFoundError:
            return None

    def saved(self) -> int:
        snapshot = self.snapshot()
        return 0 if snapshot is None else snapshot.position

    def tick_clock(self, seconds: int) -> None:
        if seconds:
            self.frozen.tick(seconds)
            self.clock += seconds

    def end_body(self) -> None:
        """The body of the item in flight runs to its end."""
        if self.current is not None:
            self.effects.append(self.current)
            self.ended_at[self.current] = self.clock
            self.current = None

    @property
    def run(self) -> Resumable:
        assert self.r is not None, "no run is open"
        return self.r

    def ask_for_next(self) -> int | None:
        """``next()`` on the loop: the item it hands out, None when the input ran out.

        A KeyboardInterrupt from it is kept in `interrupt` (the ctrl_c rule expects one)."""
        it = self.it
        assert it is not None
        if self.current is not None:
            self.end_body()
            self.position += 1  # the loop asks for the next item: the one in flight is done
        checks = len(self.policy.checks)
        item: int | None = None
        try:
            item = next(it)
        except StopIteration:
            self.loop_over = True
        except KeyboardInterrupt as interrupt:
            self.interrupt = interrupt
        self.after_next(self.policy.checks[checks:])
        if item is not None:
            # Never an item below the saved position, never one skipped.
            assert item == self.position, f"handed out {item}, expected {self.position}"
            self.current = item
        return item

    def after_next(self, checks: list[Check]) -> None:
        """Compare what the loop did during one next() with the model."""
        assert len(checks) <= 1, "two policy checks in one next()"
        saves, self.saves = self.run.saves - self.saves, self.run.saves
        assert saves <= 1, "two saves in one next()"
        if checks:
            check = checks[0]
            assert not self.loop_over
            # The policy sees the items and seconds since the last save, of whatever kind.
            assert check.since.items == self.position - self.saved_position
            assert check.since.seconds == self.clock - self.saved_clock
            # The loop asked again no later than the policy said it could wait.
            assert self.position - self.checked_position <= self.previous_until
            self.assert_not_late_at_a_steady_pace()
            self.checked.append((self.position, self.clock))
            assert check.due == self.spec.due(check.since), f"{self.spec} answered {check}"
            assert saves == int(check.due), "a due save was not made, or one not due was"
        elif self.loop_over:
            # Made when the input runs out with items finished since the last save; the
            # finished flag alone waits for the exit.
            due = not self.finished and self.position != self.saved_position
            assert saves == int(due), "the completion save"
            self.finished = True
        else:
            assert saves == 0, "a save without a policy check"
        self.previous_until = self.policy.until
        if saves:
            snapshot = self.snapshot()
            assert snapshot is not None
            assert snapshot.position == self.position
            assert snapshot.finished == self.loop_over
            self.saved_position, self.saved_clock = self.position, self.clock

    @property
    def checked_position(self) -> int:
        return self.checked[-1][0]

    @property
    def checked_clock(self) -> int:
        return self.checked[-1][1]

    def ended(self, item: int) -> int:
        """When the body of `item` ended; for the item before the run, when it opened."""
        return self.ended_at[item] if item >= self.start else self.checked[0][1]

    def assert_not_late_at_a_steady_pace(self) -> None:
        """At a check now: if a time save came due at an earlier item boundary that the
        loop did not check, the pace must have changed since the loop last measured it.

        "TimePolicy divides the time left by the pace measured between the last two
        checks (rounding down, so it is never late at a steady pace)" (docs/policies.md).
        """
        if self.spec.seconds is None or len(self.checked) < 2:
            return
        (before, _), (last, _) = self.checked[-2:]
        boundaries = range(last + 1, self.position)  # item ends the loop did not check
        if not any(self.ended(b - 1) - self.saved_clock >= self.spec.seconds for b in boundaries):
            return
        durations = {self.ended(i) - self.ended(i - 1) for i in range(before, self.position)}
        assert len(durations) > 1 or durations == {0}, (
            f"at a steady {durations} s per item, {self.spec} saved late, at {self.position}"
        )

    def handlers_are_back(self) -> bool:
        return {s: signal.getsignal(s) for s in SIGNALS} == self.handlers

    def restore_handlers(self) -> None:
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)

    def forget_run(self) -> None:
        self.r = None
        self.it = None
        self.current = None

    def ended_gracefully(self) -> None:
        """After an exception, break or ctrl+c: everything done is saved, nothing more."""
        for signum, handler in self.handlers.items():
            assert signal.getsignal(signum) == handler, "a handler was not restored"
        self.end_run_bookkeeping()
        snapshot = self.snapshot()
        assert snapshot is not None, "the exit saves, even a job with nothing done"
        assert snapshot.position == self.position
        assert snapshot.finished == self.finished

    def end_run_bookkeeping(self) -> None:
        self.forget_run()
        self.ended_at = {}

    # -- rules --------------------------------------------------------------------------

    @initialize(spec=POLICIES)
    def choose_policy(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.open_run()

    @precondition(lambda self: self.r is None)
    @rule()
    def open_run(self) -> None:
        """Start the job (again): a new Resumable on the same state file."""
        snapshot = self.snapshot()
        self.start = 0 if snapshot is None else snapshot.position
        self.finished = snapshot is not None and snapshot.finished
        self.policy = Recording(self.spec.build())
        r = Resumable(self.path, policy=self.policy, quiet=True)
        no_interrupt(r.__enter__)
        self.r = r
        assert r.position == self.start
        assert r.finished == self.finished
        self.it = iter(r.iterate(range(N)))
        self.position = self.saved_position = self.start
        self.saved_clock = self.clock
        self.checked = [(self.start, self.clock)]
        self.previous_until = 1
        self.current = None
        self.loop_over = False
        self.ended_at = {}
        self.saves = 0

    @precondition(lambda self: self.r is not None and not self.loop_over)
    @rule(count=st.integers(1, 16))
    def process_fast_items(self, count: int) -> None:
        """Let `count` item bodies run to their end, taking no time (the clock is frozen)."""
        self.process(count, seconds=0)

    @precondition(lambda self: self.r is not None and not self.loop_over)
    @rule(count=st.integers(1, 16), seconds=st.integers(1, 5))
    def process_slow_items(self, count: int, seconds: int) -> None:
        """Let `count` item bodies run to their end, each taking `seconds`."""
        self.process(count, seconds)

    def process(self, count: int, seconds: int) -> None:
        for _ in range(count):
            if self.current is not None:
                self.tick_clock(seconds)  # the body of the item in flight takes its time
            item = self.ask_for_next()
            if self.interrupt is not None:
                raise AssertionError(f"next() raised {self.interrupt!r} without a signal")
            if item is None:
                break

    @precondition(lambda self: self.r is not None)
    @rule(drop_the_loop=st.booleans())
    def raise_in_body(self, drop_the_loop: bool) -> None:
        """The body raises: the with block exits with the exception (the for statement
        may already have let go of the loop)."""
        r = self.run
        error = ValueError("the body failed")
        if drop_the_loop:
            self.it = None
        assert not no_interrupt(lambda: r.__exit__(ValueError, error, None)), "swallowed"
        self.ended_gracefully()

    @precondition(lambda self: self.r is not None)
    @rule()
    def break_loop(self) -> None:
        """``break``: the for statement drops the loop, then the with block ends."""
        r = self.run
        self.it = None
        no_interrupt(lambda: r.__exit__(None, None, None))
        self.ended_gracefully()

    @precondition(lambda self: self.r is not None and self.current is not None)
    @rule()
    def ctrl_c(self) -> None:
        """SIGINT while a body runs: it finishes, the next next() raises, the exit saves."""
        r = self.run
        no_interrupt(lambda: signal.raise_signal(signal.SIGINT))  # the handler must not raise
        self.ask_for_next()
        interrupt = self.interrupt
        assert interrupt is not None, "after ctrl+c in a body, the next next() must raise"
        self.interrupt = None
        assert not no_interrupt(lambda: r.__exit__(KeyboardInterrupt, interrupt, None))
        self.ended_gracefully()

    @precondition(lambda self: self.r is not None)
    @rule(body_ended=st.booleans())
    def crash(self, body_ended: bool) -> None:
        """The process dies inside the run: no exit, no save. Items done since the last
        save will run again; the policy bounds how many (see the module docstring).

        This stands in for process death (tests/test_crash_kill9.py kills real processes
        with SIGKILL): the kernel would release the lock and the process's handlers would
        die with it. Here the Resumable is dropped without its exit, and its safety net
        (run by the garbage collector) releases the lock and puts the handlers back.
        """
        ended_in_flight = body_ended and self.current is not None
        if ended_in_flight:
            self.end_body()  # the body ended; the loop had not asked for the next item yet
        saved = self.saved()
        redo = sorted(item for item in self.ended_at if item >= saved)
        assert redo == list(range(saved, self.position + ended_in_flight))
        if self.spec.every is not None:
            assert len(redo) <= self.spec.every, f"{len(redo)} to redo, {self.spec}"
        if self.spec.seconds is not None:
            oldest = self.checked_clock - self.spec.seconds
            stale = [item for item in redo if self.ended_at[item] <= oldest]
            assert not stale, f"{stale} ended {self.spec.seconds} s before the last check"
        self.end_run_bookkeeping()  # drops the Resumable: its exit never runs
        if not self.handlers_are_back():  # then a reference cycle holds it: collect it
            gc.collect()
        assert self.handlers_are_back()  # its safety net ran, and freed the lock too

    @rule(seconds=st.sampled_from([1, 2, 5, 13, 60]))
    def time_passes(self, seconds: int) -> None:
        self.tick_clock(seconds)

    @precondition(lambda self: self.r is not None)
    @rule()
    def save_now(self) -> None:
        """``r.save()`` in the body (or outside the loop): saves the items done."""
        r = self.run
        no_interrupt(r.save)
        assert r.saves == self.saves + 1
        self.saves = r.saves
        self.saved_position, self.saved_clock = self.position, self.clock
        snapshot = self.snapshot()
        assert snapshot is not None
        assert snapshot.position == self.position

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def the_saved_position_is_backed_by_effects(self) -> None:
        snapshot = self.snapshot()
        saved = 0 if snapshot is None else snapshot.position
        assert saved >= self.saved_seen, "the saved position went back"
        self.saved_seen = saved
        # No item reported done whose body did not run, and none skipped.
        assert set(range(saved)) <= set(self.effects)
        assert saved <= len(set(self.effects))
        if snapshot is not None and snapshot.finished:
            assert saved == N

    @invariant()
    def the_open_run_matches_the_model(self) -> None:
        if self.r is None:
            return
        saved = self.saved()
        assert self.start <= saved <= self.position
        assert self.run.position == self.position
        if self.spec.every is not None:
            assert self.position - saved < self.spec.every
        if self.spec.seconds is not None:
            oldest = self.checked_clock - self.spec.seconds
            assert all(self.ended_at[item] > oldest for item in range(saved, self.position))

    def teardown(self) -> None:
        try:
            if self.r is not None:
                self.forget_run()  # an open run: its safety net frees the lock and handlers
                if not self.handlers_are_back():
                    gc.collect()
                self.restore_handlers()
            self.forget_run()
        finally:
            self.freezer.stop()
            shutil.rmtree(self.directory, ignore_errors=True)


# Older hypothesis releases do not annotate run_state_machine_as_test; going through a
# typed name keeps mypy --strict quiet on old and new releases alike.
run_machine: Callable[..., None] = run_state_machine_as_test


def test_the_model_holds() -> None:
    run_machine(
        JobModel,
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.mark.slow
def test_the_model_holds_for_long_runs() -> None:
    run_machine(
        JobModel,
        settings=settings(
            max_examples=1000,
            stateful_step_count=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
