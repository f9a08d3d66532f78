"""An interrupt at every line of the save, enter and exit paths leaves no half-done outcome.

`CutAtLine` raises KeyboardInterrupt, by ``sys.settrace``, just before the k-th line of
library code that an operation runs, for k = 1, 2, ... until the operation ends first.
Our own signals never land there (the library defers them), but other exceptions can: a
handler that is not ours (signals=() and ctrl+c, a raising SIGALRM handler). After each
trial: the state file holds the state from before or after the operation, no temp file is
left, the previous signal handlers are back, the lock is free, no descriptor is left open,
and the interrupt escapes: the library never swallows it (with no interrupt, the body's own
error escapes, or nothing).

The one line no library code can cover is the first line of ``Resumable.__exit__``: an
exception there skips the exit, as it would any context manager's. The trials check the
safety net for it: once the Resumable is garbage-collected, its lock and handlers are freed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import resumable
from resumable import NPolicy, Policy, Resumable, StateLockedError, inspect

from jobs.harness import DEFAULT_SIGNALS, Handler

N = 10  # the input: range(N)
RESUMED_AT = 2  # the earlier run of every trial broke on this item, so it was saved here
STOP_AT = 7  # the item at which the traced operation happens
NEVER = NPolicy(1000)  # no policy save during these short loops
PACKAGE_DIR = Path(resumable.__file__).resolve().parent
SIGNALS = DEFAULT_SIGNALS
TEMP_SUFFIX = ".tmp"  # of the temp file a save writes: .<name>.<pid>.<token>.tmp
STALE_TEMP = f".job.state.99999.deadbeef{TEMP_SUFFIX}"  # as a killed save leaves one
MAX_LINES = 3000  # a trace that never ends is a failure, not a hang
KINDS = ("state", "temp files", "handlers", "lock", "escapes", "descriptors")


class BodyError(Exception):
    """What the loop body raises in the exit-by-exception scenarios."""


class CutAtLine:
    """While armed, raises KeyboardInterrupt just before the `line`-th library line runs."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.lines = 0  # library lines run while armed (the one interrupted included)
        self.where: str | None = None  # "file:line in function", once the interrupt fired
        self.file: Path | None = None  # the file of that line
        self.interrupt: KeyboardInterrupt | None = None
        self.at_entry = False  # whether it fired at the first line its function ran
        self._armed = False
        self._previous: Any = None
        self._library: dict[CodeType, bool] = {}

    @property
    def fired(self) -> bool:
        """Whether the operation reached the line and was interrupted there."""
        return self.interrupt is not None

    def arm(self) -> None:
        self._previous = sys.gettrace()
        self._armed = True
        sys.settrace(self._trace)

    def disarm(self) -> None:
        """Stop tracing; safe to call when not armed or after the interrupt fired."""
        if self._armed or self.fired:
            self._armed = False
            sys.settrace(self._previous)

    def _in_library(self, code: CodeType) -> bool:
        known = self._library.get(code)
        if known is None:
            known = Path(code.co_filename).resolve().is_relative_to(PACKAGE_DIR)
            self._library[code] = known
        return known

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if not self._armed or not self._in_library(frame.f_code):
            return None
        lines_in_this_call = 0

        def trace_lines(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal lines_in_this_call
            if not self._armed:
                return None
            if event == "line":
                self.lines += 1
                lines_in_this_call += 1
                if self.lines == self.line:
                    self._armed = False
                    code = frame.f_code
                    self.file = Path(code.co_filename).resolve()
                    self.where = f"{Path(code.co_filename).name}:{frame.f_lineno} in {code.co_name}"
                    self.at_entry = lines_in_this_call == 1
                    self.interrupt = KeyboardInterrupt(f"cut before {self.where}")
                    raise self.interrupt
            return trace_lines

        return trace_lines(frame, event, arg)

    @property
    def at_exit_entry(self) -> bool:
        """Whether it fired at the first line of ``Resumable.__exit__``: the one line no
        code of the library can cover (see `run_trial`)."""
        return self.at_entry and self.where is not None and self.where.endswith(" in __exit__")


@dataclass
class Trial:
    """One run of a scenario with an interrupt at one line; collects what went wrong."""

    directory: Path
    cut: CutAtLine
    before: int | None = None  # the saved position before the operation (None: no file)
    after: int | None = None  # the saved position once the operation has done its work
    done: int = 0  # items whose body ran to its end, counting the earlier run
    body_error: BaseException | None = None  # what the body raised, if it raises
    opened: list[Resumable] = field(default_factory=list)  # to release after the trial
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, what)

    @property
    def path(self) -> Path:
        return self.directory / "job.state"

    def open(self, policy: Policy) -> Resumable:
        run = Resumable(self.path, policy=policy, quiet=True)
        self.opened.append(run)
        return run

    def expect(self, before: int | None, after: int | None) -> None:
        self.before, self.after = before, after

    def problem(self, kind: str, what: str) -> None:
        assert kind in KINDS
        self.problems.append((kind, what))

    def check_state(self, when: str) -> None:
        """The state file holds the position from before or after the operation, no other."""
        allowed = {self.before, self.after}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                snapshot = inspect(self.path)
        except FileNotFoundError:
            if None not in allowed:
                self.problem("state", f"{when}: the state file is gone")
            return
        except Exception as error:
            self.problem("state", f"{when}: the state file cannot be read: {error!r}")
            return
        if caught or snapshot.from_backup:
            self.problem("state", f"{when}: only the backup is readable")
        if snapshot.position not in allowed:
            self.problem(
                "state",
                f"{when}: position {snapshot.position}, neither {self.before} (before) "
                f"nor {self.after} (after)",
            )
        if snapshot.position > self.done:
            self.problem(
                "state", f"{when}: position {snapshot.position}, only {self.done} bodies ended"
            )
        if snapshot.finished and snapshot.position != N:
            self.problem("state", f"{when}: finished at position {snapshot.position} of {N}")

    def temp_files(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self.directory.iterdir()
            if entry.name.endswith(TEMP_SUFFIX) and entry.name != STALE_TEMP
        )


# -- the scenarios: each says what it expects, then runs the traced operation ------------


def earlier_run(path: Path) -> None:
    """A run that did items 0 and 1 and broke on 2: the state file says 2 items are done."""
    with Resumable(path, policy=NEVER, quiet=True) as r:
        for item in r.iterate(range(N)):
            if item == RESUMED_AT:
                break


def explicit_save(t: Trial) -> None:
    """``r.save()`` in the body of item 7."""
    earlier_run(t.path)
    t.expect(before=RESUMED_AT, after=STOP_AT)
    t.done = RESUMED_AT
    with t.open(NEVER) as r:
        for item in r.iterate(range(N)):
            if item == STOP_AT:
                t.cut.arm()
                try:
                    r.save()
                finally:
                    t.cut.disarm()
                    t.check_state("right after r.save()")
                break
            t.done = item + 1


def policy_save(t: Trial) -> None:
    """NPolicy(1) saves at the boundary after item 7, as the loop asks for item 8."""
    earlier_run(t.path)
    t.expect(before=STOP_AT, after=STOP_AT + 1)
    t.done = RESUMED_AT
    with t.open(NPolicy(1)) as r:
        for item in r.iterate(range(N)):
            t.cut.disarm()
            if item == STOP_AT + 1:
                t.check_state("as item 8 starts")
                break
            t.done = item + 1
            if item == STOP_AT:
                t.cut.arm()


def finish_save(t: Trial) -> None:
    """NPolicy(1), the last item ends: the loop saves the job as finished.

    Position N without the finished flag counts as "after": a signal in the last item
    leaves that too, and the next run then finishes without running anything.
    """
    earlier_run(t.path)
    t.expect(before=N - 1, after=N)
    t.done = RESUMED_AT
    with t.open(NPolicy(1)) as r:
        for item in r.iterate(range(N)):
            t.done = item + 1
            if item == N - 1:
                t.cut.arm()
        t.cut.disarm()
        t.check_state("after the loop")


def exit_after_break(t: Trial) -> None:
    """``break`` on item 7 with the loop still referenced, then the with block ends."""
    earlier_run(t.path)
    t.expect(before=RESUMED_AT, after=STOP_AT)
    t.done = RESUMED_AT
    with t.open(NEVER) as r:
        items = r.iterate(range(N))  # held, so the exit is what closes the loop
        for item in items:
            if item == STOP_AT:
                break
            t.done = item + 1
        t.cut.arm()


def exit_after_the_end(t: Trial) -> None:
    """The loop ran out (and saved); the with block ends with nothing left to save."""
    earlier_run(t.path)
    t.expect(before=N, after=N)
    with t.open(NEVER) as r:
        for item in r.iterate(range(N)):
            t.done = item + 1
        t.cut.arm()


def exit_by_exception(t: Trial) -> None:
    """The body of item 7 raises; the loop is held, so the exit closes it."""
    earlier_run(t.path)
    t.expect(before=RESUMED_AT, after=STOP_AT)
    t.done = RESUMED_AT
    with t.open(NEVER) as r:
        items = r.iterate(range(N))
        for item in items:
            if item == STOP_AT:
                t.cut.arm()
                t.body_error = BodyError(item)
                raise t.body_error
            t.done = item + 1


def exit_by_exception_through_the_loop(t: Trial) -> None:
    """The body of item 7 raises out of ``for item in r.iterate(...)``: leaving the for
    statement drops and so closes the loop, then the with block exits."""
    earlier_run(t.path)
    t.expect(before=RESUMED_AT, after=STOP_AT)
    t.done = RESUMED_AT
    with t.open(NEVER) as r:
        for item in r.iterate(range(N)):
            if item == STOP_AT:
                t.cut.arm()
                t.body_error = BodyError(item)
                raise t.body_error
            t.done = item + 1


def enter(t: Trial) -> None:
    """``with Resumable(path) as r`` on a saved job, with a stale temp file to clear."""
    earlier_run(t.path)
    (t.directory / STALE_TEMP).write_bytes(b"left by a killed save")
    t.expect(before=RESUMED_AT, after=RESUMED_AT)
    t.done = RESUMED_AT
    t.cut.arm()
    run = Resumable(t.path, policy=NEVER, quiet=True)
    t.opened.append(run)
    with run:
        t.cut.disarm()


def enter_a_new_job(t: Trial) -> None:
    """``with Resumable(path) as r`` with no state file yet; the exit saves position 0."""
    t.expect(before=None, after=0)
    t.cut.arm()
    run = Resumable(t.path, policy=NEVER, quiet=True)
    t.opened.append(run)
    with run:
        t.cut.disarm()


SCENARIOS: dict[str, Callable[[Trial], None]] = {
    "explicit save": explicit_save,
    "policy save at an item boundary": policy_save,
    "save when the input runs out": finish_save,
    "exit after break": exit_after_break,
    "exit after the loop ran out": exit_after_the_end,
    "exit by an exception, loop held": exit_by_exception,
    "exit by an exception through the for statement": exit_by_exception_through_the_loop,
    "enter a saved job": enter,
    "enter a new job": enter_a_new_job,
}


# -- running the trials --------------------------------------------------------------------


def run_scenario(scenario: Callable[[Trial], None], t: Trial) -> BaseException | None:
    """Run `scenario` in a generator frame of its own; return the exception that escaped.

    An exception raised by a trace function at some lines of an exception handler (such as
    the line after a ``with contextlib.suppress(...)`` that suppressed something) leaves
    CPython's "exception being handled" (``sys.exc_info()``) set in the frame that catches
    it, and later exceptions then chain to it. A generator frame has that state of its
    own, so the stale exception goes away with the generator.
    """

    def frame() -> Iterator[BaseException | None]:
        escaped: BaseException | None = None
        try:
            scenario(t)
        except BaseException as error:
            escaped = error
        yield escaped

    return next(frame())


def leaked_fds(directory: Path) -> tuple[list[int], list[int]]:
    """Descriptors this process has open on files in `directory`, and on `directory`
    itself (read from /proc: Linux only, elsewhere none)."""
    on_files: list[int] = []
    on_directory: list[int] = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if target.startswith(f"{directory}{os.sep}"):
                    on_files.append(int(name))
                elif target == str(directory):
                    on_directory.append(int(name))
    return on_files, on_directory


def open_and_close(path: str | os.PathLike[str]) -> None:
    with Resumable(path, policy=NEVER, quiet=True):
        pass


def release_as_process_death_would(t: Trial, handlers: dict[int, Handler]) -> None:
    """Free what a dead process would free, so that the next trial starts clean.

    The kernel releases a dead process's locks and descriptors, and its handlers and its
    in-process bookkeeping die with it. A descriptor still open here is a leak (a
    long-running program that catches the interrupt and goes on keeps it for good): it is
    a problem, and it is closed so that the next trial starts clean.
    """
    for error in (t.cut.interrupt, t.body_error):
        if error is not None:  # a traceback keeps frames, and so their open iterators, alive
            error.__traceback__ = error.__context__ = None
    # A run whose exit did not free its lock or handlers (a problem found above) is
    # dropped and collected now, not at some later trial: its safety net frees them, as
    # the kernel frees a dead process's lock. A run that freed them has nothing left.
    t.opened.clear()
    if any(kind in ("lock", "handlers") for kind, _ in t.problems):
        gc.collect()
    for signum, previous in handlers.items():
        signal.signal(signum, previous)
    on_files, on_directory = leaked_fds(t.directory)
    for fd in on_files:
        os.close(fd)
    if on_files:
        t.problem("descriptors", f"{len(on_files)} descriptor(s) on a file left open")
    if on_directory:
        t.problem("descriptors", f"{len(on_directory)} descriptor(s) on the directory left open")


@dataclass(frozen=True)
class Result:
    line: int
    fired: bool
    where: str | None
    lines: int
    problems: list[tuple[str, str]]
    notes: list[str]


def run_trial(scenario: Callable[[Trial], None], directory: Path, line: int) -> Result:
    """Run `scenario` with an interrupt before library line `line`; check what is left."""
    directory.mkdir()
    t = Trial(directory, CutAtLine(line))
    handlers: dict[int, Handler] = {signum: signal.getsignal(signum) for signum in SIGNALS}
    ignored: list[BaseException | None] = []
    previous_hook = sys.unraisablehook

    def unraisable(report: Any) -> None:
        ignored.append(report.exc_value)

    sys.unraisablehook = unraisable
    try:
        escaped = run_scenario(scenario, t)
    finally:
        t.cut.disarm()
        sys.unraisablehook = previous_hook
    notes = [f"an exception was ignored (unraisable): {error!r}" for error in ignored]

    expected = t.cut.interrupt if t.cut.fired else t.body_error
    if t.cut.fired and any(error is t.cut.interrupt for error in ignored):
        # Python's own doing, not the library's: the for statement dropped the loop's
        # generator, and an exception raised while CPython finalises a generator it drops
        # is reported to sys.unraisablehook and ignored. Our own signals wait there.
        expected = t.body_error
        notes.append("the interrupt came while Python finalised the dropped loop")
    if escaped is not expected:
        t.problem("escapes", f"{escaped!r} escaped where {expected!r} should have")

    t.check_state("after the trial")
    if t.cut.at_exit_entry:
        # The documented limit: an exception at the very first line of __exit__ skips the
        # exit, as it would any context manager's. The lock and the handlers must then come
        # back once the Resumable is garbage-collected, so drop every reference to it.
        for error in (t.cut.interrupt, t.body_error):
            if error is not None:  # their tracebacks hold the frames that hold it
                error.__traceback__ = error.__context__ = None
        escaped = None
        t.opened.clear()
        gc.collect()
        notes.append("cut at the first line of __exit__: released by garbage collection")
    if left := t.temp_files():
        t.problem("temp files", f"left right after the trial: {left}")
    if not_restored := [
        signal.Signals(signum).name
        for signum, previous in handlers.items()
        if signal.getsignal(signum) != previous
    ]:
        t.problem("handlers", f"not restored: {', '.join(not_restored)}")
    try:
        open_and_close(t.path)
    except StateLockedError as error:
        t.problem("lock", f"still held (StateLockedError, pid {error.pid})")
    except Exception as error:
        t.problem("state", f"a new Resumable cannot open the job: {error!r}")

    release_as_process_death_would(t, handlers)
    try:
        open_and_close(t.path)  # opening removes the stale temp files a save left
    except Exception as error:
        t.problem("lock", f"even after the clean-up, a new Resumable fails: {error!r}")
        return Result(line, t.cut.fired, t.cut.where, t.cut.lines, t.problems, notes)
    if left := sorted(p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)):
        t.problem("temp files", f"left after a new open and close: {left}")
    return Result(line, t.cut.fired, t.cut.where, t.cut.lines, t.problems, notes)


def run_all_trials(scenario: Callable[[Trial], None], directory: Path) -> list[Result]:
    """Trials with the interrupt at line 1, 2, 3, ... until the operation ends first."""
    results: list[Result] = []
    for line in itertools.count(1):
        assert line <= MAX_LINES, "the traced operation never ends"
        results.append(run_trial(scenario, directory / f"line-{line}", line))
        if not results[-1].fired:
            break
    assert results[-1].lines >= 5, "the trace saw almost no library code: is it on?"
    return results


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Result]]:
    """The trials of a scenario, run once for all the tests that look at them."""
    done: dict[str, list[Result]] = {}

    def of(name: str) -> list[Result]:
        if name not in done:
            done[name] = run_all_trials(SCENARIOS[name], tmp_path_factory.mktemp("trials"))
        return done[name]

    return of


def assert_no_problem(results: list[Result], kind: str) -> None:
    failures: list[str] = []
    for result in results:
        if problems := [what for problem_kind, what in result.problems if problem_kind == kind]:
            at = f"before {result.where}" if result.fired else "(not interrupted)"
            also = f" (also: {'; '.join(result.notes)})" if result.notes else ""
            failures.append(f"line {result.line}, {at}: {'; '.join(problems)}{also}")
    assert not failures, f"{len(failures)} of {len(results)} trials:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_state_file_holds_the_state_before_or_after(
    trials: Callable[[str], list[Result]], name: str
) -> None:
    assert_no_problem(trials(name), "state")


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_temp_file_is_left(trials: Callable[[str], list[Result]], name: str) -> None:
    assert_no_problem(trials(name), "temp files")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_previous_signal_handlers_are_back(
    trials: Callable[[str], list[Result]], name: str
) -> None:
    assert_no_problem(trials(name), "handlers")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_lock_is_free(trials: Callable[[str], list[Result]], name: str) -> None:
    assert_no_problem(trials(name), "lock")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_interrupt_escapes_and_is_never_swallowed(
    trials: Callable[[str], list[Result]], name: str
) -> None:
    """The interrupt escapes wherever it came; with no interrupt, the body's own error
    (or nothing) does."""
    assert_no_problem(trials(name), "escapes")


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_file_descriptor_is_left_open(trials: Callable[[str], list[Result]], name: str) -> None:
    assert_no_problem(trials(name), "descriptors")


def test_the_cut_interrupts_inside_the_library_only(tmp_path: Path) -> None:
    """The tracer counts library lines only, and its interrupt escapes as ctrl+c would."""
    cut = CutAtLine(1)
    cut.arm()
    try:
        total = sum(range(10))  # test code: not counted
    finally:
        cut.disarm()
    assert (total, cut.lines, cut.fired) == (45, 0, False)

    cut = CutAtLine(1)
    cut.arm()
    with pytest.raises(KeyboardInterrupt):
        try:
            Resumable(tmp_path / "job.state")
        finally:
            cut.disarm()
    assert cut.where is not None
    assert cut.file is not None
    assert cut.file.is_relative_to(PACKAGE_DIR), cut.where


# -- the same promise, for an exception that needs no tracing ----------------------------


def test_the_previous_handlers_are_back_when_signals_lists_one_twice(state_path: Path) -> None:
    """A repeated signal would meet its own handler when installed: the previous one
    must still come back."""
    before = signal.getsignal(signal.SIGINT)
    try:
        with Resumable(state_path, signals=(signal.SIGINT, signal.SIGINT)):
            assert signal.getsignal(signal.SIGINT) != before
        assert signal.getsignal(signal.SIGINT) == before
    finally:
        signal.signal(signal.SIGINT, before)
    open_and_close(state_path)  # and the lock is free


def test_an_uncatchable_signal_is_refused_before_anything_is_touched(state_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(ValueError, match="SIGKILL cannot be caught"):
        Resumable(state_path, signals=(signal.SIGINT, signal.SIGKILL))
    assert signal.getsignal(signal.SIGINT) == before
    assert not state_path.exists()
    open_and_close(state_path)  # and the lock is free


def test_a_resumable_dropped_without_its_exit_frees_the_lock_and_handlers(
    state_path: Path,
) -> None:
    """The safety net behind the first line of __exit__, shown directly: enter by hand,
    never exit, drop the object."""
    before = signal.getsignal(signal.SIGINT)
    run = Resumable(state_path, quiet=True)
    run.__enter__()
    assert signal.getsignal(signal.SIGINT) != before
    with pytest.raises(StateLockedError):
        open_and_close(state_path)
    del run
    gc.collect()
    assert signal.getsignal(signal.SIGINT) == before
    open_and_close(state_path)


def test_a_dropped_resumable_leaves_the_handlers_of_a_later_one_alone(tmp_path: Path) -> None:
    """The safety net runs whenever the collector gets to the object, perhaps while another
    Resumable runs: it puts a handler back only where its own is still installed."""
    before = signal.getsignal(signal.SIGINT)
    first = Resumable(tmp_path / "first.state", quiet=True)
    first.__enter__()
    with Resumable(tmp_path / "second.state", quiet=True) as second:
        installed = signal.getsignal(signal.SIGINT)
        del first
        gc.collect()
        assert signal.getsignal(signal.SIGINT) == installed  # still the second one's
        assert installed != before
        with pytest.raises(StateLockedError):  # and its job still locked
            open_and_close(second.path)
        open_and_close(tmp_path / "first.state")  # the first one's job is free
        for _ in second.iterate(range(3)):
            pass
    assert (inspect(second.path).position, inspect(second.path).finished) == (3, True)
    # The second one put back what it found: the first one's handler, which the first
    # one's safety net no longer owns. The test puts the original back itself.
    signal.signal(signal.SIGINT, before)
