"""What every loop driver shares: its options, the item whose body runs, the boundary.

A driver hands out the items that are not done and marks them done when the loop asks for
the next one. It talks to the progress (what is done), to the checkpoint at each item
boundary (when to save), and to the session for a stop a signal asked for. Which items
are in flight (the body runs them) is the driver's to say: `Resumable.attempt` records a
failure for them, `Resumable.position` leaves them out.

A driver raises a signal's stop from its own frame (the traceback's last line is the
loop's raise, whose comment says what happened), held in a local `stop` that its
`finally` clears. Kept, the local would hold the exception, whose traceback holds the
frame: a cycle through the run (its lock, its handlers) that only the garbage collector
breaks, so a run dropped without its exit would stay locked until a collection.
"""

from __future__ import annotations

import logging
import shlex
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Literal

from resumable._checkpoint import Checkpoint
from resumable._display import LoopDisplay, ProgressDisplay, require_tqdm
from resumable._drivers.batches import check_batch
from resumable._drivers.read_ahead import read_ahead_error
from resumable._errors import UsageError
from resumable._failures import ON_ERROR_CHOICES, Failures
from resumable._input_check import check_on_change
from resumable._progress import Progress
from resumable._session import Session
from resumable._signals import defers_signals
from resumable._text import counted

logger = logging.getLogger("resumable")


@dataclass(frozen=True)
class LoopOptions:
    """`iterate`'s arguments, checked."""

    key: Callable[[Any], str | int] | None = None
    batch: int | None = None
    progress: bool | ProgressDisplay = False
    on_change: Literal["raise", "restart", "continue"] = "raise"
    on_error: Literal["raise", "record"] = "raise"
    max_attempts: int = 3

    @classmethod
    def checked(
        cls,
        key: Callable[[Any], str | int] | None,
        batch: int | None,
        progress: bool | ProgressDisplay,
        on_change: Literal["raise", "restart", "continue"],
        on_error: Literal["raise", "record"],
        max_attempts: int,
    ) -> LoopOptions:
        """The options, or the error that says which argument is wrong (the key function
        is checked by the keyed loop, as it may refuse a job's kind of progress first)."""
        if progress is True:
            require_tqdm()  # before anything is consumed
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        check_on_change(on_change)
        return cls(key, check_batch(batch), progress, on_change, on_error, max_attempts)


def not_in_a_body() -> UsageError:
    """The error for `attempt` outside the body of a loop."""
    return UsageError(
        "attempt() works in the body of `for item in r.iterate(...)`, around the work for one item"
    )


class Loop:
    """The base of the loop drivers; `start` makes the iterator the caller loops over."""

    def __init__(self, session: Session, checkpoint: Checkpoint, options: LoopOptions) -> None:
        self._session = session
        self._checkpoint = checkpoint
        self.options = options
        self.display: LoopDisplay | None = None  # a progress bar, when asked for
        # Held weakly: after `break` the loop's generator must be closed as soon as the
        # for statement lets go of it, so that the position settles and signals act at once.
        self._generator: weakref.ref[Generator[Any, None, None]] | None = None
        # Under asyncio: the async generator the caller loops over, held weakly too. Left
        # by `break`, it is closed by the event loop (asyncio's finaliser) once the
        # `async for` lets go of it, so that the calls in flight are cancelled and a signal
        # acts at once, as after a plain loop; `async_ended` (an asyncio.Event, made at
        # its first step) is set as its `finally` starts, for the exit to wait on.
        self._async_loop: weakref.ref[AsyncGenerator[Any, None]] | None = None
        self.async_ended: Any = None
        self.in_flight: str | int | None = None  # a retried position, or a key
        self.item_failed = False  # whether attempt() recorded the item in flight
        # iterate(batch=n): a batch is out (its body runs), the keys or positions it holds
        # (None: the positions pulled since the last boundary), and whether the body
        # entered attempt() for it.
        self.batch_out = False
        self._batch_in_flight: list[str | int] | None = None
        self._batch_attempted = False
        # The thread that called iterate(), and the code of readers that take items ahead
        # of the body (looked up when the loop starts): see `read_ahead`.
        self._loop_thread = threading.get_ident()
        self._readers: dict[CodeType, str] = {}

    @property
    def session(self) -> Session:
        """The run this loop belongs to."""
        return self._session

    def start(self, items: Iterable[Any]) -> Iterator[Any]:
        """The iterator the caller loops over, once `items` is checked against the
        progress; raising here leaves the run as it was."""
        raise NotImplementedError

    # -- what the facade asks -----------------------------------------------------------

    def position(self) -> int:
        """Items done, counting earlier runs; during the loop, those before the current one."""
        return self._session.progress.position

    def note_position(self) -> None:
        """Before an explicit save: make the progress count the items done so far."""

    def items_in_flight(self) -> list[str | int]:
        """The keys or positions whose body runs: what attempt() records a failure for."""
        if self.batch_out:
            if self._batch_attempted:
                raise UsageError(
                    "attempt() goes once around the work for a whole batch of "
                    "iterate(..., batch=n): a failure is recorded for every item of the "
                    "batch. For a failure per item, leave out batch=."
                )
            self._batch_attempted = True
            if self._batch_in_flight is not None:
                return self._batch_in_flight
            return self._pulled_since_boundary()
        if self.in_flight is not None:
            return [self.in_flight]
        current = self._item_at_work()
        if current is None:
            raise not_in_a_body()
        return [current]

    def _pulled_since_boundary(self) -> list[str | int]:
        raise NotImplementedError  # only a positional batch has no list of its own

    def _item_at_work(self) -> int | None:
        """The position whose body runs inside a chunk, for drivers that have chunks."""
        return None

    def record_failure(self, wheres: list[str | int], error: Exception) -> None:
        """attempt() caught `error` in the body of the items at `wheres`: record them."""
        failures = self._session.progress.failures
        failed = [failures.record(where, error) for where in wheres]
        self.item_failed = True
        logger.warning(
            "%s: %s failed (%s: %s), attempt %d of %d; recorded, going on",
            self._session.path,
            f"a batch of {counted(len(wheres), 'item')} from {self._describe(wheres[0])}"
            if self.batch_out
            else f"item {self._describe(wheres[0])}",
            failed[0].error_type,
            failed[0].message,
            max(record.attempts for record in failed),
            self.options.max_attempts,
        )

    def _describe(self, where: str | int) -> str:
        """An item's place as a log line shows it."""
        raise NotImplementedError

    def close(self) -> None:
        """The with block ends: close the loop if it is still open, and count what it did."""
        generator = self._generator() if self._generator is not None else None
        if generator is not None:
            generator.close()
        self.settle()
        self.close_display()  # a loop never started has a bar no chunk closed

    async def aclose(self) -> None:
        """`close`, under asyncio: the async loop is closed first."""
        async_loop = self._async_loop() if self._async_loop is not None else None
        if async_loop is not None:
            await async_loop.aclose()
        elif self.async_ended is not None:
            await self.async_ended.wait()  # the event loop closes it, dropped after a break
        self.close()

    def keep_async(self, async_loop: AsyncGenerator[Any, None]) -> None:
        """`_keep`, for the async generator the caller loops over."""
        self._async_loop = weakref.ref(async_loop)

    def settle(self) -> None:
        """After the loop was left inside a chunk, count the items whose body finished."""

    # -- for the drivers ----------------------------------------------------------------

    def _accept(self, progress: Progress, display: LoopDisplay | None) -> None:
        """The loop is ready: this run's progress from now on is `progress`."""
        session = self._session
        session.progress = progress
        self.display = self._checkpoint.display = display
        self._checkpoint.start_loop(progress.position)
        session.iterated, session.refused = True, False
        session.sinks.mark()  # the output before the loop (a header) counts at once

    def _keep(self, generator: Generator[Any, None, None]) -> None:
        self._generator = weakref.ref(generator)

    def _refuse_starting_over_with_sinks(self, started_over: bool) -> None:
        """on_change="restart" started the progress over: refused while sinks hold the
        output of the old input's items (the run stays as it was)."""
        session = self._session
        if started_over and session.sinks.by_path:
            names = ", ".join(sorted(str(sink.path) for sink in session.sinks.by_path.values()))
            raise UsageError(
                f"the input changed and on_change='restart' would start {session.path} over, "
                f"but its sinks ({names}) hold the output of the old input's items. Start "
                "over with Resumable(..., restart=True), which moves them aside, or pass "
                "the same input as before."
            )

    def _report_failures(self, failures: Failures) -> None:
        path, max_attempts = self._session.path, self.options.max_attempts
        given_up = failures.given_up(max_attempts)
        if given_up:
            logger.warning(
                "%s: skipping %s that failed %s or more; see r.failed or `resumable status %s`",
                path,
                counted(len(given_up), "item"),
                counted(max_attempts, "time"),
                shlex.quote(str(path)),
            )
        if retrying := len(failures) - len(given_up):
            logger.info("%s: retrying %s", path, counted(retrying, "failed item"))

    @defers_signals
    def _boundary(self, position: int) -> BaseException | None:
        """Book-keep at an item boundary: the display, the policy, a save. Returns the
        exception that stops the loop when a signal asked for that, for the loop to raise
        in its own frame: what a traceback shows last is the loop's raise line, whose
        comment says what happened, not the library's inner workings."""
        self._checkpoint.reached(position)
        # Checked last: a signal may come mid-save. A stop once asked for stands even when
        # no signal is pending: the body may have caught a second signal's exception.
        # (Inline rather than a call of the session's: this runs every check.)
        session = self._session
        if session.signals.pending is not None or session.stop_soon:
            return session.signals.take_exception()
        return None

    def _refuse_read_ahead(self, caller: FrameType) -> None:
        """Raise when the loop's items are asked for by a reader that takes them ahead of
        the body (see `read_ahead`); `caller` is the frame that asked."""
        if threading.get_ident() != self._loop_thread or caller.f_code in self._readers:
            raise read_ahead_error(caller, self._readers)

    def _hand_out(self, wheres: list[str | int] | None) -> None:
        """A batch goes to the body: its keys or positions (None: those pulled since the
        last boundary), for attempt()."""
        self.batch_out, self._batch_in_flight = True, wheres
        self.item_failed = self._batch_attempted = False

    def _take_batch(self) -> bool:
        """The body of the batch out ran to its end; whether attempt() recorded it failed."""
        failed = self.item_failed
        self.batch_out, self._batch_in_flight, self.item_failed = False, None, False
        return failed

    def close_display(self) -> None:
        if self.display is not None:
            self.display.advance_to(self._session.progress.position)
            self.display.close()
