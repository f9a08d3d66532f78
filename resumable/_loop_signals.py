"""Signal handlers through an asyncio event loop, shared by the jobs open on it.

An event loop keeps one callback per signal (``loop.add_signal_handler``), and taking one
away does not put back what was there before: it installs Python's default. So the jobs
open on one loop share one callback per signal, installed when the first of them opens;
when the last closes, it is taken away and what was there before comes back (asyncio.run's
own ctrl+c handler, or a callback of the program's). A signal goes to the newest job open,
as with handlers installed by `signal.signal`, in whatever order the jobs close: two tasks
may each run a job, and the first to open need not be the last to close.
"""

from __future__ import annotations

import functools
import signal
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

if TYPE_CHECKING:
    import asyncio


def is_asyncio_run_handler(handler: object) -> TypeGuard[functools.partial[Any]]:
    """Whether `handler` is asyncio.run's own for SIGINT (3.11+): a partial of its
    runner's method, which cancels the main task."""
    runner = getattr(getattr(handler, "func", None), "__self__", None)
    return (
        isinstance(handler, functools.partial)
        and type(runner).__name__ == "Runner"
        and type(runner).__module__ == "asyncio.runners"
    )


class LoopGuard(Protocol):
    """What a job's signal guard gives the loop's handlers."""

    signums: tuple[int, ...]

    def handle_in_event_loop(self, signum: int) -> None: ...


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSignals] = (
    weakref.WeakKeyDictionary()
)
# asyncio.run's own SIGINT handler (Python 3.11+) on each loop it runs, found when the
# first job opens there; and the loops a job's ctrl+c has already handed to it.
_runner_handlers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, functools.partial[Any]] = (
    weakref.WeakKeyDictionary()
)
_interrupted: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def interrupt_asyncio_run(loop: asyncio.AbstractEventLoop) -> bool:
    """Hand a job's ctrl+c to the ``asyncio.run`` that runs `loop`, as if it had come
    to its own handler: the main task is cancelled, and asyncio.run raises
    KeyboardInterrupt when it ends. False where asyncio.run has no handler (Python 3.10,
    a loop run by hand, a program's own callback for SIGINT).

    Once per loop (until a job opens on it again): the jobs of the other tasks stop with
    the main task's cancellation, and asyncio.run's handler would raise KeyboardInterrupt
    into their task at a second call."""
    handler = _runner_handlers.get(loop)
    if handler is None:
        return False
    main_task = handler.keywords.get("main_task")
    if loop not in _interrupted and main_task is not None and not main_task.done():
        _interrupted.add(loop)
        handler(signal.SIGINT, None)
    return True


def pass_on(loop: asyncio.AbstractEventLoop, signum: int) -> bool:
    """Give `signum` to the newest job still open on `loop` that handles it, as if it had
    just come; False when there is none."""
    found = _by_loop.get(loop)
    if found is None or not any(signum in guard.signums for guard in found._guards):
        return False
    found._dispatch(signum)
    return True


class LoopSignals:
    """The jobs open on one event loop, newest last, and the handlers they replaced."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._guards: list[LoopGuard] = []
        self._previous: dict[int, Callable[[int, Any], Any] | int | None] = {}
        self._callbacks: dict[int, asyncio.Handle] = {}  # the loop's own, before ours

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopSignals:
        """The handlers of `loop` (made when the first job opens on it)."""
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = cls(loop)
        return found

    def join(self, guard: LoopGuard) -> bool:
        """Send `guard` its signals from now on; False where the loop has no signal
        handling (Windows), and then nothing is installed."""
        loop = self._loop
        for signum in guard.signums:
            if signum in self._previous:
                continue
            previous = signal.getsignal(signum)
            # As `SignalGuard.install`: an ignored signal stays ignored, and one handled
            # from C could not be put back.
            if previous is None or previous == signal.SIG_IGN:
                continue
            callback = getattr(loop, "_signal_handlers", {}).get(signum)
            try:
                loop.add_signal_handler(signum, self._dispatch, signum)
            except NotImplementedError:
                return False
            self._previous[signum] = previous
            if callback is not None:
                self._callbacks[signum] = callback
            elif signum == signal.SIGINT and is_asyncio_run_handler(previous):
                _runner_handlers[loop] = previous
        self._guards.append(guard)
        _interrupted.discard(loop)  # the program goes on using the loop
        return True

    def leave(self, guard: LoopGuard) -> None:
        """`guard`'s job closes: its signals go to the next newest job that has them, or
        back to what handled them before the first job opened."""
        if guard in self._guards:
            self._guards.remove(guard)
        wanted = {signum for other in self._guards for signum in other.signums}
        loop = self._loop
        for signum, previous in list(self._previous.items()):
            if signum in wanted:
                continue
            loop.remove_signal_handler(signum)
            callback = self._callbacks.pop(signum, None)
            if callback is not None:
                handle: Any = callback  # its callback and arguments, as the loop kept them
                loop.add_signal_handler(signum, handle._callback, *handle._args)
            else:
                signal.signal(signum, previous)
            del self._previous[signum]
        if not self._guards:
            _by_loop.pop(loop, None)

    def _dispatch(self, signum: int) -> None:
        for guard in reversed(self._guards):
            if signum in guard.signums:
                guard.handle_in_event_loop(signum)
                return
