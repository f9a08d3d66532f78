"""The facade: `Resumable` checks its arguments, holds the run, and picks a loop driver.

The work is done behind it, one question per part: the session (`_session`: the lock, the
state read, the signal handlers, the release), the checkpoint (`_checkpoint`: when to
save, and the save), the progress (`_progress`: what is done), the store (`_store`: where
it is kept) and the loop drivers (`_drivers`: handing out the items not done).
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from resumable._checkpoint import Checkpoint, SaveRecord
from resumable._display import ProgressDisplay
from resumable._drivers.chunked import ChunkedLoop
from resumable._drivers.keyed import KeyedLoop
from resumable._drivers.loop import Loop, LoopOptions, not_in_a_body
from resumable._drivers.pool import PoolLoop
from resumable._errors import UsageError
from resumable._failures import FailedItem
from resumable._progress import KeyProgress
from resumable._session import Session
from resumable._signals import default_signals, defers_signals, signal_numbers, take_overdue
from resumable._sinks import Sink
from resumable._store.file import resolve
from resumable._store.url import JobName, JobURL, is_url
from resumable.policies import Policy, as_policy

if TYPE_CHECKING:
    import asyncio

    from resumable._save_thread import SaveThread

T = TypeVar("T")
R = TypeVar("R")


class Resumable:
    """Make a for-loop resumable: progress is saved to `path` and skipped on the next run.

    Use it as a context manager and loop over `iterate`:

        with Resumable("job.state") as r:
            for item in r.iterate(items):
                process(item)

    Args:
        path: the state file (str or PathLike). Beside it live ``<path>.bak`` (the previous
            save), ``<path>.lock`` (held while the job runs) and, during a save, a
            temporary ``.<name>.*.tmp`` file. Or the URL of a state object
            (``s3://bucket/crawl/job.state``, ``gs://``, ``az://``, ``memory://``,
            ``file://``): see docs/object-storage.md.
        policy: when to save while the loop runs; default `TimePolicy(1.0)`. Combine
            policies with ``|``: ``NPolicy(100) | TimePolicy(60)``.
        signals: the signals that stop the loop gracefully; default SIGINT, SIGTERM and
            SIGHUP where the platform has it. ``()`` leaves all handlers alone.
        min_interval: the least number of seconds between two saves. A policy save that
            comes sooner waits for the next check; an explicit `save` raises
            `CalledTooOftenError`. Saves on completion and on exit are never refused.
        restart: ignore any saved progress and start the job over. The old state file
            and its backup are moved aside to ``<path>.reset-<time>`` at the first save.
        quiet: do not print the one line on stderr when a signal stops the loop.
        clock: the clock the loop's time policies count by: a function that returns
            seconds and never goes back, called at each check (not per item). Default:
            ``time.monotonic``, looked up at each call, so that freezegun's frozen clock
            is the one read. Pass a fake clock to move time by hand in a test
            (``resumable.testing``), or ``time.time`` under time-machine, which does not
            control ``time.monotonic``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        policy: Policy | None = None,
        signals: Iterable[int] | None = None,
        min_interval: float = 0.0,
        restart: bool = False,
        quiet: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = _as_path(path)  # a Path, or a URL (a str with .name and .parent)
        checked_policy = as_policy(policy)
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)):
            raise TypeError(f"min_interval takes a number of seconds, got {min_interval!r}")
        if not math.isfinite(min_interval) or min_interval < 0:
            raise ValueError(f"min_interval needs a finite number >= 0, got {min_interval}")
        for name, flag in (("restart", restart), ("quiet", quiet)):
            if not isinstance(flag, bool):  # restart="no" would be true
                raise TypeError(f"{name} takes True or False, got {flag!r}")
        if clock is not None and not callable(clock):
            raise TypeError(
                f"clock takes a function that returns seconds, such as time.monotonic, got "
                f"{clock!r}"
            )
        numbers = default_signals() if signals is None else signal_numbers(signals)
        self._session = Session(self.path, numbers, restart=restart, quiet=quiet)
        self._checkpoint = Checkpoint(self._session, checked_policy, float(min_interval), clock)
        self._driver: Loop | None = None  # the loop iterate() or map() made
        self._loop_method = "iterate"  # which of them was called
        self._saves: SaveThread | None = None  # under `async with`: where saves are made
        # Weakly: the session must not keep the Resumable alive (its finaliser frees the
        # lock of a run whose exit never ran).
        worked = weakref.WeakMethod(self._worked)
        self._session.worked = lambda: (method := worked()) is not None and method()

    def _worked(self) -> bool:
        """Whether this run's loop has an item (or a batch) in flight, or finished one that
        moved neither the position nor the done keys (`Checkpoint.uncounted`)."""
        driver = self._driver
        busy = driver is not None and (driver.in_flight is not None or driver.batch_out)
        return busy or self._checkpoint.uncounted > 0

    # -- the public surface -------------------------------------------------------------

    @property
    def position(self) -> int:
        """Items done, counting earlier runs; during the loop, those before the current one."""
        if self._driver is not None:
            return self._driver.position()
        return self._session.progress.position

    @property
    def finished(self) -> bool:
        """Whether the input ran out: a finished job yields nothing on the next run."""
        return self._session.progress.finished

    @property
    def state(self) -> dict[str, Any]:
        """Your own data, saved with the progress and loaded on resume: dicts with str keys,
        lists, str, int, float, bool and None. A save refuses anything else, which would
        load as another type (a datetime, a tuple), with `StateNotSerializableError`."""
        return self._session.state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"Resumable.state must be a dict, got {type(value).__name__}")
        self._session.state = value

    @property
    def runs(self) -> int:
        """How many runs this job has had, this one included.

        A run counts once it starts its loop (`iterate` was not refused) or saves; one that
        only opens the job and looks, or whose `iterate` was refused, leaves the file as
        it was, and the next run gets the same number.
        """
        return self._session.runs

    @property
    def saves(self) -> int:
        """How many times this run saved."""
        return self._checkpoint.saves

    @property
    def save_log(self) -> list[SaveRecord]:
        """This run's saves, oldest first, each a `SaveRecord`: where, when (by the loop's
        clock and the wall clock), why, and for a policy save which member of the policy
        asked. Only the latest 1000 are kept (``number`` counts from the run's first);
        it is not saved in the state file."""
        return list(self._checkpoint.save_log)

    @overload
    def iterate(
        self,
        items: Iterable[T],
        *,
        key: Callable[[T], str | int] | None = None,
        batch: None = None,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> Iterator[T]: ...

    @overload
    def iterate(
        self,
        items: Iterable[T],
        *,
        key: Callable[[T], str | int] | None = None,
        batch: int,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> Iterator[list[T]]: ...

    def iterate(
        self,
        items: Iterable[T],
        *,
        key: Callable[[T], str | int] | None = None,
        batch: int | None = None,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> Iterator[T] | Iterator[list[T]]:
        """Yield the items of `items` that are not done yet (lists of them with `batch`).

        An item is done when the loop asks for the next one: if the body raises, breaks
        or is interrupted, the current item is not done. So loop over it directly: a
        wrapper that reads ahead (``Executor.map``, ``itertools.batched``) makes items
        done before the body ran them; use `batch` instead. The items are those a plain
        ``for item in items`` gets. An input read by index is entered at the saved
        position; any other has its done prefix consumed without running the body. Call
        it once per `Resumable`.

        Args:
            items: any iterable; lists, tuples, ranges, numpy arrays and other inputs
                read by index resume without reading their done items.
            key: track done items by key instead of by position: ``key(item)`` returns
                the item's key, a str or an int. A rerun skips every item whose key is
                done, wherever it now is in the input, and runs new items; for inputs
                that change between runs. A job keeps the kind of progress it started
                with.
            batch: hand out lists of up to this many items instead of single items, for
                work done a batch at a time (a bulk insert, a thread pool mapping the
                batch). A batch is done when the loop asks for the next one; every item
                of it counts done together, and a stop or a failure leaves all of it to
                run again. Works with `key` (a key seen twice goes in one batch once).
                The policy is asked after every batch.
            progress: True draws a tqdm bar (``pip install tqdm``)
                that starts at the resumed position, with the input's length as total
                when it has one, and shows when the last save happened. Or pass a display
                of your own with tqdm's ``update(n)`` method: it is advanced by the items
                this run finishes, and you close it.
            on_change: what to do when the input is not the one the job started with
                (another length, or other first items): ``"raise"`` `InputChangedError`,
                ``"restart"`` the job from its first item, or ``"continue"`` by position.
                Position-based progress only: keyed progress expects inputs to change.
            on_error: ``"record"``: an exception that leaves a ``with r.attempt():`` block
                in the body is recorded for the item (`failed`) and the loop goes on;
                ``"raise"`` (default): it propagates. Ctrl+c and SIGTERM never count.
                With `batch`, attempt() goes once around the work for the whole batch,
                and a failure is recorded for every item of the batch.
            max_attempts: failed items are retried on later runs until they have failed
                this many times; then they stay recorded and are skipped.
        """
        session = self._begin("iterate", "for item in r.iterate(items)")
        options = LoopOptions.checked(key, batch, progress, on_change, on_error, max_attempts)
        keyed = key is not None or session.progress.kind == KeyProgress.kind
        driver = (KeyedLoop if keyed else ChunkedLoop)(session, self._checkpoint, options)
        loop = driver.start(items)
        self._driver = driver
        return loop

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        workers: int | None = None,
        executor: Executor | None = None,
        ordered: bool = True,
        window: int | None = None,
        key: Callable[[T], str | int] | None = None,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> Iterator[R]:
        """Yield ``fn(item)`` for the items of `items` not done yet, calling `fn` in a pool
        of `workers` threads (or in `executor`), many items at once.

        The results come to the loop body in the thread that called `map`, in input order
        (``ordered=False``: as the calls finish). An item is done when the loop asks for the
        next result after receiving its result, as for `iterate`; the body, and every save,
        run in this thread. Progress is every item before a *watermark* plus the items done
        above it (or, with `key`, the done keys), so a rerun calls `fn` for none of them.

        Args:
            fn: called as ``fn(item)`` in a worker; with a process pool it must pickle.
            items: any iterable, read in this thread as the window allows.
            workers: the number of threads of the pool `map` makes (ThreadPoolExecutor's
                default when None).
            executor: a `concurrent.futures.Executor` of your own (a ProcessPoolExecutor,
                a distributed engine's) instead of the threads; you shut it down.
            ordered: hand the results out in input order (True), or as the calls finish.
            window: at most this many items run past the watermark (with `key`: are in
                flight); default 4 per worker. A slow item holds back new calls rather
                than letting the saved set of items done above it grow.
            key: track done items by key, as for `iterate`; at most `window` calls are
                then in flight.
            progress: a progress bar, as for `iterate`.
            on_change: what to do with a changed input, as for `iterate`.
            on_error: ``"record"``: an exception raised by `fn` is recorded for its item
                (as one leaving ``with r.attempt():`` in the body is) and the loop goes
                on; ``"raise"`` (default): it is raised here once the calls in flight
                have finished.
            max_attempts: as for `iterate`.

        A first ctrl+c (or SIGTERM) stops new calls, hands the results of those in flight
        to the body, saves and stops; a second one stops at once, and calls still running
        finish in the background and count as not done.
        """
        session = self._begin("map", "for result in r.map(fn, items)")
        options = LoopOptions.checked(key, None, progress, on_change, on_error, max_attempts)
        driver = PoolLoop.checked(
            session, self._checkpoint, options, fn, executor, workers, ordered, window
        )
        results = driver.start(items)
        self._driver = driver
        return results

    def amap(
        self,
        fn: Callable[[T], Any],
        items: Iterable[T] | AsyncIterable[T],
        *,
        concurrency: int | None = None,
        ordered: bool = True,
        window: int | None = None,
        key: Callable[[T], str | int] | None = None,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> AsyncIterator[Any]:
        """Under asyncio: yield ``await fn(item)`` for the items of `items` not done yet,
        `concurrency` calls at a time. Use it in ``async with Resumable(...) as r``::

            async for page in r.amap(fetch, urls, concurrency=50):
                await store(page)

        As `map`, with `concurrency` worker tasks in place of the threads: results come in
        input order (``ordered=False``: as the calls finish); an item is done when the
        loop asks for the next result after receiving its result; at most `window` items
        (default 4 per worker) run past the watermark. Saves are made in a thread of
        their own: the event loop runs on while one waits for the disk.

        Args:
            fn: an async function (or one returning an awaitable), awaited as
                ``fn(item)`` in a worker task.
            items: any iterable, read as the window allows; or, with `key`, an async
                iterable (a stream is read again on a rerun, its done keys skipped).
            concurrency: how many calls run at once; default 16.
            ordered: results in input order (True), or as the calls finish.
            window: at most this many items run past the watermark; default 4 per worker.
            key: track done items by key, as for `map`.
            progress: a progress bar, as for `iterate`.
            on_change: what to do with a changed input, as for `iterate`.
            on_error: as for `map`: ``"record"`` records a call's exception for its item.
            max_attempts: as for `iterate`.

        A first ctrl+c (or SIGTERM) stops new calls, hands the results of those in flight
        to the body, saves and stops (`KeyboardInterrupt`, `Interrupted`); a second one
        cancels the task that loops, and the calls still running: they count as not done.
        Cancelling that task from outside (``task.cancel()``, ``asyncio.timeout``) does the
        same, and the cancellation goes on up once the exit saved.
        """
        from resumable._drivers.aio import AsyncPoolLoop

        session, saves = self._begin_async("amap", "async for result in r.amap(fn, items)")
        options = LoopOptions.checked(key, None, progress, on_change, on_error, max_attempts)
        driver = AsyncPoolLoop.checked_async(
            session, self._checkpoint, options, saves, fn, concurrency, ordered, window
        )
        results = driver.astart(items)
        self._driver = driver
        return results

    def aiterate(
        self,
        items: Iterable[T] | AsyncIterable[T],
        *,
        key: Callable[[T], str | int] | None = None,
        batch: int | None = None,
        progress: bool | ProgressDisplay = False,
        on_change: Literal["raise", "restart", "continue"] = "raise",
        on_error: Literal["raise", "record"] = "raise",
        max_attempts: int = 3,
    ) -> AsyncIterator[Any]:
        """Under asyncio: `iterate`, as an async iterator whose saves do not block the
        event loop. Use it in ``async with Resumable(...) as r``::

            async for url in r.aiterate(urls):
                await fetch(url)

        The items, the arguments, what done means and the progress are `iterate`'s (a job
        may go on with either). `items` may also be an async iterable when the job tracks
        items by `key` (then without `batch`). Saves are made in a thread of their own,
        before the next item is handed out, while the event loop runs on. Signals and
        cancellation as for `amap`.
        """
        from resumable._drivers.aio import AsyncPoolLoop, async_only, handed_as_it_is, iterate_async

        session, saves = self._begin_async("aiterate", "async for item in r.aiterate(items)")
        options = LoopOptions.checked(key, batch, progress, on_change, on_error, max_attempts)
        if async_only(items):
            if batch is not None:
                raise UsageError(
                    "aiterate(batch=...) takes a plain iterable; for an async one, gather "
                    "each batch in the body"
                )
            # One item at a time through amap's loop: it reads an async input (by key).
            pool = AsyncPoolLoop(
                session,
                self._checkpoint,
                options,
                saves,
                fn=handed_as_it_is,
                concurrency=1,
                ordered=True,
                window=1,
            )
            items_async = pool.astart(items)
            self._driver = pool
            return items_async
        keyed = key is not None or session.progress.kind == KeyProgress.kind
        driver = (KeyedLoop if keyed else ChunkedLoop)(session, self._checkpoint, options)
        plain = cast(Iterable[T], items)  # not async_only
        looped = iterate_async(driver, driver.start(plain), self._checkpoint, saves)
        driver.keep_async(looped)
        self._driver = driver
        return looped

    def _begin_async(self, method: str, usage: str) -> tuple[Session, SaveThread]:
        """`_begin` for the loops under asyncio, which need the job opened by `async with`."""
        session = self._begin(method, usage)
        if self._saves is None:
            session.refused = False  # nothing was started: the run is as it was
            raise UsageError(
                f"{method}() works inside `async with Resumable(path) as r:` (this job was "
                "opened by a plain `with`, whose saves would stall the event loop)"
            )
        # The loop's saves are owed to it, and made in the save thread. (Not for iterate
        # and map in an `async with` block: their loops make their saves themselves.)
        self._checkpoint.deferring = True
        return session, self._saves

    def _begin(self, method: str, usage: str) -> Session:
        """Check that a loop can start now; the run stays refused until it is ready."""
        session = self._session
        if not session.is_open:
            raise UsageError(
                f"{method}() works inside the with block: `with Resumable(path) as r: {usage}: ...`"
            )
        session.require_opening_process()
        if self._driver is not None or session.iterated:
            raise UsageError(
                f"{self._loop_method}() was already called on this Resumable: one loop per "
                "state file. Give a second loop its own Resumable and state file."
            )
        self._loop_method = method
        # Refused until the loop is ready: an exception on the way (a changed input, a bad
        # argument) leaves this run as it was, so the loop may be asked for again (with
        # on_change="restart", say), and a run that ends refused writes nothing.
        session.refused = True
        return session

    def sink(
        self, path: str | os.PathLike[str], mode: Literal["t", "b"] = "t", encoding: str = "utf-8"
    ) -> Sink:
        """Open an output file that stays in step with the progress: after any stop, it
        holds the output of each item done exactly once (docs/output-files.md).

        Call it before the loop; write in the loop body (`Sink.write`, `Sink.write_json`,
        `Sink.csv`). Each save flushes and fsyncs the file before the state file records
        its length; the next run checks the file's bytes before that length and cuts it
        back to it. A new sink is a new file: one that exists already is refused, empty or
        not (another job's output, perhaps; restart=True moves it aside). A rerun of a
        finished job appends nothing: what it writes after the loop is compared with what
        the run that finished it wrote there.

        Args:
            path: the file (str or PathLike); created if missing.
            mode: ``"t"``: `write` takes str, encoded with `encoding`; ``"b"``: bytes.
            encoding: the text encoding of ``mode="t"``.
        """
        session = self._session
        if not session.is_open:
            raise UsageError("sink() works inside the with block, before the loop")
        session.require_opening_process()
        if self._driver is not None or session.iterated:
            raise UsageError(
                "sink() was called after the loop started: open every sink before "
                f"{self._loop_method}(), so that each run cuts it back before any output"
            )
        checkpoint = self._checkpoint
        if session.sinks.moves_aside(path):
            checkpoint.save("sink")  # the old state set aside before the old output
        # A new sink is recorded at 0 bytes before its file is made: see `Sinks.open`.
        return session.sinks.open(path, mode, encoding, record=lambda: checkpoint.save("sink"))

    @property
    def failed(self) -> list[FailedItem]:
        """The items that failed and are recorded (``iterate(..., on_error="record")``)."""
        return list(self._session.progress.failures.items.values())

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Wrap the body of one item: with ``on_error="record"``, an exception leaving it is
        recorded for the item and swallowed, and the loop goes on with the next item.

        ::

            for url in r.iterate(urls, key=str, on_error="record"):
                with r.attempt():
                    save(fetch(url))

        Only `Exception` is caught: ctrl+c, SIGTERM (`Interrupted`) and `SystemExit` go
        through. With ``on_error="raise"`` the exception propagates as usual. A failed
        item is retried on later runs (`iterate`'s `max_attempts`).

        With ``iterate(..., batch=n)`` it wraps the work for the whole batch, once per
        batch: an exception records a failure for every item of the batch, and those are
        retried, in batches, on later runs. A second attempt() in the same batch raises
        `UsageError` (it could not tell which item failed).
        """
        driver = self._driver
        if driver is None:
            raise not_in_a_body()
        wheres = driver.items_in_flight()
        try:
            yield
        except Exception as error:
            if driver.options.on_error != "record":
                raise
            driver.record_failure(wheres, error)

    def save(self) -> None:
        """Save the progress and `state` now.

        Raises `CalledTooOftenError` when `min_interval` has not passed since the last save.
        """
        if not self._session.is_open:
            raise UsageError("save() works inside the with block of the Resumable")
        now = self._checkpoint.now()
        self._checkpoint.check_interval(now)
        if self._driver is not None:
            self._driver.note_position()  # keyed progress counts as it goes
        self._checkpoint.save("explicit", now)
        self._session.refused = False  # asked for: this run is recorded
        # A signal that waited for the write acts now, as it would have at once: outside
        # the loop, or a second signal inside an item.
        if stop := take_overdue():
            raise stop  # resumable: stopped once this save was done

    async def asave(self) -> None:
        """`save`, under asyncio: made in the job's save thread while the event loop runs on.

        Called from another task than the one that loops, while `amap` or `aiterate`
        runs, the save is made by the loop after its current item, or at once by an
        `amap` that waits for its calls (it counts the items done in its own task), and
        this waits for it.
        """
        import asyncio

        if self._saves is None:
            raise UsageError("asave() works inside `async with Resumable(path) as r:`; use save()")
        if not self._session.is_open:
            raise UsageError("asave() works inside the async with block of the Resumable")
        signals, checkpoint = self._session.signals, self._checkpoint
        if signals.loop_running and asyncio.current_task() is not signals.task:
            checkpoint.check_interval(checkpoint.now())
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            checkpoint.ask_for_save(waiter)
            if await waiter:
                self._session.refused = False  # asked for: this run is recorded
                return
        await self._saves.run(self.save)

    @defers_signals
    def __enter__(self) -> Resumable:
        session = self._session
        if session.lifecycle != "new":
            raise UsageError("a Resumable runs once: create a new one for another run")
        try:
            session.open(self)
            self._checkpoint.start(session.progress.position)
            return self
        except BaseException:
            session.release_surely()
            session.lifecycle = "closed"
            raise

    @defers_signals
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if not self._session.opened_here():
                return  # a child made by os.fork(): the job stays its parent's to save
            self._close(exc)  # ends with the release
        except BaseException:
            # Not a `finally`: on the normal path its first line would be one that an
            # exception could cut before the release ran; here every line after the `try`
            # is covered by a release.
            self._session.release_surely()
            raise
        self._session.signals.deliver_deferred(exc)

    async def __aenter__(self) -> Resumable:
        """Open the job under asyncio: saves are made in a thread of their own, and the
        signal handlers go through the event loop (see `amap`)."""
        import asyncio

        from resumable._save_thread import SaveThread

        session = self._session
        if session.lifecycle != "new":
            raise UsageError("a Resumable runs once: create a new one for another run")
        try:
            # The state file is read here, in the event loop: one small read.
            session.open(self, asyncio.get_running_loop(), asyncio.current_task())
            self._checkpoint.start(session.progress.position)
        except BaseException:
            session.release_surely()
            session.lifecycle = "closed"
            raise
        self._saves = SaveThread()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, saves = self._session, self._saves
        if not session.opened_here() or saves is None:
            return
        import asyncio

        signals = session.signals
        signals.exiting = True  # a signal now waits for the exit, which delivers it
        try:
            cut = await self._aclose(exc)
        finally:
            session.release_surely()
            saves.close()
        stop = signals.stop_of_cancelled(exc)
        # Also when the exit was cancelled: a signal it holds (SIGTERM's death) still goes on.
        in_its_place = signals.deliver_in_event_loop(
            stop if stop is not None else exc, asyncio.get_running_loop()
        )
        if in_its_place is not None:
            # resumable: ctrl+c stopped the job, which saved; asyncio.run's main task is
            # cancelled, and asyncio.run raises KeyboardInterrupt when it ends.
            raise in_its_place from None
        if cut is not None:
            raise cut  # the exit's task was cancelled meanwhile; the job saved
        if stop is not None:
            raise stop from None  # resumable: a signal stopped the job at once; progress saved

    async def _aclose(self, leaving: BaseException | None) -> asyncio.CancelledError | None:
        """`_close` under asyncio, up to the release: the loop closed, the exit's save
        made in the save thread, the stop reported; the cancellation of the task that
        came meanwhile, if one did."""
        import asyncio

        session, checkpoint, saves = self._session, self._checkpoint, self._saves
        if not session.is_open or saves is None:
            return None
        session.lifecycle = "closed"
        driver = self._driver
        # Not cut by a cancellation (a second one, a timeout's, asyncio.run's teardown,
        # which cancels every task): closing the loop may be, but the loop has counted
        # what it did, and the save comes (`saves.run` waits for it to its end).
        # In this task, not one of its own: a task the teardown cancels before its first
        # step would not run at all.
        cut: asyncio.CancelledError | None = None
        if driver is not None:
            try:
                await driver.aclose()
            except asyncio.CancelledError as error:
                cut = error
        try:
            await saves.run(lambda: checkpoint.save_at_exit(leaving))
        except asyncio.CancelledError as error:  # made; cancelled while it was
            cut = error
        session.report_stop(driver.display if driver is not None else None)
        return cut

    def __repr__(self) -> str:
        return (
            f"Resumable({str(self.path)!r}, position={self.position}, "
            f"finished={self.finished}, policy={self._checkpoint.policy!r})"
        )

    @defers_signals
    def _close(self, leaving: BaseException | None = None) -> None:
        """Close the loop, save what it finished, then release the lock and handlers.

        `leaving` is the exception that leaves the with block, if any: when it is this
        run's own failed save of an unserialisable state, the save is not tried again (it
        would fail the same way, and show the error twice)."""
        session, checkpoint, driver = self._session, self._checkpoint, self._driver
        if not session.is_open:
            session.release_surely()
            return
        session.lifecycle = "closed"
        if driver is not None:
            driver.close()
        checkpoint.save_at_exit(leaving)
        session.report_stop(driver.display if driver is not None else None)
        session.release_surely()


def _as_path(path: str | os.PathLike[str]) -> JobName:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Resumable(path) takes a str or PathLike, got {type(path).__name__}")
    if is_url(path):  # a job on object storage: the store checks that it names an object
        return JobURL(path)
    given = Path(os.fspath(path))
    if not given.name:
        raise ValueError(f"Resumable(path) needs a file name, got {os.fspath(path)!r}")
    # Symlinks followed, as everywhere: a save replaces the file the link points to.
    return resolve(given)
