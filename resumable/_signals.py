"""What stops the loop: termination signals turned into a stop at an item boundary.

The handler only records what arrived. The first signal during a loop lets the current
item finish; the loop then raises at the next item boundary (`KeyboardInterrupt` for
SIGINT, `Interrupted` for the others). A second signal, or one that arrives when no loop is
running, raises at once, as Python would without this library. While the library's own
critical code runs (a save, leaving the ``with`` block), every signal waits for it; one
that would have raised at once is raised as soon as that code is done (after an explicit
save, on its return; in the loop, at the item boundary; on exit, by the exit).

On exit the previous handlers come back, and a signal that was only deferred is delivered
to them, so the program ends the way that signal would have ended it.

Under asyncio (``async with``) the handlers go through the event loop
(``loop.add_signal_handler``): they run as callbacks of the loop, between its steps, and
never raise into code. The first signal in a loop stops it at its next item boundary, as
above; one that would raise at once cancels the task that runs the job instead, and the
exit turns that cancellation into the signal's exception. A signal during the exit waits
for it. A stop never leaves a task as KeyboardInterrupt or Interrupted while the program
has somewhere better to send it (`SignalGuard.deliver_in_event_loop`): asyncio ends the
event loop at once on one, and other tasks' jobs would never finish their exits.

A child made by ``os.fork()`` (multiprocessing's "fork" start method) runs no loop of its
own: it gets the previous handlers back at once, so ``Process.terminate()`` stops it.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from resumable._errors import Interrupted, signal_name, warn

if TYPE_CHECKING:
    import asyncio

F = TypeVar("F", bound=Callable[..., Any])
_UNCATCHABLE = frozenset(
    int(getattr(signal, name)) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)
Handler = Callable[[int, FrameType | None], Any] | int | None

# Code objects of the library's critical sections: a signal arriving while one of them is
# on the stack is deferred. Checking the stack in the handler (rare) costs nothing on the
# hot path, and unlike a flag set inside the function it also covers the bytecodes before
# that flag could be set.
_DEFERRING_CODE: set[CodeType] = set()

# The attribute that marks an exception a guard raised for a signal.
_RAISED_BY = "_resumable_raised_by"

# The guards whose handlers are installed in this process, for `_restore_in_forked_child`,
# and the count that orders their installs.
_installed: weakref.WeakSet[SignalGuard] = weakref.WeakSet()
# Set with any guard's `overdue` (and cleared by `take_overdue` only), so that the check
# after every explicit save costs one global read rather than a walk of the WeakSet.
_maybe_overdue = False
_installs = itertools.count()


def defers_signals(function: F) -> F:
    """Mark `function` as a critical section: signals that arrive inside it wait."""
    _DEFERRING_CODE.add(function.__code__)
    return function


def default_signals() -> tuple[int, ...]:
    """SIGINT and SIGTERM, plus SIGHUP where the platform has it."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


def signal_numbers(signals: object) -> tuple[int, ...]:
    """`signals=` as signal numbers, or a TypeError that says what it takes."""
    wrong = TypeError(
        "signals= takes signal numbers, e.g. signals=(signal.SIGTERM,) or signals=() for "
        f"none; got {signals!r}"
    )
    if isinstance(signals, (str, bytes)) or not isinstance(signals, Iterable):
        raise wrong
    numbers = tuple(signals)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise wrong
    return numbers


def exception_signal(exception: BaseException | None) -> int | None:
    """The signal a stop's exception stands for (`exception_for`'s inverse)."""
    if isinstance(exception, Interrupted):
        return exception.signum
    return signal.SIGINT if isinstance(exception, KeyboardInterrupt) else None


def exception_for(signum: int) -> BaseException:
    """The exception a stop by `signum` raises: what Python raises for ctrl+c, or Interrupted."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


class SignalGuard:
    """Installs the handlers for a run, and remembers what arrived."""

    def __init__(self, signums: Iterable[int | signal.Signals], wake: Callable[[], None]) -> None:
        # Once each: installing twice would record our own handler as the previous one.
        self.signums = tuple(dict.fromkeys(int(signum) for signum in signums))
        for signum in self.signums:
            if signum in _UNCATCHABLE:
                raise ValueError(
                    f"{signal_name(signum)} cannot be caught; leave it out of signals="
                )
        self.wake = wake  # makes a running loop check for a stop at its next boundary
        self.loop_running = False
        self.stop_requested: int | None = None  # the first signal of this run
        self.pending: int | None = None  # arrived, not yet raised as an exception
        # A signal that would have raised at once but arrived in the library's own code:
        # the caller raises it as soon as that code is done (after an explicit save).
        self.overdue = False
        # Marks the exceptions this guard raised (`take_exception`), which the exit hands
        # on to the previous handlers (`deliver_deferred`).
        self._mark = object()
        self._previous: dict[int, Handler] = {}
        self._installed_as = 0  # this guard's place in the order of installs
        # Under asyncio: the event loop the handlers go through, the task a stop at once
        # cancels, whether it did, and whether the exit runs (a signal then waits for it).
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled_task = False
        self.exiting = False

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere warn and do nothing)."""
        if not self.signums:
            return  # signals=(): nothing to install, nothing to warn about off the main thread
        if threading.current_thread() is not threading.main_thread():
            warn(
                "Resumable is not on the main thread, where Python delivers signals: "
                "ctrl+c and SIGTERM are not caught, so they stop the loop wherever it is. "
                "Progress is still saved by the policy and when the with block exits.",
            )
            return
        self._installed_as = next(_installs)
        for signum in self.signums:
            previous = signal.getsignal(signum)
            # An ignored signal stays ignored (nohup), and a handler installed from C
            # (getsignal gives None) could not be put back, so both are left alone.
            if previous is None or previous == signal.SIG_IGN:
                continue
            # Recorded first: whatever interrupts this line, `restore` can put it back.
            self._previous[signum] = previous
            _installed.add(self)
            signal.signal(signum, self._handle)

    def install_in_event_loop(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None
    ) -> None:
        """Install the handlers as callbacks of the running event `loop` (shared by the
        jobs open on it: `_loop_signals`); a stop at once cancels `task`. Where the loop
        has no signal handling (Windows), nothing is installed, and ctrl+c does what
        asyncio makes of it (``asyncio.run`` cancels the main task: the exit saves)."""
        from resumable._loop_signals import LoopSignals

        if threading.current_thread() is not threading.main_thread():
            self.install()  # warns, as there
            return
        self._installed_as = next(_installs)
        self.task = task
        if LoopSignals.of(loop).join(self):
            self._event_loop = loop
            _installed.add(self)

    @defers_signals
    def restore(self) -> None:
        """Put back exactly the handlers that were there before `install`."""
        if self._event_loop is not None:
            self._leave_event_loop()
        for signum, previous in list(self._previous.items()):
            signal.signal(signum, previous)
            del self._previous[signum]  # only once it is back
        _installed.discard(self)

    def restore_where_still_ours(self) -> None:
        """`restore`, but only for signals whose handler is still this guard's."""
        if self._event_loop is not None:
            self._leave_event_loop()
        for signum, previous in list(self._previous.items()):
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
            del self._previous[signum]
        _installed.discard(self)

    def take_exception(self) -> BaseException:
        """Turn the pending signal into the exception to raise, and remember it."""
        signum = self.pending if self.pending is not None else self.stop_requested
        assert signum is not None
        self.pending = None
        self.overdue = False
        raised = exception_for(signum)
        # Marked, not kept: the guard holding the exception would hold its traceback,
        # whose frames hold the loop and the run, and a run dropped without its exit
        # (its lock, its handlers) would wait for the garbage collector to be freed.
        raised.__dict__[_RAISED_BY] = self._mark
        return raised

    def deliver_deferred(self, exception: BaseException | None) -> None:
        """After `restore`: let the previous handlers act on what this run held back.

        A signal that never became an exception is raised again now. A stop this guard
        raised as `Interrupted` is delivered too, so SIGTERM with its default handler ends
        the process by SIGTERM. A `KeyboardInterrupt` already is what the default SIGINT
        handler would raise, so it just propagates, unless the program had a SIGINT
        handler of its own: that one gets the signal (not an enclosing job's handler:
        the propagating `KeyboardInterrupt` leaves that job too).
        """
        signum = self._signal_to_deliver(exception)
        if signum is not None:
            _raise_signal(signum)

    def deliver_in_event_loop(
        self, exception: BaseException | None, loop: asyncio.AbstractEventLoop
    ) -> BaseException | None:
        """`deliver_deferred` for an exit under asyncio; what the exit raises in place of
        `exception` (None: let it go on).

        Under ``asyncio.run`` (Python 3.11+), a ctrl+c the job holds goes to asyncio.run's
        own handler: it cancels the main task, and asyncio.run raises KeyboardInterrupt
        when that ends. The job's own KeyboardInterrupt becomes a cancellation of its task,
        as asyncio's ctrl+c is: a KeyboardInterrupt out of a task would end the event loop
        at once, and the tasks it left (another job's among them) would never finish their
        exits.

        Any other signal the job holds, while other jobs are open on the loop, goes to the
        newest of them, as if it had just come, and the job's own stop becomes a
        cancellation of its task for the same reason; the last job's exit delivers it
        (`deliver_deferred`: SIGTERM's default ends the process by SIGTERM once every job
        has saved). Ctrl+c too where asyncio.run has no handler (Python 3.10, a loop run
        by hand).
        """
        import asyncio

        from resumable._loop_signals import interrupt_asyncio_run, pass_on

        ours = exception is not None and exception.__dict__.get(_RAISED_BY) is self._mark
        if ours:
            holds_ctrl_c = isinstance(exception, KeyboardInterrupt)
        else:
            holds_ctrl_c = self.pending == signal.SIGINT
        if holds_ctrl_c and interrupt_asyncio_run(loop):
            self.pending = None
            self.overdue = False
            return asyncio.CancelledError() if ours else None
        held = exception_signal(exception) if ours else self.pending
        if held is not None and pass_on(loop, held):
            self.pending = None
            self.overdue = False
            return asyncio.CancelledError() if ours else None
        self.deliver_deferred(exception)
        return None

    def _signal_to_deliver(self, exception: BaseException | None) -> int | None:
        """The signal `deliver_deferred` raises again for the exit leaving with `exception`;
        nothing is pending after it."""
        signum: int | None = None
        if exception is not None and exception.__dict__.get(_RAISED_BY) is self._mark:
            if isinstance(exception, Interrupted):
                signum = exception.signum
            elif not _raises_keyboard_interrupt(signal.getsignal(signal.SIGINT)):
                signum = signal.SIGINT
        elif self.pending is not None:
            signum = self.pending
        self.pending = None
        self.overdue = False
        return signum

    def _leave_event_loop(self) -> None:
        from resumable._loop_signals import LoopSignals

        loop, self._event_loop = self._event_loop, None
        if loop is not None:
            LoopSignals.of(loop).leave(self)

    def handle_in_event_loop(self, signum: int) -> None:
        """`_handle` under asyncio: a callback of the event loop, which cancels the job's
        task where the other would raise."""
        first = self._note(signum)
        if (first and self.loop_running) or self.exiting:
            return  # the loop stops at its next item boundary; the exit delivers it
        task = self.task
        if task is not None and not task.done():
            self.cancelled_task = True
            task.cancel()

    def stop_of_cancelled(self, exception: BaseException | None) -> BaseException | None:
        """Under asyncio, when `exception` is the cancellation a signal made: the signal's
        exception, to raise in its place (the task is uncancelled)."""
        import asyncio

        if not (self.cancelled_task and isinstance(exception, asyncio.CancelledError)):
            return None
        self.cancelled_task = False
        task = self.task
        if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
            task.uncancel()
        return self.take_exception()

    def describe(self) -> str:
        """The name of the signal that stopped the run, e.g. ``"SIGINT"``."""
        return signal_name(self.stop_requested) if self.stop_requested else "no signal"

    def _note(self, signum: int) -> bool:
        """Record that `signum` arrived and ask a running loop to stop after its item;
        whether it is this run's first signal."""
        first = self.stop_requested is None
        if first:
            self.stop_requested = signum
        if self.pending is None:
            self.pending = signum
        self.wake()
        return first

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global _maybe_overdue
        first = self._note(signum)
        if first and self.loop_running:
            return  # the loop stops at its next item boundary
        if _in_deferring_code(frame):
            self.overdue = True
            _maybe_overdue = True
            return
        # What a traceback shows last when the stop does not wait for the item to end:
        raise self.take_exception()  # resumable: stopped at once (a second signal, or no loop)


def take_overdue() -> BaseException | None:
    """The exception of a signal that would have raised at once but arrived in the
    library's own code, to raise now that it is done; None when there is none.

    Whichever job's guard received it: with jobs open inside one another, a signal goes to
    the newest job's handler, also while an older job saves.
    """
    global _maybe_overdue
    if not _maybe_overdue:
        return None
    _maybe_overdue = False  # before the walk: a signal during it sets it again
    for guard in _installed:
        if guard.overdue:
            _maybe_overdue = True  # another guard may be overdue too
            return guard.take_exception()
    return None


def _raise_signal(signum: int) -> None:
    # Death by a signal skips Python's exit path, so flush what the program printed.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    signal.raise_signal(signum)


def _raises_keyboard_interrupt(handler: Handler) -> bool:
    """Whether the SIGINT `handler` amounts to the KeyboardInterrupt already raised:
    Python's default, or the handler of a job this one was opened inside, which that
    KeyboardInterrupt leaves as well (delivered to it, it would raise a second one)."""
    from resumable._loop_signals import is_asyncio_run_handler

    owner = getattr(handler, "__self__", None)
    # asyncio.run's own (3.11+) cancels the main task; the KeyboardInterrupt that leaves
    # it is what asyncio.run raises then.
    return (
        handler is signal.default_int_handler
        or isinstance(owner, SignalGuard)
        or is_asyncio_run_handler(handler)
    )


def _restore_in_forked_child() -> None:
    """Run in the child after ``os.fork()``: the handlers that were there before come back.

    Newest first: a guard installed over another (nested jobs) holds the other's handler
    as its previous one, which must be in place when the other is undone.
    """
    for guard in sorted(_installed, key=lambda guard: guard._installed_as, reverse=True):
        guard.restore_where_still_ours()


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_restore_in_forked_child)


def _in_deferring_code(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _DEFERRING_CODE:
            return True
        frame = frame.f_back
    return False
