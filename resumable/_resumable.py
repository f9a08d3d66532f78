"""The controller: `Resumable` wires progress, policy, store and signals together."""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import time
import weakref
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from resumable import _state_file
from resumable._errors import CalledTooOftenError, StateFileError, UsageError
from resumable._feed import MAX_CHUNK, Feed
from resumable._progress import PositionProgress
from resumable._signals import SignalGuard, default_signals, defers_signals
from resumable._state_file import StateDocument
from resumable._store import FileStore
from resumable._version import __version__
from resumable.policies import Policy, SinceLastSave, as_policy

T = TypeVar("T")
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
            becomes the backup at the first save.
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
        self._restart = restart
        self._quiet = quiet
        self._store = FileStore(self.path)
        self._signals = SignalGuard(
            default_signals() if signals is None else signals, wake=self._stop_after_this_item
        )
        self._progress = PositionProgress()
        self._state: dict[str, Any] = {}
        self._runs = 1
        self._created_at = ""
        self._lifecycle = "new"  # then "open", then "closed"
        # Held weakly: after `break` the loop's chunks must be closed as soon as the for
        # statement lets go of them, so that the position settles and signals act at once.
        self._loop: weakref.ref[Generator[Iterator[Any], None, None]] | None = None
        self._feed: Feed[Any] | None = None  # once the loop started
        self._in_chunk = False
        self._iterated = False
        self._start_position = 0
        self.saves = 0
        self._items_between_checks = 1
        self._saved_clock = 0.0
        self._saved_position = 0
        self._last_saved: bytes | None = None  # fingerprint of what the file holds
        self._checked_clock = 0.0
        self._checked_position = 0

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
        """Your own JSON-ready data, saved with the progress and loaded on resume."""
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"Resumable.state must be a dict, got {type(value).__name__}")
        self._state = value

    @property
    def runs(self) -> int:
        """How many runs this job has had, this one included."""
        return self._runs

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield the items of `items` that are not done yet.

        An item is done when the loop asks for the next one: if the body raises, breaks
        or is interrupted, the current item is not done. A sequence is entered at the
        saved position; any other iterable has its done prefix consumed without running
        the body. Call it once per `Resumable`.
        """
        if self._lifecycle != "open":
            raise UsageError(
                "iterate() works inside the with block: "
                "`with Resumable(path) as r: for item in r.iterate(items): ...`"
            )
        if self._iterated:
            raise UsageError(
                "iterate() was already called on this Resumable: one loop per state file. "
                "Give a second loop its own Resumable and state file."
            )
        self._iterated = True
        if self._progress.finished:
            logger.warning(
                "%s: this job already finished (%d items); nothing to do. To run it "
                "again, pass restart=True or delete the state file.",
                self.path,
                self._progress.position,
            )
            return iter(())
        # Skipping the done prefix runs the caller's iterable, so it happens here, outside
        # the library's signal-deferring code: ctrl+c during a long skip acts at once.
        feed = self._progress.feed(items, str(self.path))
        chunks = self._chunks(feed)
        self._loop = weakref.ref(chunks)
        return itertools.chain.from_iterable(chunks)

    def save(self) -> None:
        """Save the progress and `state` now.

        Raises `CalledTooOftenError` when `min_interval` has not passed since the last save.
        """
        if self._lifecycle != "open":
            raise UsageError("save() works inside the with block of the Resumable")
        now = time.monotonic()
        waited = now - self._saved_clock
        if self._min_interval and self.saves and waited < self._min_interval:
            raise CalledTooOftenError(
                f"save() came {waited:.3f} s after the previous save, sooner than "
                f"min_interval={self._min_interval:g} s. Save less often, or lower "
                "min_interval."
            )
        self._progress.position = self.position
        self._save(now)

    @defers_signals
    def __enter__(self) -> Resumable:
        self._open()
        return self

    @defers_signals
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close(exc)

    def __repr__(self) -> str:
        return (
            f"Resumable({str(self.path)!r}, position={self.position}, "
            f"finished={self.finished}, policy={self._policy!r})"
        )

    # -- opening and closing ------------------------------------------------------------

    @defers_signals
    def _open(self) -> None:
        if self._lifecycle != "new":
            raise UsageError("a Resumable runs once: create a new one for another run")
        self._store.lock()
        try:
            self._store.remove_stale_temp_files()
            self._load()
            self._signals.install()
            self._lifecycle = "open"
            self._start_position = self._progress.position
            self._saved_position = self._checked_position = self._progress.position
            self._saved_clock = self._checked_clock = time.monotonic()
        except BaseException:
            try:
                self._signals.restore()
            finally:
                self._store.unlock()
            raise

    def _load(self) -> None:
        loaded = None if self._restart else self._store.load()
        if loaded is None:
            self._created_at = _state_file.now_iso()
            logger.info("%s: starting a new job", self.path)
            return
        document = loaded.document
        try:
            self._progress = PositionProgress.restore(document.progress)
        except ValueError as error:
            raise StateFileError(
                f"{self.path} holds progress this version cannot use: {error}"
            ) from None
        self._state = document.state
        self._runs = document.runs + 1
        self._created_at = document.created_at
        self._last_saved = _state_file.fingerprint(document.progress, document.state)
        logger.info(
            "%s: resuming at item %d (run %d)", self.path, self._progress.position, self._runs
        )

    @defers_signals
    def _close(self, exc: BaseException | None) -> None:
        if self._lifecycle != "open":
            return
        try:
            try:
                chunks = self._loop() if self._loop is not None else None
                if chunks is not None:
                    chunks.close()
                self._settle_position()
                current = _state_file.fingerprint(self._progress.snapshot(), self._state)
                if current is None or current != self._last_saved:
                    self._save()  # a write is skipped only when it would change nothing
            finally:
                self._lifecycle = "closed"
                self._store.unlock()
            self._report_stop()
        finally:
            # Last: from here on a signal goes to the previous handler, which may raise at
            # once, so everything else must be done by now.
            self._signals.restore()
        self._signals.deliver_deferred(exc)

    def _report_stop(self) -> None:
        if self._signals.stop_requested is None or self._quiet:
            return
        done = self._progress.position
        sys.stderr.write(
            f"resumable: stopped by {self._signals.describe()} after {done} items "
            f"({done - self._start_position} in this run); progress saved to "
            f"{self.path}. Run again to continue.\n"
        )

    # -- the loop -----------------------------------------------------------------------

    @defers_signals
    def _chunks(self, feed: Feed[T]) -> Generator[Iterator[T], None, None]:
        """Hand the loop its items a chunk at a time; book-keep between chunks.

        The loop runs over chain.from_iterable() of these chunks, so while a chunk lasts
        no Python code of the library runs: the per-item cost is that of C iterators.
        When chain asks for the next chunk, every item taken so far is done. The caller's
        code never runs inside this generator's frame, so all of it defers signals.
        """
        start = self._start_position  # the loop is entered once, where the run opened
        self._feed = feed
        self._signals.loop_running = True
        try:
            while True:
                # While a chunk is out, the last item taken is in flight: if the loop is
                # left now (break, an exception), `_settle_position` counts it as not done.
                # A flag rather than an except clause here, which an interrupt could skip.
                self._in_chunk = True
                yield feed.chunk(self._items_between_checks)
                self._in_chunk = False
                if feed.exhausted():
                    self._progress.position = start + feed.taken()
                    self._progress.finished = True
                    self._save()
                    logger.info("%s: finished after %d items", self.path, start + feed.taken())
                    return
                self._at_boundary(start + feed.taken())
        finally:
            self._signals.loop_running = False

    def _settle_position(self) -> None:
        """After the loop was left inside a chunk, count the items whose body finished."""
        if self._in_chunk and self._feed is not None:
            self._progress.position = self._start_position + max(0, self._feed.taken() - 1)

    def _stop_after_this_item(self) -> None:
        if self._feed is not None:
            self._feed.cut()

    @defers_signals
    def _at_boundary(self, position: int) -> None:
        self._progress.position = position
        now = time.monotonic()
        checked = position - self._checked_position
        pace = max(0.0, now - self._checked_clock) / checked if checked > 0 else None
        self._checked_clock, self._checked_position = now, position
        since = self._since_last_save(now, position, pace)
        gap = self._policy.items_until_check(since)
        if self._policy.should_save(since):
            if since.seconds < self._min_interval:
                gap = 1  # too soon: ask again after one item
            else:
                self._save(now)
                gap = self._policy.items_until_check(self._since_last_save(now, position, pace))
        # Growing the gap at most twofold per check keeps a wrong guess (a frozen or
        # coarse clock that measured no time) from jumping straight to the maximum.
        self._items_between_checks = max(
            1, min(gap, 2 * self._items_between_checks, MAX_ITEMS_BETWEEN_CHECKS)
        )
        if self._signals.pending is not None:  # checked last: a signal may come mid-save
            raise self._signals.take_exception()

    def _since_last_save(self, now: float, position: int, pace: float | None) -> SinceLastSave:
        # A frozen clock moved back with freezegun's move_to() must not give negative time.
        seconds = max(0.0, now - self._saved_clock)
        return SinceLastSave(position - self._saved_position, seconds, pace)

    # -- saving -------------------------------------------------------------------------

    @defers_signals
    def _save(self, now: float | None = None) -> None:
        progress = self._progress.snapshot()
        document = StateDocument(
            progress=progress,
            state=self._state,
            runs=self._runs,
            created_at=self._created_at,
            saved_at=_state_file.now_iso(),
        )
        started = time.perf_counter()
        self._store.save(_state_file.encode(document, _WRITER))
        self.saves += 1
        self._last_saved = _state_file.fingerprint(progress, self._state)
        self._saved_clock = time.monotonic() if now is None else now
        self._saved_position = self._progress.position
        logger.debug(
            "%s: saved position %d in %.1f ms",
            self.path,
            self._progress.position,
            (time.perf_counter() - started) * 1000,
        )


def _as_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Resumable(path) takes a str or PathLike, got {type(path).__name__}")
    resolved = Path(os.fspath(path))
    if not resolved.name:
        raise ValueError(f"Resumable(path) needs a file name, got {os.fspath(path)!r}")
    return resolved.absolute()
