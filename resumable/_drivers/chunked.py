"""The positional loop: items handed out in chunks of C iterators, progress by position.

The loop the caller writes runs over ``itertools.chain.from_iterable`` of the chunks this
driver makes (`resumable._feed`), so while a chunk lasts no Python code of the library
runs: the per-item cost is that of C iterators. When chain asks for the next chunk, every
item taken so far is done; the driver then moves the position and calls the checkpoint.
"""

from __future__ import annotations

import itertools
import logging
import operator
import sys
from collections.abc import Generator, Iterable, Iterator
from typing import Any, TypeVar

from resumable._checkpoint import Checkpoint
from resumable._display import open_display
from resumable._drivers.batches import grouped
from resumable._drivers.loop import Loop, LoopOptions
from resumable._drivers.read_ahead import readers_ahead
from resumable._errors import UsageError, reset_command
from resumable._failures import FailedItem
from resumable._feed import Feed
from resumable._progress import PositionProgress, WatermarkProgress, as_positional
from resumable._session import Session
from resumable._signals import defers_signals
from resumable._text import counted

T = TypeVar("T")
logger = logging.getLogger("resumable")


class ChunkedLoop(Loop):
    """`iterate` over progress by position, with or without ``batch=``."""

    def __init__(self, session: Session, checkpoint: Checkpoint, options: LoopOptions) -> None:
        super().__init__(session, checkpoint, options)
        self._progress = _positional(session)  # until `start` makes its copy
        self._feed: Feed[Any] | None = None  # once the loop started
        # While a chunk is out, its last item taken is in flight (see `_chunks`).
        self._in_chunk = False
        # Failure records of earlier runs at positions this run has not reached yet, the
        # nearest last: a check pops the ones passed, never looking at the rest.
        self._unreached_failures: list[tuple[int, FailedItem]] = []

    def start(self, items: Iterable[T]) -> Iterator[Any]:
        session, options = self._session, self.options
        # A copy to work on: the loaded progress stays as it was until the loop is ready.
        positional = self._progress.copy()
        self._progress = positional
        # Skipping the done prefix runs the caller's iterable, so it happens here, outside
        # the library's signal-deferring code: ctrl+c during a long skip acts at once.
        retry = [
            item.position
            for item in positional.failures.to_retry(options.max_attempts)
            if item.position is not None
        ]
        feed, retried = positional.feed(items, str(session.path), options.on_change, retry=retry)
        self._refuse_starting_over_with_sinks(positional.started_over)
        self._report_failures(positional.failures)
        if positional.finished and not retried:
            logger.warning(
                "%s: this job already finished (%s); nothing to do. To run it again, pass "
                "restart=True (at the shell: %s)",
                session.path,
                counted(positional.position, "item"),
                reset_command(session.path),
            )
            self._accept(positional, None)
            return iter(())
        # Made once the done prefix is skipped, so a bar's clock starts with this run's work.
        display = open_display(options.progress, items, positional.position, session.path.name)
        self._accept(positional, display)
        self._unreached_failures = sorted(
            (
                (position, failure)
                for position, failure in positional.failures.items.items()
                if isinstance(position, int) and position >= positional.position
            ),
            key=operator.itemgetter(0),
            reverse=True,
        )
        if positional.position != session.start_position:  # on_change="restart" went to 0
            session.start_position = positional.position
        chunks = self._chunks(feed, positional, retried, options.batch)
        self._keep(chunks)
        if options.batch is None:
            return itertools.chain.from_iterable(chunks)
        # Lists made by C code outside the library's frames, as the unbatched loop takes
        # its items: a slow input stays interruptible. Empty ones (the input ended at a
        # batch's end, a stop) are dropped.
        return filter(None, map(list, chunks))

    def position(self) -> int:
        feed = self._feed
        if self._in_chunk and feed is not None:
            # The current item is not done.
            return self._session.start_position + max(0, feed.taken() - 1)
        return self._session.progress.position

    def note_position(self) -> None:
        self._progress.position = self.position()

    def _item_at_work(self) -> int | None:
        if self._in_chunk and self._feed is not None:
            return self.position()  # the index of the item whose body runs
        return None

    def _pulled_since_boundary(self) -> list[str | int]:
        feed = self._feed
        assert feed is not None  # a positional batch is out
        start = self._session.start_position
        return list(range(self._progress.position, start + feed.taken()))

    def _describe(self, where: str | int) -> str:
        return f"#{where}"

    @defers_signals
    def _chunks(
        self,
        feed: Feed[T],
        progress: PositionProgress,
        retried: list[tuple[int, T]],
        batch: int | None = None,
    ) -> Generator[Iterator[T], None, None]:
        """Hand the loop its items a chunk at a time; book-keep between chunks.

        The loop runs over chain.from_iterable() of these chunks, so while a chunk lasts
        no Python code of the library runs: the per-item cost is that of C iterators.
        When chain asks for the next chunk, every item taken so far is done. The caller's
        code never runs inside this generator's frame, so all of it defers signals.

        With `batch`, each chunk becomes one list the body gets (`start` maps list over
        them): a chunk is a batch, and all of it is done when the next one is asked for.
        """
        session, checkpoint = self._session, self._checkpoint
        signals = session.signals
        start = session.start_position  # the loop is entered once, where the run opened
        self._feed = feed
        session.on_stop = feed.cut
        signals.loop_running = True
        self._readers = readers_ahead()  # who asks for the next chunk is checked once a chunk
        stop: BaseException | None = None
        try:
            self._refuse_read_ahead(sys._getframe(1))
            if batch is not None:
                yield from self._retried_batches(progress, retried, batch)
                retried = []
            # Failed items of earlier runs first, one item a chunk: when chain asks for the
            # next chunk, the body of the item ran to its end. The policy is asked as in the
            # main loop: what a retry changes (a record cleared or counted on) is saved work.
            countdown = checkpoint.items_between_checks
            for position, item in retried:
                self.in_flight, self.item_failed = position, False
                yield iter((item,))
                self._refuse_read_ahead(sys._getframe(1))
                if not self.item_failed:
                    progress.failures.succeeded(position)
                self.in_flight = None
                checkpoint.uncounted += 1
                countdown -= 1
                if countdown <= 0 or session.stop_soon or signals.pending is not None:
                    if stop := self._boundary(progress.position):
                        raise stop  # resumable: stopped between items; the progress is saved
                    countdown = checkpoint.items_between_checks
            while True:
                # Tapped for the input's fingerprint until its first items are seen.
                chunk = progress.tap(feed.chunk(batch or checkpoint.items_between_checks))
                # While a chunk is out, the last item taken is in flight: if the loop is
                # left now (break, an exception), `settle` counts it as not done.
                # A flag rather than an except clause here, which an interrupt could skip;
                # set once the chunk is made, as making one takes no item. A batch out
                # is not done at all: the position stays where it was.
                if batch is None:
                    self._in_chunk = True
                else:
                    self._hand_out(None)
                yield chunk
                self._refuse_read_ahead(sys._getframe(1))
                if batch is None:
                    self._in_chunk = False
                else:
                    self._take_batch()  # a failure attempt() recorded stays recorded
                if feed.exhausted():
                    progress.position = start + feed.taken()
                    self._forget_passed_failures()
                    progress.finished = True
                    # Items finished since the last save are saved at once; the finished
                    # flag alone (a resume that found nothing left) waits for the exit.
                    if checkpoint.unsaved_items(progress.position):
                        checkpoint.save_for_loop("completion")
                    logger.info(
                        "%s: finished after %s",
                        session.path,
                        counted(start + feed.taken(), "item"),
                    )
                    if stop := session.stop_asked():
                        raise stop  # resumable: stopped after the last item; the progress is saved
                    return
                progress.position = start + feed.taken()
                self._forget_passed_failures()
                if stop := self._boundary(progress.position):
                    raise stop  # resumable: stopped between items; the progress is saved
        finally:
            stop = None  # frees the run at once: see `resumable._drivers.loop`
            signals.loop_running = False
            self.batch_out = False
            self.settle()
            self.close_display()

    def _retried_batches(
        self, progress: PositionProgress, retried: list[tuple[int, T]], size: int
    ) -> Generator[Iterator[T], None, None]:
        """Failed items of earlier runs, in batches, before the rest of the input (part of
        `_chunks`, which delegates here and so defers signals for it)."""
        stop: BaseException | None = None
        try:
            for group in grouped(retried, size):
                positions: list[str | int] = [position for position, _ in group]
                self._hand_out(positions)
                yield iter([item for _, item in group])
                self._refuse_read_ahead(sys._getframe(2))  # 1 is `_chunks`, delegating
                if not self._take_batch():
                    for position in positions:
                        progress.failures.succeeded(position)
                self._checkpoint.uncounted += len(positions)  # the policy counts them
                if stop := self._boundary(progress.position):
                    raise stop  # resumable: stopped between batches; the progress is saved
        finally:
            stop = None  # frees the run at once: see `resumable._drivers.loop`

    def settle(self) -> None:
        if self._in_chunk and self._feed is not None:
            start = self._session.start_position
            self._progress.position = start + max(0, self._feed.taken() - 1)
            self._forget_passed_failures()

    def _forget_passed_failures(self) -> None:
        """An item that failed in an earlier run, which this run has now passed without
        recording a new failure, succeeded: its record goes."""
        unreached = self._unreached_failures
        if not unreached:  # the usual case: one test per chunk
            return
        failures, position = self._progress.failures, self._progress.position
        while unreached and unreached[-1][0] < position:
            passed, record = unreached.pop()
            if failures.items.get(passed) is record:  # not failed again
                failures.succeeded(passed)


def _positional(session: Session) -> PositionProgress:
    """The job's progress by position, or `UsageError` for a job of another kind."""
    progress = session.progress
    if progress.kind == WatermarkProgress.kind:
        raise UsageError(
            f"{session.path} tracks items that finish out of order, as r.map() does "
            f"({progress.position:,} done): a job keeps the kind of progress it started "
            "with. Go on with r.map(), or start over with Resumable(..., restart=True) (at "
            f"the shell: {reset_command(session.path)})"
        )
    return as_positional(progress)
