"""The controller: `Resumable` wires progress, policy, store and signals together."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import operator
import os
import shlex
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import Any, Literal, TypeVar, overload

from resumable._batches import (
    check_batch,
    grouped,
    pending_batches,
    read_ahead_error,
    readers_ahead,
)
from resumable._display import (
    LoopDisplay,
    ProgressDisplay,
    items_until_refresh,
    open_display,
    require_tqdm,
    write_line,
)
from resumable._errors import (
    CalledTooOftenError,
    StateFileError,
    StateNotSerializableError,
    UsageError,
    reset_command,
)
from resumable._failures import ON_ERROR_CHOICES, FailedItem, Failures
from resumable._feed import MAX_CHUNK, Feed
from resumable._input_check import check_on_change
from resumable._keyed import KeyProgress, check_key_function
from resumable._keys import Key, check_keys
from resumable._progress import PositionProgress, restore_progress
from resumable._signals import SignalGuard, default_signals, defers_signals, take_overdue
from resumable._store import document as _state_file  # the state file's format
from resumable._store.document import StateDocument
from resumable._store.file import FileStore, resolve
from resumable._text import counted, describe_key
from resumable._version import __version__
from resumable.policies import Policy, SinceLastSave, as_policy

T = TypeVar("T")
# Above this a save is no longer "small": say so once, since each save rewrites it all.
_LARGE_STATE_BYTES = 1_000_000
logger = logging.getLogger("resumable")

# The loop consults the policy at most every this many items. Between checks no Python
# code of the library runs, so this bounds how late a check can come when items suddenly
# become slow.
MAX_ITEMS_BETWEEN_CHECKS = MAX_CHUNK
_WRITER = f"resumable-loop {__version__}"


class Resumable:
    """Make a for-loop resumable: progress is saved to `path` and skipped on the next run.

    Use it as a context manager and loop over `iterate`:

        with Resumable("job.state") as r:
            for item in r.iterate(items):
                process(item)

    Args:
        path: the state file (str or PathLike). Beside it live ``<path>.bak`` (the previous
            save), ``<path>.lock`` (held while the job runs) and, during a save, a
            temporary ``.<name>.*.tmp`` file.
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
    ) -> None:
        self.path = _as_path(path)
        self._policy = as_policy(policy)
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)):
            raise TypeError(f"min_interval takes a number of seconds, got {min_interval!r}")
        if not math.isfinite(min_interval) or min_interval < 0:
            raise ValueError(f"min_interval needs a finite number >= 0, got {min_interval}")
        self._min_interval = float(min_interval)
        for name, flag in (("restart", restart), ("quiet", quiet)):
            if not isinstance(flag, bool):  # restart="no" would be true
                raise TypeError(f"{name} takes True or False, got {flag!r}")
        self._restart = restart
        self._quiet = quiet
        if signals is not None:
            signals = _signal_numbers(signals)
        self._store = FileStore(self.path)
        self._signals = SignalGuard(
            default_signals() if signals is None else signals,
            wake=_call_weakly(self._stop_after_this_item),
        )
        self._progress: PositionProgress | KeyProgress = PositionProgress()
        self._state: dict[str, Any] = {}
        self._runs = 1
        self._created_at = ""
        self._lifecycle = "new"  # then "open", then "closed"
        self._pid = 0  # the process that opened the job: a forked copy of it stays inert
        # Held weakly: after `break` the loop's chunks must be closed as soon as the for
        # statement lets go of them, so that the position settles and signals act at once.
        self._loop: weakref.ref[Generator[Any, None, None]] | None = None
        self._feed: Feed[Any] | None = None  # once the loop started
        self._display: LoopDisplay | None = None  # a progress bar, when asked for
        self._stop_soon = False
        self._abandoned: weakref.finalize[[FileStore, SignalGuard], Resumable] | None = None
        self._on_error = "raise"
        self._max_attempts = 3
        self._in_flight: str | int | None = None  # a retried position, or a key
        self._item_failed = False  # whether attempt() recorded the item in flight
        self._in_chunk = False
        # iterate(batch=n): a batch is out (its body runs), the keys or positions it holds
        # (None: the positions pulled since the last boundary), and whether the body
        # entered attempt() for it.
        self._batch_out = False
        self._batch_in_flight: list[str | int] | None = None
        self._batch_attempted = False
        # The thread that called iterate(), and the code of readers that take items ahead
        # of the body (looked up when the loop starts): see _batches.
        self._loop_thread = 0
        self._readers: dict[CodeType, str] = {}
        self._iterated = False  # whether iterate() made this run's loop
        self._refused = False  # whether iterate() was refused, and nothing made up for it
        # Failure records of earlier runs at positions this run has not reached yet, the
        # nearest last: a check pops the ones passed, never looking at the rest.
        self._unreached_failures: list[tuple[int, FailedItem]] = []
        self._warned_large_state = False
        # This run's failed encoding of the state (or of a counter it loaded: StateFileError).
        self._unsaveable: StateNotSerializableError | StateFileError | None = None
        self._start_position = 0
        self.saves = 0
        self._items_between_checks = 1
        # The policy counts every item the body finished: the position (or the done keys)
        # plus the items this run finished that move neither, retried positions and failed
        # keys. A save records those too (a success clears a record, a failure counts).
        self._uncounted = 0
        self._saved_clock = 0.0
        self._saved_count = 0
        self._last_saved: bytes | None = None  # fingerprint of what the file holds
        self._checked_clock = 0.0
        self._checked_count = 0

    # -- the public surface -------------------------------------------------------------

    @property
    def position(self) -> int:
        """Items done, counting earlier runs; during the loop, those before the current one."""
        feed = self._feed
        if self._in_chunk and feed is not None:
            return self._start_position + max(0, feed.taken() - 1)  # the current item is not done
        return self._progress.position

    @property
    def finished(self) -> bool:
        """Whether the input ran out: a finished job yields nothing on the next run."""
        return self._progress.finished

    @property
    def state(self) -> dict[str, Any]:
        """Your own data, saved with the progress and loaded on resume: dicts with str keys,
        lists, str, int, float, bool and None. A save refuses anything else, which would
        load as another type (a datetime, a tuple), with `StateNotSerializableError`."""
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"Resumable.state must be a dict, got {type(value).__name__}")
        self._state = value

    @property
    def runs(self) -> int:
        """How many runs this job has had, this one included.

        A run counts once it starts its loop (`iterate` was not refused) or saves; one that
        only opens the job and looks, or whose `iterate` was refused, leaves the file as
        it was, and the next run gets the same number.
        """
        return self._runs

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
        if self._lifecycle != "open":
            raise UsageError(
                "iterate() works inside the with block: "
                "`with Resumable(path) as r: for item in r.iterate(items): ...`"
            )
        self._require_opening_process()
        if self._iterated:
            raise UsageError(
                "iterate() was already called on this Resumable: one loop per state file. "
                "Give a second loop its own Resumable and state file."
            )
        # Refused until the loop is ready: an exception on the way (a changed input, a bad
        # argument) leaves this run as it was, so iterate() may be called again (with
        # on_change="restart", say), and a run that ends refused writes nothing.
        self._refused = True
        if progress is True:
            require_tqdm()  # before anything is consumed
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        check_on_change(on_change)
        size = check_batch(batch)
        self._on_error, self._max_attempts = on_error, max_attempts
        self._loop_thread = threading.get_ident()
        if key is not None or isinstance(self._progress, KeyProgress):
            if key is not None:
                check_key_function(key)  # before the job becomes keyed: a refusal changes nothing
            keyed = self._keyed_progress(key)
            self._report_failures(keyed.failures)
            display = open_display(progress, items, keyed.position, self.path.name)
            self._accept(keyed, display)
            key = check_key_function(key)
            if size is not None:
                batches = self._keyed_batches(items, key, keyed, size)
                self._loop = weakref.ref(batches)
                return batches
            loop = self._keyed_loop(items, key, keyed)
            self._loop = weakref.ref(loop)
            return loop
        # A copy to work on: the loaded progress stays as it was until the loop is ready.
        positional = self._progress.copy()
        # Skipping the done prefix runs the caller's iterable, so it happens here, outside
        # the library's signal-deferring code: ctrl+c during a long skip acts at once.
        retry = [
            item.position
            for item in positional.failures.to_retry(max_attempts)
            if item.position is not None
        ]
        feed, retried = positional.feed(items, str(self.path), on_change, retry=retry)
        self._report_failures(positional.failures)
        if positional.finished and not retried:
            logger.warning(
                "%s: this job already finished (%s); nothing to do. To run it again, pass "
                "restart=True (at the shell: %s)",
                self.path,
                counted(positional.position, "item"),
                reset_command(self.path),
            )
            self._accept(positional, None)
            return iter(())
        # Made once the done prefix is skipped, so a bar's clock starts with this run's work.
        display = open_display(progress, items, positional.position, self.path.name)
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
        if positional.position != self._start_position:  # on_change="restart" went to 0
            self._start_position = self._saved_count = positional.position
            self._checked_count = positional.position
        chunks = self._chunks(feed, positional, retried, size)
        self._loop = weakref.ref(chunks)
        if size is None:
            return itertools.chain.from_iterable(chunks)
        # Lists made by C code outside the library's frames, as the unbatched loop takes
        # its items: a slow input stays interruptible. Empty ones (the input ended at a
        # batch's end, a stop) are dropped.
        return filter(None, map(list, chunks))

    def _accept(
        self, progress: PositionProgress | KeyProgress, display: LoopDisplay | None
    ) -> None:
        """The loop is ready: this run's progress from now on is `progress`."""
        self._progress, self._display = progress, display
        self._iterated, self._refused = True, False

    @property
    def failed(self) -> list[FailedItem]:
        """The items that failed and are recorded (``iterate(..., on_error="record")``)."""
        return list(self._progress.failures.items.values())

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
        wheres = self._items_in_flight()
        try:
            yield
        except Exception as error:
            if self._on_error != "record":
                raise
            keyed = isinstance(self._progress, KeyProgress)
            failures = self._progress.failures
            failed = [failures.record(where, error) for where in wheres]
            self._item_failed = True
            first = describe_key(wheres[0]) if keyed else f"#{wheres[0]}"
            logger.warning(
                "%s: %s failed (%s: %s), attempt %d of %d; recorded, going on",
                self.path,
                f"a batch of {counted(len(wheres), 'item')} from {first}"
                if self._batch_out
                else f"item {first}",
                failed[0].error_type,
                failed[0].message,
                max(record.attempts for record in failed),
                self._max_attempts,
            )

    def _items_in_flight(self) -> list[str | int]:
        """The keys or positions whose body runs: what attempt() records a failure for."""
        if self._batch_out:
            if self._batch_attempted:
                raise UsageError(
                    "attempt() goes once around the work for a whole batch of "
                    "iterate(..., batch=n): a failure is recorded for every item of the "
                    "batch. For a failure per item, leave out batch=."
                )
            self._batch_attempted = True
            if self._batch_in_flight is not None:
                return self._batch_in_flight
            feed = self._feed
            assert feed is not None  # a positional batch is out
            return list(range(self._progress.position, self._start_position + feed.taken()))
        if self._in_flight is not None:
            return [self._in_flight]
        if self._in_chunk and self._feed is not None:
            return [self.position]  # the index of the item whose body runs
        raise UsageError(
            "attempt() works in the body of `for item in r.iterate(...)`, around the work "
            "for one item"
        )

    def _report_failures(self, failures: Failures) -> None:
        given_up = failures.given_up(self._max_attempts)
        if given_up:
            logger.warning(
                "%s: skipping %s that failed %s or more; see r.failed or `resumable status %s`",
                self.path,
                counted(len(given_up), "item"),
                counted(self._max_attempts, "time"),
                shlex.quote(str(self.path)),
            )
        if retrying := len(failures) - len(given_up):
            logger.info("%s: retrying %s", self.path, counted(retrying, "failed item"))

    def save(self) -> None:
        """Save the progress and `state` now.

        Raises `CalledTooOftenError` when `min_interval` has not passed since the last save.
        """
        if self._lifecycle != "open":
            raise UsageError("save() works inside the with block of the Resumable")
        now = self._now()
        waited = now - self._saved_clock
        if self._min_interval and self.saves and waited < self._min_interval:
            raise CalledTooOftenError(
                f"save() came {waited:.3f} s after the previous save, sooner than "
                f"min_interval={self._min_interval:g} s. Save less often, or lower "
                "min_interval."
            )
        if isinstance(self._progress, PositionProgress):  # keyed progress counts as it goes
            self._progress.position = self.position
        self._save(now)
        self._refused = False  # asked for: this run is recorded
        # A signal that waited for the write acts now, as it would have at once: outside
        # the loop, or a second signal inside an item.
        if stop := take_overdue():
            raise stop  # resumable: stopped once this save was done

    @defers_signals
    def __enter__(self) -> Resumable:
        if self._lifecycle != "new":
            raise UsageError("a Resumable runs once: create a new one for another run")
        try:
            self._open()
            return self
        except BaseException:
            self._release_surely()
            self._lifecycle = "closed"
            raise

    @defers_signals
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._pid != os.getpid():
                return  # a child made by os.fork(): the job stays its parent's to save
            self._close(exc)  # ends with the release
        except BaseException:
            # Not a `finally`: on the normal path its first line would be one that an
            # exception could cut before the release ran; here every line after the `try`
            # is covered by a release.
            self._release_surely()
            raise
        self._signals.deliver_deferred(exc)

    def __repr__(self) -> str:
        return (
            f"Resumable({str(self.path)!r}, position={self.position}, "
            f"finished={self.finished}, policy={self._policy!r})"
        )

    # -- opening and closing ------------------------------------------------------------

    def _require_opening_process(self) -> None:
        """Raise `UsageError` in a child made by ``os.fork()`` while this job was open."""
        if self._pid != os.getpid():
            raise UsageError(
                f"{self.path} was opened by process {self._pid}; this is process "
                f"{os.getpid()}, a copy made by os.fork() (multiprocessing's 'fork' start "
                "method makes them): only the process that opened the job saves it. Do the "
                "child's work without the Resumable and end the child with os._exit(), as "
                "multiprocessing does, rather than going on with the loop."
            )

    @defers_signals
    def _open(self) -> None:
        self._lifecycle = "open"
        self._pid = os.getpid()
        # The exit path releases the lock and the handlers whatever lands in it, except an
        # exception at its very first line (from a trace function or a handler that is not
        # ours; ours wait), which skips the exit as it would any context manager's. Then
        # they are freed once the Resumable is garbage-collected.
        self._abandoned = weakref.finalize(self, _release_abandoned, self._store, self._signals)
        self._store.lock()
        self._store.remove_stale_temp_files()
        self._load()
        if isinstance(self._progress, KeyProgress):
            self._progress.remove_retired_journals(self.path)
        self._progress.failures.remove_retired_journals(self.path)
        self._signals.install()
        self._start_position = self._progress.position
        self._saved_count = self._checked_count = self._progress.position
        self._saved_clock = self._checked_clock = time.monotonic()

    def _load(self) -> None:
        loaded = None if self._restart else self._store.load()
        if loaded is None:
            self._store.start_fresh()
            self._created_at = _state_file.now_iso()
            logger.info("%s: starting a new job", self.path)
            return
        document = loaded.document
        self._progress = restore_progress(document.progress, self.path)
        if loaded.from_backup:
            if isinstance(self._progress, KeyProgress):
                self._progress.resumed_from_backup()
            self._progress.failures.resumed_from_backup()
        self._state = document.state
        self._runs = document.runs + 1
        self._created_at = document.created_at
        # As this version would write it: a file in another form is not rewritten by a run
        # that only looks.
        self._last_saved = _state_file.fingerprint(self._progress.snapshot(), document.state)
        logger.info(
            "%s: resuming at item %s (run %s)",
            self.path,
            f"{self._progress.position:,}",
            f"{self._runs:,}",
        )

    @defers_signals
    def _close(self, leaving: BaseException | None = None) -> None:
        """Close the loop, save what it finished, then release the lock and handlers.

        `leaving` is the exception that leaves the with block, if any: when it is this
        run's own failed save of an unserialisable state, the save is not tried again (it
        would fail the same way, and show the error twice)."""
        if self._lifecycle != "open":
            self._release_surely()
            return
        self._lifecycle = "closed"
        chunks = self._loop() if self._loop is not None else None
        if chunks is not None:
            chunks.close()
        self._settle_position()
        self._close_display()  # a loop never started has a bar no chunk closed
        # Skipped when it would change nothing; when the run was refused; when a save found
        # the lock file deleted or replaced (that save raised already, and any other would
        # raise again); and when
        # the error in flight is this run's failed save of an unserialisable state (or of
        # a counter the file cannot hold), which would fail the same way and show the
        # error twice.
        failed_already = self._unsaveable is not None and leaving is self._unsaveable
        if (
            not (self._refused or self._store.lock_lost or failed_already)
            and self._changed_anything()
        ):
            self._save()
        self._report_stop()
        self._release_surely()

    def _changed_anything(self) -> bool:
        """Whether the file does not hold what this run would save: other progress or
        state, or (once its loop started) not this run in `runs`."""
        if self._iterated and not self.saves:
            return True
        current = _state_file.fingerprint(self._progress.snapshot(), self._state)
        return current is None or current != self._last_saved

    def _close_journal(self) -> None:
        if isinstance(self._progress, KeyProgress):
            self._progress.close()
        self._progress.failures.close()

    @defers_signals
    def _release_surely(self) -> None:
        """Unlock the job and put the previous signal handlers back, whatever happened.

        Our own signals wait while this runs, but an exception from elsewhere (a trace
        function, a handler that is not ours, signals=() and ctrl+c) can land at any line
        and cut a release short. Releasing is idempotent, so a second pass completes an
        interrupted first one and changes nothing after a complete one.
        """
        try:
            self._release()
        finally:
            self._release()
        if self._abandoned is not None:
            self._abandoned.detach()  # released: nothing left for the safety net to do

    @defers_signals
    def _release(self) -> None:
        try:
            self._close_journal()
            self._store.unlock()
        finally:
            # Last: from here on a signal goes to the previous handler, which may raise at
            # once, so everything else must be done by now.
            self._signals.restore()

    def _report_stop(self) -> None:
        if self._signals.stop_requested is None:
            return
        done = self._progress.position
        this_run = done - self._start_position
        if self._progress.finished:  # the signal came after the loop's last item
            line = (
                f"resumable: stopped by {self._signals.describe()} after the job finished "
                f"({counted(done, 'item')}, {this_run:,} in this run); saved to {self.path}."
            )
        else:
            line = (
                f"resumable: stopped by {self._signals.describe()} after "
                f"{counted(done, 'item')} ({this_run:,} in this run); progress saved to "
                f"{self.path}. Run again to continue."
            )
        logger.info("%s", line.removeprefix("resumable: "))
        if self._quiet:
            return
        # Through a display still drawn (a caller's tqdm bar), so the bar is not garbled.
        if self._display is None or not self._display.write(line):
            write_line(line, sys.stderr)

    # -- the loop -----------------------------------------------------------------------

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

        With `batch`, each chunk becomes one list the body gets (`iterate` maps list over
        them): a chunk is a batch, and all of it is done when the next one is asked for.
        """
        start = self._start_position  # the loop is entered once, where the run opened
        self._feed = feed
        self._signals.loop_running = True
        self._readers = readers_ahead()  # who asks for the next chunk is checked once a chunk
        try:
            self._refuse_read_ahead(sys._getframe(1))
            if batch is not None:
                yield from self._retried_batches(progress, retried, batch)
                retried = []
            # Failed items of earlier runs first, one item a chunk: when chain asks for the
            # next chunk, the body of the item ran to its end. The policy is asked as in the
            # main loop: what a retry changes (a record cleared or counted on) is saved work.
            countdown = self._items_between_checks
            for position, item in retried:
                self._in_flight, self._item_failed = position, False
                yield iter((item,))
                self._refuse_read_ahead(sys._getframe(1))
                if not self._item_failed:
                    progress.failures.succeeded(position)
                self._in_flight = None
                self._uncounted += 1
                countdown -= 1
                if countdown <= 0 or self._stop_soon or self._signals.pending is not None:
                    if stop := self._at_boundary(progress.position):
                        raise stop  # resumable: stopped between items; the progress is saved
                    countdown = self._items_between_checks
            while True:
                # Tapped for the input's fingerprint until its first items are seen.
                chunk = progress.tap(feed.chunk(batch or self._items_between_checks))
                # While a chunk is out, the last item taken is in flight: if the loop is
                # left now (break, an exception), `_settle_position` counts it as not done.
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
                    if progress.position + self._uncounted != self._saved_count:
                        self._save()
                    logger.info(
                        "%s: finished after %s", self.path, counted(start + feed.taken(), "item")
                    )
                    if stop := self._stop_asked():
                        raise stop  # resumable: stopped after the last item; the progress is saved
                    return
                progress.position = start + feed.taken()
                self._forget_passed_failures()
                if stop := self._at_boundary(progress.position):
                    raise stop  # resumable: stopped between items; the progress is saved
        finally:
            self._signals.loop_running = False
            self._batch_out = False
            self._settle_position()
            self._close_display()

    def _retried_batches(
        self, progress: PositionProgress, retried: list[tuple[int, T]], size: int
    ) -> Generator[Iterator[T], None, None]:
        """Failed items of earlier runs, in batches, before the rest of the input (part of
        `_chunks`, which delegates here and so defers signals for it)."""
        for group in grouped(retried, size):
            positions: list[str | int] = [position for position, _ in group]
            self._hand_out(positions)
            yield iter([item for _, item in group])
            self._refuse_read_ahead(sys._getframe(2))  # 1 is `_chunks`, delegating
            if not self._take_batch():
                for position in positions:
                    progress.failures.succeeded(position)
            self._uncounted += len(positions)  # the policy counts them: see __init__
            if stop := self._at_boundary(progress.position):
                raise stop  # resumable: stopped between batches; the progress is saved

    def _keyed_batches(
        self, items: Iterable[T], key: Callable[[T], Key], progress: KeyProgress, size: int
    ) -> Generator[list[T], None, None]:
        """The keyed loop of `iterate(..., batch=n)`: lists of up to `size` items whose keys
        are not done; a batch is done once the loop asks for the next one. The policy is
        asked after every batch. Not a signal-deferring section: the caller's iterable and
        key run here (the bookkeeping after a batch defers them)."""
        done, failed, max_attempts = progress.done, progress.failures.items, self._max_attempts

        def skip(item_key: Key) -> bool:  # done, or given up and left recorded
            return item_key in done or (
                item_key in failed and failed[item_key].attempts >= max_attempts
            )

        batches = pending_batches(items, key, skip, size, lambda: self._stop_soon)
        self._readers = readers_ahead()
        self._signals.loop_running = True
        try:
            self._refuse_read_ahead(sys._getframe(1))
            for keys, batch in batches:
                if batch:
                    if progress.finished:  # a finished job whose input brought new items
                        progress.finished = False
                    self._hand_out(list(keys))
                    yield batch
                    self._refuse_read_ahead(sys._getframe(1))
                    self._count_keyed_batch(progress, keys)
                if stop := self._at_boundary(len(done)):
                    raise stop  # resumable: stopped between batches; the progress is saved
            if stop := self._keyed_input_ended(progress):
                raise stop  # resumable: stopped after the last batch; the progress is saved
        finally:
            self._signals.loop_running = False
            self._batch_out = False
            self._close_display()

    def _hand_out(self, wheres: list[str | int] | None) -> None:
        """A batch goes to the body: its keys or positions (None: those pulled since the
        last boundary), for attempt()."""
        self._batch_out, self._batch_in_flight = True, wheres
        self._item_failed = self._batch_attempted = False

    def _take_batch(self) -> bool:
        """The body of the batch out ran to its end; whether attempt() recorded it failed."""
        failed = self._item_failed
        self._batch_out, self._batch_in_flight, self._item_failed = False, None, False
        return failed

    @defers_signals
    def _count_keyed_batch(self, progress: KeyProgress, keys: list[Key]) -> None:
        """The keys of a batch whose body ran to its end are done, unless attempt()
        recorded the batch as failed: then a later run retries them."""
        if self._take_batch():
            self._uncounted += len(keys)  # the policy counts them: see __init__
            return
        progress.done.update(keys)
        progress.unsaved.extend(keys)
        failures = progress.failures
        if failures:
            for item_key in keys:
                failures.succeeded(item_key)  # it failed before; now it ran

    def _refuse_read_ahead(self, caller: FrameType) -> None:
        """Raise when the loop's items are asked for by a reader that takes them ahead of
        the body (see `_batches`); `caller` is the frame that asked."""
        if threading.get_ident() != self._loop_thread or caller.f_code in self._readers:
            raise read_ahead_error(caller, self._readers)

    def _close_display(self) -> None:
        if self._display is not None:
            self._display.advance_to(self._progress.position)
            self._display.close()

    def _keyed_progress(self, key: object) -> KeyProgress:
        """The job's keyed progress: a new job's is new; a job keeps its kind."""
        progress = self._progress
        if isinstance(progress, KeyProgress):
            if key is None:
                raise UsageError(
                    f"{self.path} tracks done items by key: pass the same key= as before, "
                    "or start over with Resumable(..., restart=True) (at the shell: "
                    f"{reset_command(self.path)})"
                )
            return progress
        if progress.position or progress.finished:
            raise UsageError(
                f"{self.path} tracks done items by position ({progress.position:,} done): a "
                "job keeps the kind of progress it started with. Leave out key=, or start "
                "over with Resumable(..., restart=True) (at the shell: "
                f"{reset_command(self.path)})"
            )
        return KeyProgress.start(self.path)

    def _keyed_loop(
        self, items: Iterable[T], key: Callable[[T], str | int], progress: KeyProgress
    ) -> Generator[T, None, None]:
        """Hand out the items whose key is not done; an item is done once the loop asks
        for the next one. Python code per item (the key function runs per item anyway);
        not a signal-deferring section, because the caller's iterable and key run here."""
        # Locals, not attributes or method calls, on the per-item path: each of these saves
        # tens of nanoseconds an item. The containers are never replaced, only changed.
        done, done_add, unsaved_add = progress.done, progress.done.add, progress.unsaved.append
        failures = progress.failures
        failed = failures.items
        max_attempts = self._max_attempts
        self._readers = readers_ahead()
        self._signals.loop_running = True
        try:
            self._refuse_read_ahead(sys._getframe(1))
            countdown = self._items_between_checks
            for item in items:
                item_key = key(item)
                if type(item_key) is not str and type(item_key) is not int:
                    check_keys([item_key])  # raises UsageError, naming the bad key
                if item_key in done or (
                    failed and item_key in failed and failed[item_key].attempts >= max_attempts
                ):  # done, or given up (left recorded): skipped
                    # No item is in flight, so a signal that came while the input was read
                    # stops the loop here, not after the next item not done.
                    if self._stop_soon and (stop := self._at_boundary(len(done))):
                        raise stop  # resumable: stopped while skipping; nothing new is done
                    continue
                if progress.finished:  # a finished job whose input brought a new item
                    progress.finished = False
                self._in_flight = item_key
                yield item
                self._in_flight = None
                if self._item_failed:  # recorded by attempt(): retried on a later run
                    self._item_failed = False
                    self._uncounted += 1
                else:
                    done_add(item_key)
                    unsaved_add(item_key)
                    if failed and item_key in failed:
                        failures.succeeded(item_key)  # it failed before; now it ran
                countdown -= 1
                if countdown <= 0 or self._stop_soon:
                    self._refuse_read_ahead(sys._getframe(1))
                    if stop := self._at_boundary(len(done)):
                        raise stop  # resumable: stopped between items; the progress is saved
                    countdown = self._items_between_checks
            if stop := self._keyed_input_ended(progress):
                raise stop  # resumable: stopped after the last item; the progress is saved
        finally:
            self._signals.loop_running = False
            self._close_display()

    def _keyed_input_ended(self, progress: KeyProgress) -> BaseException | None:
        """The end of a keyed loop (by item or by batch): the job is finished, and the keys
        done since the last save are saved at once. Returns the stop of a signal that came
        meanwhile, for the loop to raise (see `_stop_asked`)."""
        progress.finished = True
        if progress.unsaved:  # as in _chunks: the flag alone waits for the exit
            self._save()
        logger.info("%s: finished; %s done", self.path, counted(progress.position, "item"))
        return self._stop_asked()

    def _stop_asked(self) -> BaseException | None:
        """At the end of the loop, the boundary after its last item: the stop of a signal
        that came during the last save, for the loop to raise there rather than let the
        code after the loop run until the with block ends."""
        return self._signals.take_exception() if self._signals.pending is not None else None

    def _settle_position(self) -> None:
        """After the loop was left inside a chunk, count the items whose body finished."""
        progress = self._progress
        if self._in_chunk and self._feed is not None and isinstance(progress, PositionProgress):
            progress.position = self._start_position + max(0, self._feed.taken() - 1)
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

    def _stop_after_this_item(self) -> None:
        """Called by the signal handler for every signal: a running loop ends after the
        current item. Once asked, the stop stands, even if the exception of a second
        signal was caught in the body: the loop raises again at the next boundary."""
        if not self._signals.loop_running:
            return  # the signal raises at once, or waits for the exit: no loop to stop
        self._stop_soon = True  # the keyed loop looks at this after each item
        if self._feed is not None:
            self._feed.cut()

    @defers_signals
    def _at_boundary(self, position: int) -> BaseException | None:
        """Book-keep at an item boundary: the display, the policy, a save. Returns the
        exception that stops the loop when a signal asked for that, for the loop to raise
        in its own frame: what a traceback shows last is the loop's raise line, whose
        comment says what happened, not the library's inner workings."""
        if self._display is not None:
            self._display.advance_to(position)
        now = self._now()
        count = position + self._uncounted
        checked = count - self._checked_count
        pace = max(0.0, now - self._checked_clock) / checked if checked > 0 else None
        self._checked_clock, self._checked_count = now, count
        since = self._since_last_save(now, count, pace)
        policy = self._policy
        if not policy.should_save(since):
            gap = policy.items_until_check(since)
        elif since.seconds < self._min_interval:
            gap = 1  # too soon: ask again after one item
        else:
            self._save(now)
            gap = policy.items_until_check(self._since_last_save(now, count, pace))
        if type(gap) is not int:  # a custom policy's answer; checked before it sizes a chunk
            gap = _whole_number_of_items(gap, policy)
        if self._display is not None:
            gap = min(gap, items_until_refresh(pace))
        # Growing the gap at most twofold per check keeps a wrong guess (a frozen or
        # coarse clock that measured no time) from jumping straight to the maximum.
        # (Comparisons rather than min() and max(): this runs every check.)
        limit = 2 * self._items_between_checks
        if limit > MAX_ITEMS_BETWEEN_CHECKS:
            limit = MAX_ITEMS_BETWEEN_CHECKS
        self._items_between_checks = gap if 1 <= gap <= limit else (1 if gap < 1 else limit)
        # Checked last: a signal may come mid-save. A stop once asked for stands even when
        # no signal is pending: the body may have caught a second signal's exception.
        if self._signals.pending is not None or self._stop_soon:
            return self._signals.take_exception()
        return None

    def _now(self) -> float:
        """The monotonic clock, looked up at call time so that freezegun's frozen clock is
        the one read. A clock that went back (freezegun's move_to) takes the last save's
        reading back with it: the jump counts as no time, and time counts again from here,
        not from when the clock catches up."""
        now = time.monotonic()
        if now < self._saved_clock:
            self._saved_clock = now
        return now

    def _since_last_save(self, now: float, count: int, pace: float | None) -> SinceLastSave:
        seconds = now - self._saved_clock  # never negative: `_now` read the clock
        # tuple.__new__ is what the named tuple's own __new__ calls, without its Python
        # frame: a third of the cost of a check.
        return tuple.__new__(SinceLastSave, (count - self._saved_count, seconds, pace))

    # -- saving -------------------------------------------------------------------------

    @defers_signals
    def _save(self, now: float | None = None) -> None:
        self._require_opening_process()
        self._store.check_lock()  # before the journal too: a second run may own the job
        if isinstance(self._progress, KeyProgress) or self._progress.failures.unsaved:
            # A state that cannot be saved is refused before a journal is written to.
            _state_file.check_state(self._state)
        if isinstance(self._progress, KeyProgress):
            # The keys first: the state file commits them. Journal files it creates get
            # the state file's permissions.
            self._progress.prepare_save(self.path, self._store.mode)
        self._progress.failures.prepare_save(self.path, self._store.mode)
        progress = self._progress.snapshot()
        document = StateDocument(
            progress=progress,
            state=self._state,
            runs=self._runs,
            created_at=self._created_at,
            saved_at=_state_file.now_iso(),
        )
        started = time.perf_counter()
        try:
            data = _state_file.encode(document, _WRITER, str(self.path))
        except (StateNotSerializableError, StateFileError) as error:
            self._unsaveable = error  # the exit does not try again and raise it twice
            raise
        # What the save records is worked out before the disk is touched: after sleeping in
        # fsync the process runs with cold caches, and the same Python code takes several
        # times longer there (benchmarks/bench_save.py).
        fingerprint = _state_file.fingerprint(progress, self._state)
        position = self._progress.position
        self._store.save(data)
        self.saves += 1
        self._last_saved = fingerprint
        self._saved_clock = time.monotonic() if now is None else now
        self._saved_count = position + self._uncounted
        if self._display is not None:
            self._display.saved()
        if len(data) > _LARGE_STATE_BYTES and not self._warned_large_state:
            self._warned_large_state = True
            self._warn_large_state(len(data))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: saved position %d (%d bytes, %d state keys) in %.1f ms",
                self.path,
                position,
                len(data),
                len(self._state),
                (time.perf_counter() - started) * 1000,
            )

    def _warn_large_state(self, size: int) -> None:
        """Say once that saves write a big file, and what makes it big."""
        state = _state_bytes(self._state)
        if state * 2 >= size:
            logger.warning(
                "%s: the state file is %.1f MB, %.1f MB of it r.state, and every save writes "
                "all of it. Keep bulky data in files of your own and put their names in "
                "r.state.",
                self.path,
                size / 1e6,
                state / 1e6,
            )
        else:
            logger.warning(
                "%s: the state file is %.1f MB (r.state only %.1f MB of it), and every save "
                "writes all of it.",
                self.path,
                size / 1e6,
                state / 1e6,
            )


def _state_bytes(state: dict[str, Any]) -> int:
    """How many bytes of the state file `r.state` takes."""
    return len(_state_file.fingerprint({}, state) or b"")


def _as_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Resumable(path) takes a str or PathLike, got {type(path).__name__}")
    given = Path(os.fspath(path))
    if not given.name:
        raise ValueError(f"Resumable(path) needs a file name, got {os.fspath(path)!r}")
    # Symlinks followed, as everywhere: a save replaces the file the link points to.
    return resolve(given)


def _signal_numbers(signals: object) -> tuple[int, ...]:
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


def _whole_number_of_items(gap: object, policy: Policy) -> int:
    """A policy's `items_until_check` answer as an int, or a TypeError that says so."""
    try:
        return operator.index(gap)  # type: ignore[arg-type]
    except TypeError:
        own_repr = type(policy).__repr__ is not object.__repr__
        name = repr(policy) if own_repr else type(policy).__qualname__ + "()"
        raise TypeError(
            f"{name}: items_until_check() returned {gap!r}; it must return a whole "
            "number of items (an int). Round a computed count down, e.g. with int() or "
            "math.floor(), so that the next check does not come late."
        ) from None


def _release_abandoned(store: FileStore, signals: SignalGuard) -> None:
    """Free what a Resumable whose exit never ran still holds.

    It runs whenever the garbage collector gets to the object, perhaps while another
    Resumable runs: so a handler is put back only where ours is still installed.
    """
    store.unlock()
    if threading.current_thread() is threading.main_thread():  # signal.signal works there only
        signals.restore_where_still_ours()


def _call_weakly(method: Callable[[], None]) -> Callable[[], None]:
    """`method` called through a weak reference to its object.

    The installed handlers hold the guard, and the guard holds this: a strong reference
    would keep the Resumable alive as long as its handlers are, so a Resumable whose exit
    never ran could never be collected and freed.
    """
    reference = weakref.WeakMethod(method)

    def call() -> None:
        bound = reference()
        if bound is not None:
            bound()

    return call
