"""One run of a job, from the with block's start to its end, and what stops its loop.

Opening takes the lock, reads the state (or starts a new job), and installs the signal
handlers; closing releases them, whatever happened, and says what a signal stopped. In
between, the session holds the run's data (the progress, the user's state, the run count)
that a save writes, and turns the signals that arrive into a stop at the loop's next item
boundary (`stop_soon`, `stop_asked`). A finaliser frees the lock and the handlers of a run whose
with block never ran its exit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from resumable._display import LoopDisplay, write_line
from resumable._errors import UsageError
from resumable._progress import PositionProgress, Progress, restore_progress
from resumable._signals import SignalGuard, defers_signals
from resumable._sinks import Sinks
from resumable._store import Store, open_store
from resumable._store.document import fingerprint, now_iso
from resumable._store.url import JobName, local_anchor
from resumable._text import counted

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("resumable")


class Session:
    """The lifecycle of one run: lock, load, handlers, the stop line, release."""

    def __init__(
        self, path: JobName, signals: Iterable[int], *, restart: bool, quiet: bool
    ) -> None:
        self.path = path
        self.store: Store = open_store(path)
        self.signals = SignalGuard(signals, wake=_call_weakly(self._stop_after_this_item))
        self._restart = restart
        self._quiet = quiet
        self.lifecycle = "new"  # then "open", then "closed"
        self.pid = 0  # the process that opened the job: a forked copy of it stays inert
        self._abandoned: weakref.finalize[[Store, SignalGuard], Any] | None = None
        # What a save writes: the progress, the user's state, and the job's record.
        self.progress: Progress = PositionProgress()
        self.state: dict[str, Any] = {}
        self.runs = 1
        self.created_at = ""
        # The output files of r.sink: local files, for a job named by a URL too.
        self.sinks = Sinks(local_anchor(path), restart=restart, rerun=self._rerun_of_finished_job)
        self.saved_fingerprint: bytes | None = None  # of what the state file holds
        self.start_position = 0  # the progress's position when this run's loop started
        # Whether this run's loop has an item in flight, or finished one that moved neither
        # the position nor the done keys: the Resumable, which knows its loop, answers.
        self.worked: Callable[[], bool] = _no
        self.iterated = False  # whether iterate() made this run's loop
        self.refused = False  # whether iterate() was refused, and nothing made up for it
        # A stop asked for by a signal during the loop: it stands, even if the exception of
        # a second signal was caught in the body. `on_stop` ends the running loop's current
        # chunk after the item in flight.
        self.stop_soon = False
        self.on_stop: Callable[[], None] | None = None

    @property
    def is_open(self) -> bool:
        """Whether the with block runs: between the entry and the exit."""
        return self.lifecycle == "open"

    def opened_here(self) -> bool:
        """Whether this process opened the job (not a copy made by ``os.fork()``)."""
        return self.pid == os.getpid()

    def require_opening_process(self) -> None:
        """Raise `UsageError` in a child made by ``os.fork()`` while this job was open."""
        if self.pid != os.getpid():
            raise UsageError(
                f"{self.path} was opened by process {self.pid}; this is process "
                f"{os.getpid()}, a copy made by os.fork() (multiprocessing's 'fork' start "
                "method makes them): only the process that opened the job saves it. Do the "
                "child's work without the Resumable and end the child with os._exit(), as "
                "multiprocessing does, rather than going on with the loop."
            )

    @defers_signals
    def open(
        self,
        owner: object,
        event_loop: asyncio.AbstractEventLoop | None = None,
        task: asyncio.Task[Any] | None = None,
    ) -> None:
        """Lock the job, read its state and install the handlers; `owner` is the object
        whose collection frees them, should its exit never run. Under asyncio the handlers
        go through `event_loop`, and a stop at once cancels `task` (see `_signals`)."""
        self.lifecycle = "open"
        self.pid = os.getpid()
        # The exit path releases the lock and the handlers whatever lands in it, except an
        # exception at its very first line (from a trace function or a handler that is not
        # ours; ours wait), which skips the exit as it would any context manager's. Then
        # they are freed once the Resumable is garbage-collected.
        self._abandoned = weakref.finalize(owner, _release_abandoned, self.store, self.signals)
        self.store.lock()
        self.store.remove_stale_temp_files()
        self._load()
        self.store.remove_retired_journals()
        if event_loop is None:
            self.signals.install()
        else:
            self.signals.install_in_event_loop(event_loop, task)
        self.start_position = self.progress.position

    def _load(self) -> None:
        loaded = None if self._restart else self.store.load()
        if loaded is None:
            self.store.start_fresh()
            self.created_at = now_iso()
            logger.info("%s: starting a new job", self.path)
            return
        document = loaded.document
        self.progress = restore_progress(
            document.progress, self.store, str(self.path), document.logged
        )
        if loaded.from_backup:
            self.progress.resumed_from_backup()
        self.state = document.state
        self.runs = document.runs + 1
        self.created_at = document.created_at
        self.sinks.recorded = dict(document.sinks)
        # As this version would write it: a file in another form is not rewritten by a run
        # that only looks.
        self.saved_fingerprint = fingerprint(self.progress.snapshot(), document.state)
        logger.info(
            "%s: resuming at item %s (run %s)",
            self.path,
            f"{self.progress.position:,}",
            f"{self.runs:,}",
        )

    def _rerun_of_finished_job(self) -> bool:
        """Whether the job was finished when this run opened it, and this run did no item
        since: none moved the position (a keyed input that grew hands out new items), none
        that moves it not (a retried failure, a key that failed) is done or in flight."""
        progress = self.progress
        return progress.finished and progress.position == self.start_position and not self.worked()

    def item_in_flight(self) -> bool:
        """Whether output written now may not count yet: a save records the sinks'
        lengths at the last item boundary. So it is from the loop's start (the item in
        flight) until the with block leaves without an error once the loop has finished
        (the code after the loop, a footer: a run stopped there runs it again)."""
        return self.iterated and not (self.progress.finished and self.sinks.finishing)

    def stop_asked(self) -> BaseException | None:
        """At the end of the loop, the boundary after its last item: the stop of a signal
        that came during the last save, for the loop to raise there rather than let the
        code after the loop run until the with block ends."""
        return self.signals.take_exception() if self.signals.pending is not None else None

    def _stop_after_this_item(self) -> None:
        """Called by the signal handler for every signal: a running loop ends after the
        current item. Once asked, the stop stands, even if the exception of a second
        signal was caught in the body: the loop raises again at the next boundary."""
        if not self.signals.loop_running:
            return  # the signal raises at once, or waits for the exit: no loop to stop
        self.stop_soon = True  # the keyed loop looks at this after each item
        if self.on_stop is not None:
            self.on_stop()

    def report_stop(self, display: LoopDisplay | None) -> None:
        """Say on stderr (and in the log) that a signal stopped the run, and where."""
        if self.signals.stop_requested is None:
            return
        done = self.progress.position
        this_run = done - self.start_position
        if self.progress.finished:  # the signal came after the loop's last item
            line = (
                f"resumable: stopped by {self.signals.describe()} after the job finished "
                f"({counted(done, 'item')}, {this_run:,} in this run); saved to {self.path}."
            )
        else:
            line = (
                f"resumable: stopped by {self.signals.describe()} after "
                f"{counted(done, 'item')} ({this_run:,} in this run); progress saved to "
                f"{self.path}. Run again to continue."
            )
        logger.info("%s", line.removeprefix("resumable: "))
        if self._quiet:
            return
        # Through a display still drawn (a caller's tqdm bar), so the bar is not garbled.
        if display is None or not display.write(line):
            write_line(line, sys.stderr)

    @defers_signals
    def release_surely(self) -> None:
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
            self.sinks.close()
            self.store.close_journals()
            self.store.unlock()
        finally:
            # Last: from here on a signal goes to the previous handler, which may raise at
            # once, so everything else must be done by now.
            self.signals.restore()


def _release_abandoned(store: Store, signals: SignalGuard) -> None:
    """Free what a Resumable whose exit never ran still holds.

    It runs whenever the garbage collector gets to the object, perhaps while another
    Resumable runs: so a handler is put back only where ours is still installed.
    """
    store.unlock()
    if threading.current_thread() is threading.main_thread():  # signal.signal works there only
        signals.restore_where_still_ours()


def _no() -> bool:
    return False


def _call_weakly(method: Callable[[], None]) -> Callable[[], None]:
    """`method` called through a weak reference to its object.

    The installed handlers hold the guard, and the guard holds this: a strong reference
    would keep the session alive as long as its handlers are, so a run whose exit never
    ran could never be collected and freed.
    """
    reference = weakref.WeakMethod(method)

    def call() -> None:
        bound = reference()
        if bound is not None:
            bound()

    return call
