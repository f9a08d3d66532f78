"""The concurrent loop: ``r.map(fn, items)`` calls `fn` in an executor's workers, and
hands the results to the loop body in the thread that iterates.

An item is done when the loop asks for the next result after receiving its result, as
for `iterate`. Items finish in any order, so progress by position is a watermark plus
the items done above it (`WatermarkProgress`); with ``key=`` it is the set of done keys.
At most `window` items run past the watermark (or, by key, are in flight): a slow item
holds back new submissions instead of letting the saved set grow.

All bookkeeping, every save and the body run in the iterating thread; the workers only
call `fn`. A first signal stops the submissions, hands the results of the calls in flight
to the body, saves and stops; a second one stops at once, cancelling the calls not
started (the ones running finish in the background and count as not done).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FuturesTimeoutError
from itertools import chain, count, islice
from operator import length_hint
from typing import Any, TypeVar

from resumable._checkpoint import Checkpoint
from resumable._display import open_display
from resumable._drivers.keyed import keyed_progress
from resumable._drivers.loop import Loop, LoopOptions
from resumable._drivers.read_ahead import readers_ahead
from resumable._errors import UsageError, reset_command
from resumable._feed import MAX_CHUNK, Feed
from resumable._keys import Key, check_keys
from resumable._progress import (
    KeyProgress,
    PositionProgress,
    WatermarkProgress,
    as_positional,
    as_watermark,
)
from resumable._progress.keys import check_key_function
from resumable._session import Session
from resumable._text import counted, describe_key

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger("resumable")


class PoolLoop(Loop):
    """`r.map`: `fn` over the items not done, in an executor, results to the body."""

    def __init__(
        self,
        session: Session,
        checkpoint: Checkpoint,
        options: LoopOptions,
        *,
        fn: Callable[[Any], Any],
        executor: Executor | None,
        workers: int | None,
        ordered: bool,
        window: int,
    ) -> None:
        super().__init__(session, checkpoint, options)
        self._fn = fn
        self._executor = executor
        self._workers = workers
        self._ordered = ordered
        self._window = window
        # The job's progress, of one kind or the other, once `start` chose it.
        self._marked: WatermarkProgress | None = None
        self._keyed: KeyProgress | None = None
        # What gives more work once the work ran out, if the input was a list the body
        # appended to after it was read to its end (`more_work`).
        self._more: Callable[[], Iterator[tuple[Key | int, Any]] | None] = _nothing_more

    @classmethod
    def checked(
        cls,
        session: Session,
        checkpoint: Checkpoint,
        options: LoopOptions,
        fn: object,
        executor: object,
        workers: object,
        ordered: object,
        window: object,
    ) -> PoolLoop:
        """The driver of `r.map` for these arguments, or the error that says which one is
        wrong and what it takes."""
        if not callable(fn):
            raise TypeError(f"map(fn, items) takes a function as fn, got {type(fn).__name__}")
        threads, ahead = check_count(workers, "workers"), check_count(window, "window")
        if threads is not None and executor is not None:
            raise ValueError(
                "map() takes workers= (the threads of a pool it makes) or executor= (your "
                "own pool), not both"
            )
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                f"map(executor=...) takes a concurrent.futures.Executor, got {executor!r}"
            )
        if not isinstance(ordered, bool):
            raise TypeError(f"map(ordered=...) takes True or False, got {ordered!r}")
        return cls(
            session,
            checkpoint,
            options,
            fn=fn,
            executor=executor,
            workers=threads,
            ordered=ordered,
            window=ahead if ahead is not None else default_window(threads, executor),
        )

    def start(self, items: Iterable[T]) -> Iterator[Any]:
        work, progress = self._prepare(items)
        results = self._results(work, progress)
        self._keep(results)
        return results

    def _prepare(
        self, items: Iterable[T]
    ) -> tuple[Iterator[tuple[Key | int, T]], WatermarkProgress | KeyProgress]:
        """The work (the items not done, each with its place) and the progress it counts
        to, once the input is checked; from here on the loop is this run's."""
        options, session = self.options, self._session
        work: Iterator[tuple[Key | int, T]]
        if options.key is not None or session.progress.kind == KeyProgress.kind:
            if options.key is not None:
                check_key_function(options.key)
            keyed = keyed_progress(session, options.key)
            key = check_key_function(options.key)
            self._report_failures(keyed.failures)
            work = self._keyed_work(items, key, keyed)  # type: ignore[assignment]
            self._keyed = keyed
            progress: WatermarkProgress | KeyProgress = keyed
        else:
            marked = self._watermark_progress()
            retry = [
                failure.position
                for failure in marked.failures.to_retry(options.max_attempts)
                if failure.position is not None
            ]
            feed, retried = marked.feed(items, str(session.path), options.on_change, retry)
            self._refuse_starting_over_with_sinks(marked.started_over)
            self._report_failures(marked.failures)
            work = self._indexed_work(feed, marked, retried)
            progress = self._marked = marked
        display = open_display(options.progress, items, progress.position, session.path.name)
        self._accept(progress, display)
        return work, progress

    def _watermark_progress(self) -> WatermarkProgress:
        session = self._session
        progress = session.progress
        if progress.kind == WatermarkProgress.kind:
            return as_watermark(progress).copy()
        if (
            progress.kind == PositionProgress.kind
            and not (progress.position or progress.finished)
            and not progress.failures
        ):
            return WatermarkProgress.from_position(as_positional(progress).copy())
        raise UsageError(
            f"{session.path} tracks done items by position ({progress.position:,} done, in "
            "order, by iterate()): a job keeps the kind of progress it started with. Go on "
            "with iterate(), or start over with Resumable(..., restart=True) (at the shell: "
            f"{reset_command(session.path)})"
        )

    def _describe(self, where: str | int) -> str:
        return describe_key(where) if self._keyed is not None else f"#{where}"

    # -- the work: what is not done, with where it is -------------------------------------

    def _indexed_work(
        self, feed: Feed[T], progress: WatermarkProgress, retried: list[tuple[int, T]]
    ) -> Iterator[tuple[Key | int, T]]:
        """The failed items to retry, then the input's items from the watermark, each with
        its index; those done above the watermark are left out.

        An iterator of C parts (`chain` of `zip`s): the Python code runs once per chunk of
        the input, not per item."""
        read = _InputRead(feed, progress)
        self._more = read.more
        return chain(retried, chain.from_iterable(read.chunks()))

    def _keyed_work(
        self, items: Iterable[T], key: Callable[[T], Key], progress: KeyProgress
    ) -> Iterator[tuple[Key | int, T]] | AsyncIterator[tuple[Key | int, T]]:
        """The items whose key is not done (nor given up), each with its key, once."""
        wanted = KeysWanted(key, progress, self.options.max_attempts)
        source = iter(items)
        if type(source) is not _LIST_ITERATOR:
            return filter(None, map(wanted.of, source))

        # A list: read to its length as it is (a list's iterator that reads past the end
        # stops for good), and on to the end of what the body appended, when asked.
        def up_to_the_end() -> Iterator[tuple[Key | int, Any]] | None:
            left = length_hint(source)
            return filter(None, map(wanted.of, islice(source, left))) if left else None

        self._more = up_to_the_end
        return up_to_the_end() or iter(())

    def more_work(self) -> Iterator[tuple[Key | int, Any]] | None:
        """Once the work ran out and every result was handed out: the work of the items
        the body appended to a list input after it was read to its end (as a for loop
        over a list goes on with them), or None."""
        return self._more()

    # -- the loop -------------------------------------------------------------------------

    def _results(
        self, work: Iterator[tuple[Key | int, T]], progress: WatermarkProgress | KeyProgress
    ) -> Generator[Any, None, None]:
        """Submit the work, at most `window` ahead; hand each result to the body; mark it
        done when the next one is asked for."""
        session, checkpoint = self._session, self._checkpoint
        signals = session.signals
        executor = self._executor
        owned = executor is None
        if executor is None:
            executor = ThreadPoolExecutor(self._workers, thread_name_prefix="resumable-map")
        marked = self._marked
        # In flight: the future of each call, with its place and item. Calls that ended
        # wait in `ended` (unordered) or in `order`, the submission order (ordered).
        pending: dict[Future[Any], tuple[Key | int, T]] = {}
        order: deque[Future[Any]] = deque()
        ended: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        held: tuple[Key | int, T] | None = None  # taken from the work, not yet submitted
        input_ended = False
        fn, window, ordered = self._fn, self._window, self._ordered
        self._readers = readers_ahead()
        signals.loop_running = True
        completed = False
        stop: BaseException | None = None
        try:
            self._refuse_read_ahead(sys._getframe(1))
            countdown = checkpoint.items_between_checks
            while True:
                # Submit while the window allows and no stop was asked for.
                while not input_ended and not session.stop_soon and len(pending) < window:
                    if held is None:
                        held = next(work, None)
                        if held is None:
                            input_ended = True
                            break
                    if marked is not None and int(held[0]) >= marked.watermark + window:
                        break  # a slow item holds the watermark back: wait for it
                    future = executor.submit(fn, held[1])
                    pending[future] = held
                    if ordered:
                        order.append(future)
                    else:
                        future.add_done_callback(ended.put)
                    held = None
                if not pending:
                    if input_ended and (more := self.more_work()) is not None:
                        work, input_ended = more, False
                        continue
                    break
                future = _next_ended(order, ended) if ordered else _next_ended(None, ended)
                where, _ = pending.pop(future)
                error = future.exception()
                if error is not None and _cut_by_the_stop(error, signals.stop_requested):
                    # Not done, and no failure of the item's: a ctrl+c that reached the
                    # workers too, or a signal that broke the pool. In order, the results
                    # after it would come out of order: they are not handed out either.
                    if ordered:
                        break
                    continue
                if error is not None:
                    self._call_failed(where, error, progress, pending)
                else:
                    self.in_flight, self.item_failed = where, False
                    yield future.result()
                    self.in_flight = None
                    self._count(where, progress)
                countdown -= 1
                stopping = session.stop_soon or signals.pending is not None
                if countdown <= 0 or stopping:
                    self._refuse_read_ahead(sys._getframe(1))
                    checkpoint.reached(progress.position)
                    countdown = checkpoint.items_between_checks
                    # A second signal that came during the check (a save) waited for it:
                    # it stops the loop now, without waiting for the calls in flight.
                    if (stopping and not pending) or signals.overdue:
                        stop = signals.take_exception()
                        raise stop  # resumable: stopped after the calls in flight; progress saved
            if session.stop_soon or signals.pending is not None:  # came as the work ran out
                checkpoint.reached(progress.position)
                stop = signals.take_exception()
                raise stop  # resumable: stopped after the calls in flight; progress saved
            progress.finished = True
            if checkpoint.unsaved_items(progress.position):
                checkpoint.save_for_loop("completion")
            logger.info("%s: finished; %s done", session.path, counted(progress.position, "item"))
            completed = True
            if stop := session.stop_asked():
                raise stop  # resumable: stopped after the last result; the progress is saved
        finally:
            stop = None  # frees the run at once: see `resumable._drivers.loop`
            signals.loop_running = False
            for future in pending:
                future.cancel()  # not started: never runs; running: finishes, not done
            if owned:
                executor.shutdown(wait=completed, cancel_futures=True)
            self.close_display()

    def _count(self, where: Key | int, progress: WatermarkProgress | KeyProgress) -> None:
        """The body of the result for `where` ran to its end: it is done, unless
        attempt() recorded it failed."""
        if self.item_failed:
            self.item_failed = False
            self._passed(where, progress)
            return
        marked, keyed = self._marked, self._keyed
        if keyed is not None:
            keyed.done.add(where)
            keyed.unsaved.append(where)
        elif marked is None or not marked.mark_done(int(where)):
            self._checkpoint.uncounted += 1  # a failed item of an earlier run, retried
        failures = progress.failures
        if failures and where in failures.items:
            failures.succeeded(where)  # it failed before; now it ran

    def _passed(self, where: Key | int, progress: WatermarkProgress | KeyProgress) -> None:
        """A failure was recorded for `where`: passed this run, as `iterate` passes a
        failed item, and retried on a later one."""
        marked = self._marked
        if marked is None or not marked.mark_done(int(where)):  # else counted by it
            self._checkpoint.uncounted += 1  # the policy counts it: see Checkpoint

    def _call_failed(
        self,
        where: Key | int,
        error: BaseException,
        progress: WatermarkProgress | KeyProgress,
        pending: dict[Future[Any], Any],
    ) -> None:
        """`fn` raised for `where`: recorded with ``on_error="record"``; otherwise raised
        here, in the iterating thread, once the calls in flight have finished (their
        results are not handed out: they are not done)."""
        if self.options.on_error != "record" or not isinstance(error, Exception):
            for future in pending:
                future.cancel()
            wait(pending)
            raise error
        self.record_failure([where], error)
        self.item_failed = False
        self._passed(where, progress)


# How long the loop's thread waits for a call before it looks for a signal: a signal that
# arrives just as a thread starts to block waits for that block to end before its handler
# runs, so a loop waiting on a call of minutes would not see a second ctrl+c.
_WAKE_SECONDS = 0.1


def _next_ended(
    order: deque[Future[Any]] | None, ended: queue.SimpleQueue[Future[Any]]
) -> Future[Any]:
    """The next call whose result goes to the body: the first submitted (`order`, for
    ordered results), else the first that ended. Waits in short steps, so that signal
    handlers run while it waits."""
    if order is not None:
        future = order[0]
        while True:
            try:
                future.exception(timeout=_WAKE_SECONDS)  # waits; the call's error stays put
            except FuturesTimeoutError:
                continue
            return order.popleft()
    while True:
        try:
            return ended.get(timeout=_WAKE_SECONDS)
        except queue.Empty:
            continue


def _cut_by_the_stop(error: BaseException, stop_requested: int | None) -> bool:
    """Whether a call's `error` is the stop's doing: after a signal stopped the loop, a
    KeyboardInterrupt raised in a worker (ctrl+c goes to the whole process group) or a
    pool broken by it (a worker killed by the signal)."""
    return stop_requested is not None and isinstance(error, (KeyboardInterrupt, BrokenExecutor))


def default_window(workers: int | None, executor: Executor | None) -> int:
    """How many items may run past the watermark: four per worker."""
    if workers is None:
        # The standard executors say how many workers they have only privately.
        found = getattr(executor, "_max_workers", None)
        workers = found if type(found) is int and found > 0 else _default_workers()
    return 4 * workers


def _default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's own default


class KeysWanted:
    """Which items of the input a keyed loop hands out: those whose key is not done, nor
    given up, nor seen before in this run; each once, with its key."""

    def __init__(self, key: Callable[[Any], Key], progress: KeyProgress, max_attempts: int):
        self._key, self._done, self._failed = key, progress.done, progress.failures.items
        self._max_attempts = max_attempts
        self._seen: set[Key] = set()

    def of(self, item: Any) -> tuple[Key | int, Any] | None:
        """`item` with its key when it is wanted, else None."""
        item_key = self._key(item)
        if type(item_key) is not str and type(item_key) is not int:
            check_keys([item_key])  # raises UsageError, naming the bad key
        if item_key in self._done or item_key in self._seen:
            return None
        failed = self._failed.get(item_key)
        if failed is not None and failed.attempts >= self._max_attempts:
            return None
        self._seen.add(item_key)
        return item_key, item


def check_count(value: object, name: str, method: str = "map") -> int | None:
    """`workers=`, `concurrency=` or `window=` of `method`: None, or a whole number >= 1."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"{method}({name}=...) takes a whole number >= 1, got {value!r}")
    return value


class _InputRead:
    """The input from the watermark, a chunk at a time, each item with its index.

    Done items are left out: those an earlier run finished above the watermark, and those
    the watermark passed (it passes only done items) while the input was not read there
    yet, the window being full. This run adds to `done_above` only indexes already read,
    so past the highest index an earlier run finished, a chunk needs no test per item.
    """

    def __init__(self, feed: Feed[Any], progress: WatermarkProgress) -> None:
        self._feed, self._progress = feed, progress
        self._index: int | None = None  # the next item's, once reading started

    def chunks(self) -> Iterator[Iterable[tuple[Key | int, Any]]]:
        progress, feed = self._progress, self._feed
        index = progress.watermark if self._index is None else self._index
        done_above, below = progress.done_above, progress.below
        done_before = max(done_above, default=-1)
        while True:
            numbers = count(index)
            pairs = zip(numbers, progress.tap(feed.chunk(MAX_CHUNK)), strict=False)
            yield pairs if index > done_before else _not_done(pairs, done_above, below)
            # zip takes the next number before it finds the chunk ended: one too many.
            index = self._index = next(numbers) - 1
            if feed.exhausted():
                return

    def more(self) -> Iterator[tuple[Key | int, Any]] | None:
        """The items a list input gained after it was read to its end, if any."""
        if self._index is None or self._feed.exhausted():
            return None
        return chain.from_iterable(self.chunks())


_LIST_ITERATOR: type[Iterator[Any]] = type(iter([]))


def _nothing_more() -> None:
    return None


def _not_done(
    pairs: Iterator[tuple[int, T]], done_above: set[int], below: PositionProgress
) -> Iterator[tuple[int, T]]:
    for pair in pairs:
        if pair[0] not in done_above and pair[0] >= below.position:
            yield pair
