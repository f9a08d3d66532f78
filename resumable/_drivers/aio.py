"""The loops under asyncio: ``r.amap(fn, items)`` awaits `fn` for many items at once, and
``r.aiterate(items)`` hands out items one at a time, as `iterate` does.

Both keep the rule of the other loops: an item is done when the loop asks for the next one
after receiving it (its result). What differs is where the time goes. No save blocks the
event loop: the loop's code only notes the save it owes (`Checkpoint.deferring`) and
makes it in the job's save thread (`SaveThread`), waiting there while the event loop runs
the calls in flight. And a signal never raises into code: the first stops the loop at its
next boundary; one that stops at once cancels the task that loops (see `_signals`).

`amap` is `r.map`'s driver with the executor replaced by `concurrency` worker tasks that
take items from a queue and await `fn` (a task per item would cost more than the bare
loops it is measured against); the window, the progress (a watermark plus the items done
above it, or the done keys) and the failure handling are `PoolLoop`'s.

`aiterate` wraps `iterate`'s own drivers, so a job can go on with either: the sync loop
runs as ever, and the wrapper makes the saves it owes before handing the next item out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from itertools import islice
from typing import Any, TypeVar, cast

from resumable._checkpoint import Checkpoint
from resumable._drivers.loop import Loop, LoopOptions
from resumable._drivers.pool import KeysWanted, PoolLoop, check_count
from resumable._errors import UsageError
from resumable._keys import Key
from resumable._progress import KeyProgress, WatermarkProgress
from resumable._save_thread import SaveThread
from resumable._session import Session
from resumable._text import counted

T = TypeVar("T")
logger = logging.getLogger("resumable")

DEFAULT_CONCURRENCY = 16

# A call's number (the order calls start in, which is the order they were queued in), its
# item's place (index or key), whether it returned, and what it returned or raised.
Ended = tuple[int, Key | int, bool, Any]


class AsyncPoolLoop(PoolLoop):
    """`r.amap`: `fn` awaited for the items not done, `concurrency` at a time."""

    def __init__(
        self,
        session: Session,
        checkpoint: Checkpoint,
        options: LoopOptions,
        saves: SaveThread,
        *,
        fn: Callable[[Any], Any],
        concurrency: int,
        ordered: bool,
        window: int,
    ) -> None:
        super().__init__(
            session,
            checkpoint,
            options,
            fn=fn,
            executor=None,
            workers=concurrency,
            ordered=ordered,
            window=window,
        )
        self._saves = saves
        self._concurrency = concurrency

    @classmethod
    def checked_async(
        cls,
        session: Session,
        checkpoint: Checkpoint,
        options: LoopOptions,
        saves: SaveThread,
        fn: object,
        concurrency: object,
        ordered: object,
        window: object,
    ) -> AsyncPoolLoop:
        """The driver of `r.amap` for these arguments, or the error that says which one is
        wrong and what it takes."""
        if not callable(fn):
            raise TypeError(
                f"amap(fn, items) takes an async function as fn, got {type(fn).__name__}"
            )
        at_once = check_count(concurrency, "concurrency", "amap")
        ahead = check_count(window, "window", "amap")
        if not isinstance(ordered, bool):
            raise TypeError(f"amap(ordered=...) takes True or False, got {ordered!r}")
        at_once = DEFAULT_CONCURRENCY if at_once is None else at_once
        return cls(
            session,
            checkpoint,
            options,
            saves,
            fn=fn,
            concurrency=at_once,
            ordered=ordered,
            window=4 * at_once if ahead is None else ahead,
        )

    def astart(self, items: Any) -> AsyncIterator[Any]:
        """The async iterator the caller loops over, once `items` is checked."""
        keyed = self.options.key is not None or self._session.progress.kind == KeyProgress.kind
        if async_only(items) and not keyed:
            raise UsageError(
                f"{type(items).__name__} is an async iterable: pass key= to track its items "
                "by key. By position, a rerun would have to read through every done item "
                "of the stream again, and a stream seldom hands out the same items in the "
                "same order twice; by key, done items are skipped wherever they come."
            )
        work, progress = self._prepare(items)
        results = self._aresults(work, progress)
        self.keep_async(results)
        return results

    def _keyed_work(
        self, items: Any, key: Callable[[Any], Key], progress: KeyProgress
    ) -> Iterator[tuple[Key | int, Any]] | AsyncIterator[tuple[Key | int, Any]]:
        if not async_only(items):
            return super()._keyed_work(items, key, progress)
        wanted = KeysWanted(key, progress, self.options.max_attempts)

        async def work() -> AsyncIterator[tuple[Key | int, Any]]:
            async for item in items:
                if (found := wanted.of(item)) is not None:
                    yield found

        return work()

    async def _aresults(
        self,
        work: Iterator[tuple[Key | int, Any]] | AsyncIterator[tuple[Key | int, Any]],
        progress: WatermarkProgress | KeyProgress,
    ) -> AsyncGenerator[Any, None]:
        """Queue the work, at most `window` ahead; hand each result to the body; mark it
        done when the next one is asked for.

        The queue is topped up only when the loop has no result to hand out, and an idle
        worker is woken per call queued: with calls that end at once, a worker runs
        through many calls in one turn of the event loop, and the loop hands out many
        results in one, as the bare loops do; with slow calls, the queue is full whenever
        a worker comes back for more.
        """
        session, checkpoint, saves = self._session, self._checkpoint, self._saves
        signals = session.signals
        # The task a second signal cancels: the one that loops, while it loops; then the
        # one that opened the job again (the loop may have run in a task of its own).
        opener, signals.task = signals.task, asyncio.current_task()
        loop = asyncio.get_running_loop()
        fn, window, ordered, marked = self._fn, self._window, self._ordered, self._marked
        todo: deque[tuple[Key | int, Any]] = deque()  # queued: not started
        idle: deque[asyncio.Future[None]] = deque()  # a worker waiting for a call, each
        ended: deque[Ended] = deque()  # calls that ended, as they ended
        ready: dict[int, Ended] = {}  # ordered: those that ended, by number
        # The loop's, while it waits for a call: taken out as it is woken.
        waiter: list[asyncio.Future[None]] = []
        cancelling = False  # the loop cancels its workers: their cancellation is not a call's
        waking = False  # a worker was woken and has not run yet
        # Calls are numbered as they start, which is the order they were queued in (the
        # workers take them first in, first out): the next to start, the next to hand out.
        started = handed = 0
        outstanding = 0  # queued, running, or ended and not yet handed out
        held: tuple[Key | int, Any] | None = None  # taken from an async input, not queued
        held_back: deque[tuple[Key | int, Any]] = deque()  # taken, past the window's limit
        # An async input is read ahead by a feeder task, at most `window` items, into
        # `read`: the loop hands out results and sees signals while the input waits.
        read: deque[tuple[Key | int, Any]] = deque()
        feeder: asyncio.Task[None] | None = None
        feeder_waits: list[asyncio.Future[None]] = []  # the feeder's, while `read` is full
        input_ended = False
        # Whether the loop must look at more than its count after the result in hand: what
        # comes while the body awaits (a signal, an `asave`) says so through `look_now`.
        attention = False

        async def call_each() -> None:
            nonlocal waking, started
            while True:
                if not todo:
                    wake = loop.create_future()
                    idle.append(wake)
                    await wake
                    waking = False  # this worker was the one woken
                    continue
                where, item = todo.popleft()
                number = started
                started += 1
                if todo and not waking:
                    wake_a_worker()  # for the calls after this one, should this one wait
                try:
                    awaitable = fn(item)
                except BaseException as error:
                    entry: Ended = (number, where, False, error)
                else:
                    try:
                        entry = (number, where, True, await awaitable)
                    except asyncio.CancelledError as error:
                        if cancelling:
                            raise
                        entry = (number, where, False, error)  # fn's own, not the loop's
                    except GeneratorExit:
                        raise  # the worker itself is closed (destroyed while pending)
                    except BaseException as error:
                        if isinstance(error, TypeError):
                            error = _not_async(fn, awaitable, error)
                        entry = (number, where, False, error)
                ended.append(entry)
                if waiter:  # taken, so the calls that end after it cost one test
                    wake_the_loop()

        # Cast once: a subscripted type is built anew each time the expression runs.
        from_async = isinstance(work, AsyncIterator)  # an async input (by key)
        work_sync = cast(Iterator[tuple[Key | int, Any]], work)
        work_async = cast(AsyncIterator[tuple[Key | int, Any]], work)

        async def top_up() -> None:
            """Queue the work the window allows, and wake a worker per call queued."""
            nonlocal outstanding, held, feeder, input_ended
            if not from_async:
                queue_from_input()
                return
            # An async input is tracked by key (`astart` refuses one by position): only
            # `outstanding` counts against the window, no watermark.
            while not input_ended and outstanding < window:
                if held is None:
                    if read:
                        held = read.popleft()
                        # Woken at half: one wake-up per half a window read, not per item.
                        wakes = feeder_waits and len(read) <= window // 2
                        if wakes and not feeder_waits[0].done():
                            feeder_waits[0].set_result(None)
                    else:  # an async input: its next item may wait on the network
                        if feeder is None:
                            feeder = loop.create_task(feed())
                        if not feeder.done():
                            await the_input_or_a_call_ends(feeder)
                            if read or feeder.done():
                                continue
                            return  # a result to hand out meanwhile, or a signal
                        feeder.result()  # the input's own error, after the items before it
                    if held is None:
                        input_ended = True
                        break
                if session.stop_soon:  # came while an async input made us wait: no call
                    break
                todo.append(held)
                outstanding += 1
                held = None
                # A worker woken now (an async input may make the next item wait, and the
                # calls queued so far should run meanwhile), unless one is on its way.
                if not waking:
                    wake_a_worker()

        def queue_from_input() -> None:
            """`top_up` for an input that is no async one: the items taken in C, as many
            as the window has room for, and those past the watermark's limit put back."""
            nonlocal outstanding, input_ended, work_sync
            if input_ended and not outstanding and (more := self.more_work()) is not None:
                work_sync, input_ended = more, False  # a list the body appended to
            room = window - outstanding
            before = len(todo)
            limit = marked.watermark + window if marked is not None else None
            while held_back and room > 0:  # taken before, past the limit then
                if limit is not None and held_back[0][0] >= limit:  # type: ignore[operator]
                    break
                todo.append(held_back.popleft())
                room -= 1
            if room > 0 and not held_back and not input_ended:
                taking = len(todo)
                todo.extend(islice(work_sync, room))
                if len(todo) - taking < room:
                    input_ended = True  # islice took fewer: the input ran out
                if limit is not None:
                    # Indexes rise along the input (retried items come first, below the
                    # limit): those past it are the last ones taken.
                    while len(todo) > taking and todo[-1][0] >= limit:  # type: ignore[operator]
                        held_back.appendleft(todo.pop())
            added = len(todo) - before
            outstanding += added
            if session.stop_soon:  # a signal while the input was read: no new call
                drop_queued()
            elif added and not waking:
                wake_a_worker()

        def wake_a_worker() -> None:
            """Wake an idle worker, if there is one.

            One at a time: the worker woken wakes the next as it takes a call while more
            are queued. So calls that wait start a worker each, one turn of the event loop
            apart, while calls that end at once all run in the first worker woken (the
            others would wake to an empty queue: most of the cost of a result).
            """
            nonlocal waking
            while idle:
                wake = idle.popleft()
                if not wake.done():
                    wake.set_result(None)
                    waking = True
                    return

        def wake_the_loop(_: object = None) -> None:
            if waiter:
                waiting = waiter.pop()  # woken once (or cancelled: the loop's task was)
                if not waiting.done():
                    waiting.set_result(None)

        async def feed() -> None:
            async for found in work_async:
                read.append(found)
                wake_the_loop()
                if len(read) >= window:
                    feeder_waits.append(loop.create_future())
                    try:
                        await feeder_waits[0]
                    finally:
                        feeder_waits.clear()

        async def the_input_or_a_call_ends(feeder: asyncio.Future[None]) -> None:
            """Wait for the async input's next item (or its end), a call to end, or a
            signal (`stop_soon`): results reach the body, and a signal stops the loop,
            while the input waits."""
            waiter.append(loop.create_future())
            feeder.add_done_callback(wake_the_loop)
            try:
                await waiter[0]
            finally:
                feeder.remove_done_callback(wake_the_loop)
                waiter.clear()

        def look_now() -> None:
            """A save asked for by another task (`asave`), or a signal: the loop looks at
            it after the result in hand, or at once if it waits for a call."""
            nonlocal attention
            attention = True
            wake_the_loop()

        def stop_soon() -> None:
            """A signal (the first stops new calls): the calls queued are taken back now,
            also while the body awaits, so that no worker starts one."""
            drop_queued()
            look_now()

        async def a_call_ends() -> None:
            waiter.append(loop.create_future())
            try:
                await waiter[0]
            finally:
                waiter.clear()

        def take_in_order(first: Ended) -> Ended | None:
            """Ordered, when calls ended out of order: park what ended by number, and
            take the one whose result is next, if it has ended."""
            ready[first[0]] = first
            while ended:
                entry = ended.popleft()
                ready[entry[0]] = entry
            return ready.pop(handed, None)

        def drop_queued() -> None:
            """Take back the calls not started: they are not made."""
            nonlocal outstanding
            outstanding -= len(todo)
            todo.clear()

        async def wait_for_calls_in_flight() -> None:
            """Let the calls started end; their results are not handed out (not done)."""
            nonlocal outstanding
            drop_queued()
            while True:
                outstanding -= len(ended) + len(ready)
                ended.clear()
                ready.clear()
                if outstanding <= 0:
                    return
                await a_call_ends()

        workers = [loop.create_task(call_each()) for _ in range(min(self._concurrency, window))]
        self.async_ended = ended_event = asyncio.Event()
        completed = False
        stop: BaseException | None = None
        signals.loop_running = True
        attention = session.stop_soon or signals.pending is not None or checkpoint.owed is not None
        session.on_stop, checkpoint.on_owed = stop_soon, look_now
        try:
            countdown = checkpoint.items_between_checks
            failed = progress.failures.items  # the same dict for the whole loop
            # In order, the result's index is the watermark's, and nothing is done above:
            # the watermark moves on by one here, without a call (most results, ordered).
            below = marked.below if marked is not None else None
            above = marked.done_above if marked is not None else None
            while True:
                # The next call whose result goes to the body, if it has ended: the first
                # that ended, unless ordered and another call is next by number.
                found: Ended | None
                if ended:
                    found = ended.popleft()
                    if ordered and (found[0] != handed or ready):
                        found = take_in_order(found)
                else:
                    found = ready.pop(handed, None) if ready else None
                if found is None:
                    if session.stop_soon:  # a signal: calls not started are not made
                        drop_queued()
                    else:
                        await top_up()
                    if not outstanding:
                        break
                    if ended:  # top_up may have waited on an async input: calls ended
                        continue
                    if checkpoint.owed is not None:  # an asave while the calls run: made now
                        await pay_owed(checkpoint, saves)
                        continue
                    await a_call_ends()
                    continue
                outstanding -= 1
                handed += 1
                _, where, returned, value = found
                if not returned:
                    if self.options.on_error != "record" or not isinstance(value, Exception):
                        await wait_for_calls_in_flight()
                        raise value
                    self.record_failure([where], value)
                    self.item_failed = False
                    self._passed(where, progress)
                else:
                    self.in_flight = where  # item_failed is False: each reader resets it
                    yield value
                    self.in_flight = None
                    if below is not None and where == below.position and not above:
                        if self.item_failed or where in failed:
                            self._count(where, progress)
                        else:
                            below.position = where + 1
                    elif (
                        marked is None
                        or self.item_failed
                        or where in failed
                        or not marked.mark_done(where)  # type: ignore[arg-type]
                    ):  # by key, a recorded failure, a retry: see _count
                        self._count(where, progress)
                countdown -= 1
                if countdown <= 0 or attention:
                    stopping = session.stop_soon or signals.pending is not None
                    attention = stopping  # once stopping, at every result until the last
                    if countdown <= 0 or stopping:
                        checkpoint.reached(progress.position)
                        countdown = checkpoint.items_between_checks
                    if checkpoint.owed is not None:  # by the check, or asked for (asave)
                        await pay_owed(checkpoint, saves)
                    if stopping:
                        drop_queued()
                        if not outstanding:
                            stop = signals.take_exception()
                            raise stop  # resumable: stopped after the calls in flight; saved
            if session.stop_soon or signals.pending is not None:  # came as the work ran out
                checkpoint.reached(progress.position)
                if checkpoint.owed is not None:
                    await pay_owed(checkpoint, saves)
                stop = signals.take_exception()
                raise stop  # resumable: stopped after the calls in flight; progress saved
            progress.finished = True
            if checkpoint.unsaved_items(progress.position):
                checkpoint.save_for_loop("completion")
                await pay_owed(checkpoint, saves)
            logger.info("%s: finished; %s done", session.path, counted(progress.position, "item"))
            completed = True
            if stop := session.stop_asked():
                raise stop  # resumable: stopped after the last result; the progress is saved
        finally:
            stopped_by_a_signal = stop is not None
            stop = None  # frees the run at once: see `resumable._drivers.loop`
            ended_event.set()
            signals.loop_running = False
            session.on_stop = checkpoint.on_owed = None
            signals.task = opener
            checkpoint.tell_askers(False)  # a save asked for and not made: theirs to make
            # Calls still running (a break, an error in the body, a second signal) are
            # cancelled, and count as not done; idle workers just end.
            cancelling = True
            for worker in workers:
                worker.cancel()
            feeding = [feeder] if feeder is not None else []
            for task in feeding:  # the items read ahead are not taken: no call for them
                task.cancel()
            try:
                await asyncio.gather(*workers, *feeding, return_exceptions=True)
            except asyncio.CancelledError:
                # The task cancelled as the signal's stop leaves (asyncio.run's teardown):
                # the cancellation would take the stop's place, and the exit would not
                # know to deliver the signal (SIGTERM's death). The stop goes on.
                if not stopped_by_a_signal:
                    raise
            if not completed:
                logger.debug("%s: the calls in flight were cancelled", session.path)
            self.close_display()


async def pay_owed(checkpoint: Checkpoint, saves: SaveThread) -> None:
    """Make the save the loop owes, in the save thread, and tell those who asked for it."""
    try:
        await saves.run(checkpoint.pay_owed)
    except BaseException as error:
        if checkpoint.owed is None:  # made, and then the task was cancelled
            checkpoint.tell_askers(True)
        else:
            checkpoint.tell_askers(False, error)
        raise
    checkpoint.tell_askers(True)


async def handed_as_it_is(item: T) -> T:
    """The "call" of `r.aiterate` over an async input: the item itself."""
    return item


async def iterate_async(
    driver: Loop, items: Iterator[T], checkpoint: Checkpoint, saves: SaveThread
) -> AsyncGenerator[T, None]:
    """`r.aiterate`: the items of `iterate`'s loop `items` (made by `driver`), with the
    saves that loop owes made in the save thread before the next item goes out."""
    driver.async_ended = ended = asyncio.Event()
    signals = driver.session.signals
    # The task a second signal cancels: see AsyncPoolLoop._aresults.
    opener, signals.task = signals.task, asyncio.current_task()
    try:
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            if checkpoint.owed is not None:
                await pay_owed(checkpoint, saves)
            yield item
        if checkpoint.owed is not None:
            await pay_owed(checkpoint, saves)
    finally:
        ended.set()
        signals.task = opener
        checkpoint.tell_askers(False)  # a save asked for and not made: theirs to make
        # Closed by the event loop after a break: the sync loop ends now, as it would
        # when a plain for statement lets go of it (the position settles, signals act).
        driver.close()


def async_only(items: object) -> bool:
    """Whether `items` is an async iterable, and no plain one."""
    return not isinstance(items, Iterable) and isinstance(items, AsyncIterable)


def _not_async(fn: object, returned: object, error: TypeError) -> BaseException:
    """The error for an `fn` that returned no awaitable (what amap takes instead); `error`
    itself when what it returned was awaitable, and the TypeError came from awaiting it."""
    if inspect.isawaitable(returned):
        return error
    wrong = TypeError(
        f"amap(fn, items) awaits fn(item), but {getattr(fn, '__name__', fn)!r} returned "
        f"{type(returned).__name__}, which cannot be awaited: pass an async function "
        "(async def). For a blocking function use r.map(fn, items), or wrap it: "
        "`async def call(item): return await asyncio.to_thread(fn, item)`"
    )
    wrong.__cause__ = error
    return wrong
