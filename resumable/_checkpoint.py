"""When to save, and the save: the one place that reads the clock.

Every loop calls `Checkpoint.reached` at an item boundary with the number of items done;
the checkpoint reads the monotonic clock, measures the pace, asks the policy (which never
reads a clock) whether to save, saves when it should and `min_interval` allows, and says
how many items may pass before the next check. A save writes the session's progress and
state through its store.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from resumable._display import LoopDisplay, items_until_refresh
from resumable._errors import CalledTooOftenError, StateFileError, StateNotSerializableError
from resumable._feed import MAX_CHUNK
from resumable._session import Session
from resumable._signals import defers_signals
from resumable._store import document as _state_file  # the state file's format
from resumable._store.document import SinkRecord, StateDocument
from resumable._store.progress_log import ProgressLog, new_log_id
from resumable._version import __version__
from resumable.policies import Policy, PolicySwitch, SinceLastSave

# The loop consults the policy at most every this many items. Between checks no Python
# code of the library runs, so this bounds how late a check can come when items suddenly
# become slow.
MAX_ITEMS_BETWEEN_CHECKS = MAX_CHUNK
# Above this a save is no longer "small": say so once, since each save rewrites it all.
_LARGE_STATE_BYTES = 1_000_000
_WRITER = f"resumable-loop {__version__}"
# `Resumable.save_log` keeps this run's latest saves, no more: bounded memory however long
# the run.
SAVE_LOG_LENGTH = 1000
if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("resumable")

SaveReason = Literal["policy", "explicit", "completion", "exit", "signal", "sink"]
# The saves that may be a record appended to the progress log; the others (the end of a
# run) compact, so that a job at rest is one state file.
_APPENDED: frozenset[str] = frozenset(("policy", "explicit", "sink"))


class SaveRecord(NamedTuple):
    """One save of this run, as `Resumable.save_log` lists it (in memory only: the state
    file does not keep it).

    Attributes:
        number: which save of the run it was: 1 for the first (`r.saves` counts them).
        position: the items done that it saved (keyed progress: the keys done).
        seconds: when, by the loop's clock (the `clock` given to `Resumable`), in seconds
            since the loop started; ``0.0`` for a save before the loop started.
        saved_at: when, by the wall clock: the state file's ``saved_at`` (UTC).
        reason: ``"policy"`` (the policy asked), ``"explicit"`` (`r.save()`),
            ``"completion"`` (the input ran out), ``"exit"`` (the with block ended with
            unsaved work), ``"signal"`` (a signal stopped the run; the exit saved) or
            ``"sink"`` (`r.sink` opened a new output file, recorded at once).
        fired: for a policy save, the member of the policy that asked for it (the policy
            itself unless it is a `PolicySwitch`); ``None`` for the other reasons.
    """

    number: int
    position: int
    seconds: float
    saved_at: datetime
    reason: SaveReason
    fired: Policy | None = None


class Checkpoint:
    """The clock, the policy, `min_interval`, the pace, and the save."""

    def __init__(
        self,
        session: Session,
        policy: Policy,
        min_interval: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._session = session
        self._clock = clock  # None: time.monotonic, looked up at every reading
        self.policy = policy
        self._min_interval = min_interval
        self.saves = 0
        self.items_between_checks = 1
        # The policy counts every item the body finished: the position (or the done keys)
        # plus the items this run finished that move neither, retried positions and failed
        # keys. A save records those too (a success clears a record, a failure counts).
        self.uncounted = 0
        self.display: LoopDisplay | None = None  # the loop's bar, told of saves
        self._saved_clock = 0.0
        self._saved_count = 0
        self._checked_clock = 0.0
        self._checked_count = 0
        self._pace: float | None = None  # seconds per item, as last measured
        # The clock's last reading, and how far it went back in all: added to its readings.
        self._last_reading = -math.inf
        self._went_back = 0.0
        self._checked_went_back = 0.0  # as it was at the last check
        self._loop_started: float | None = None  # the loop's clock when the loop started
        self.save_log: deque[SaveRecord] = deque(maxlen=SAVE_LOG_LENGTH)
        self._warned_large_state = False
        # This run's failed encoding of the state (or of a counter it loaded: StateFileError).
        self.unsaveable: StateNotSerializableError | StateFileError | None = None
        # Under asyncio the loop's saves are made in a thread of their own, so that an fsync
        # never stalls the event loop: the loop's code only notes the save it owes (`owed`,
        # the arguments of `save`), and the async driver makes it (`pay_owed`). Saves from
        # two threads take turns (`_saving`): an explicit save waits for one in flight.
        self.deferring = False
        self.owed: tuple[SaveReason, float | None, Policy | None] | None = None
        # Told when another task makes the loop owe a save (`ask_for_save`): the async loop
        # then looks at it after the result in hand, instead of testing `owed` at each.
        self.on_owed: Callable[[], None] | None = None
        self._saving = threading.Lock()
        # Under asyncio, saves another task asked for (`Resumable.asave`) while the loop
        # runs: the loop makes them, as it makes the saves it owes, and tells the askers.
        self._asked: list[asyncio.Future[bool]] = []

    def start(self, count: int) -> None:
        """The run opened with `count` items done (what an explicit save counts from)."""
        self._saved_count = self._checked_count = count

    def start_loop(self, count: int) -> None:
        """The loop starts with `count` items done: the policy's time and items count from
        now, not from the opening of the with block (setup before `iterate` is no time of
        the loop's, and a frozen clock entered after the opening is the one counted)."""
        if self._clock is not None:
            _check_reading(self._clock)
        now = self._loop_started = self.now()
        self._saved_clock = self._checked_clock = now
        self._saved_count = self._checked_count = count

    def now(self) -> float:
        """The loop's clock: the clock given to `Resumable`, or else the monotonic clock
        looked up at call time (so that freezegun's frozen clock is the one read, and a
        call per check is all it costs), with a move back counted as no time.

        A reading below the previous one (freezegun's move_to) moves every later reading
        up by the difference: the time measured before the jump is kept, none is taken
        away, and time counts on from the new reading."""
        clock = self._clock
        reading = time.monotonic() if clock is None else clock()
        if reading < self._last_reading:
            self._went_back += self._last_reading - reading
        self._last_reading = reading
        return reading + self._went_back

    def unsaved_items(self, position: int) -> bool:
        """Whether items were finished since the last save, with `position` done."""
        return position + self.uncounted != self._saved_count

    @defers_signals
    def reached(self, position: int) -> None:
        """Book-keep at an item boundary, `position` items done: the display, the policy,
        a save, and the number of items to the next check (`items_between_checks`)."""
        display = self.display
        if display is not None:
            display.advance_to(position)
        sinks = self._session.sinks
        if sinks.by_path:  # no item is in flight: all output so far is of items done
            sinks.mark()
        now = self.now()
        count = position + self.uncounted
        checked = count - self._checked_count
        if checked <= 0:
            pace = None
        elif self._went_back == self._checked_went_back:
            pace = self._pace = (now - self._checked_clock) / checked
        else:  # the clock went back since the last check: this interval measured nothing
            pace = self._pace
        self._checked_clock, self._checked_count = now, count
        self._checked_went_back = self._went_back
        since = self._since_last_save(now, count, pace)
        policy = self.policy
        if not policy.should_save(since):
            gap = policy.items_until_check(since)
        elif self.saves and since.seconds < self._min_interval:
            gap = 1  # too soon after this run's last save: ask again after one item
        elif self.deferring:  # under asyncio: the async driver makes it in the save thread
            self.owed = ("policy", now, _member_that_fired(policy, since))
            # What the policy is told once that save is made: nothing since it.
            gap = policy.items_until_check(tuple.__new__(SinceLastSave, (0, 0.0, pace)))
        else:
            self.save("policy", now, _member_that_fired(policy, since))
            gap = policy.items_until_check(self._since_last_save(now, count, pace))
        if type(gap) is not int:  # a custom policy's answer; checked before it sizes a chunk
            gap = _whole_number_of_items(gap, policy)
        if display is not None:
            gap = min(gap, items_until_refresh(pace))
        # Growing the gap at most twofold per check keeps a wrong guess (a frozen or
        # coarse clock that measured no time) from jumping straight to the maximum.
        # (Comparisons rather than min() and max(): this runs every check.)
        limit = 2 * self.items_between_checks
        if limit > MAX_ITEMS_BETWEEN_CHECKS:
            limit = MAX_ITEMS_BETWEEN_CHECKS
        self.items_between_checks = gap if 1 <= gap <= limit else (1 if gap < 1 else limit)
        if sinks.by_path:
            # A boundary after every item: there the sinks are marked, so a stop inside an
            # item saves the output of the items before it, and not the start of its own.
            self.items_between_checks = 1

    def save_for_loop(self, reason: SaveReason) -> None:
        """A save the loop asks for (on completion): made now, or under asyncio owed to
        the async driver (see `deferring`)."""
        # The end of the loop is an item boundary: the output so far is of items done, and
        # what follows (a footer) counts only once the with block leaves without an error.
        self._session.sinks.mark()
        if self.deferring:
            self.owed = (reason, None, None)
        else:
            self.save(reason)

    def ask_for_save(self, waiter: asyncio.Future[bool]) -> None:
        """Another task asks for a save while the loop runs: the loop owes it, and sets
        `waiter` to True once made (False if the loop ended first: save yourself)."""
        if self.owed is None:
            self.owed = ("explicit", None, None)
        self._asked.append(waiter)
        if self.on_owed is not None:
            self.on_owed()

    def tell_askers(self, made: bool, error: BaseException | None = None) -> None:
        """The save owed was made (`made`), failed (`error`), or the loop ended first."""
        asked, self._asked = self._asked, []
        for waiter in asked:
            if waiter.done():
                continue  # the asker was cancelled
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(made)

    def pay_owed(self) -> None:
        """Make the save the loop owes, if any (under asyncio, in the save thread)."""
        owed = self.owed
        if owed is not None:
            self.save(*owed)

    def _since_last_save(self, now: float, count: int, pace: float | None) -> SinceLastSave:
        seconds = now - self._saved_clock  # never negative: see `now`
        # tuple.__new__ is what the named tuple's own __new__ calls, without its Python
        # frame: a third of the cost of a check.
        return tuple.__new__(SinceLastSave, (count - self._saved_count, seconds, pace))

    def check_interval(self, now: float) -> None:
        """An explicit save at `now`: `CalledTooOftenError` when `min_interval` has not
        passed since the last save."""
        waited = now - self._saved_clock
        if self._min_interval and self.saves and waited < self._min_interval:
            raise CalledTooOftenError(
                f"save() came {waited:.3f} s after the previous save, sooner than "
                f"min_interval={self._min_interval:g} s. Save less often, or lower "
                "min_interval."
            )

    def changed_anything(self) -> bool:
        """Whether the file does not hold what this run would save: other progress or
        state, or (once its loop started) not this run in `runs`."""
        session = self._session
        if session.iterated and not self.saves:
            return True
        current = _state_file.fingerprint(session.progress.snapshot(), session.state)
        return (
            current is None
            or current != session.saved_fingerprint
            or session.sinks.changed(mark=not session.item_in_flight())
        )

    def save_at_exit(self, leaving: BaseException | None) -> None:
        """The with block ends, with `leaving` the exception that leaves it, if any: save
        what the run changed.

        Made too when the run ends by itself and its saves left records in the progress
        log: the exit compacts them into the state file. Skipped when it would change
        nothing; when the run was refused; when a save found
        the lock file deleted or replaced (that save raised already, and any other would
        raise again); and when the error in flight is this run's failed save of an
        unserialisable state (or of a counter the file cannot hold), which would fail the
        same way and show the error twice.
        """
        session = self._session
        failed_already = self.unsaveable is not None and leaving is self.unsaveable
        log: ProgressLog | None = getattr(session.store, "progress_log", None)
        # A run that ends by itself compacts its records into the state file; one stopped
        # by a signal or an error leaves them (the next run's first save compacts).
        compact = leaving is None and session.signals.stop_requested is None
        # The code after a finished loop ran to its end: its output (a footer) counts now.
        session.sinks.finishing = compact and session.progress.finished
        if not (session.refused or session.store.lock_lost or failed_already) and (
            self.changed_anything() or (compact and log is not None and log.live)
        ):
            self.save("exit" if session.signals.stop_requested is None else "signal")

    @defers_signals
    def save(
        self, reason: SaveReason, now: float | None = None, fired: Policy | None = None
    ) -> None:
        """Save the session's progress and state now, for `reason`; `now` is the loop's
        clock, if the caller read it; `fired` the member of the policy that asked."""
        with self._saving:
            self._save(reason, now, fired)

    def _save(self, reason: SaveReason, now: float | None, fired: Policy | None) -> None:
        session = self._session
        session.require_opening_process()
        store, progress, state = session.store, session.progress, session.state
        store.check_lock()  # before the journal too: a second run may own the job
        # The sinks' output on the disk before anything counts it; a failure here leaves the
        # journals and the state file as they were.
        sinks = session.sinks
        sink_lengths = (
            sinks.sync(mark=not session.item_in_flight()) if sinks.by_path else dict(sinks.recorded)
        )
        snapshot = progress.snapshot()
        saved_at = _state_file.now()
        started = time.perf_counter()
        # What the save records is worked out before the disk is touched: after sleeping in
        # fsync the process runs with cold caches, and the same Python code takes several
        # times longer there (benchmarks/bench_save.py). For the same reason a save of
        # progress alone makes few calls: the progress and r.state are serialised once each,
        # for the record and for the fingerprint.
        log: ProgressLog | None = getattr(store, "progress_log", None)
        state_bytes = None  # r.state as a record's save checks it: with a progress log only
        if log is not None:
            try:
                state_bytes = _state_file.state_bytes(state, log.state)
            except StateNotSerializableError as error:
                self.unsaveable = error  # the exit does not try again and raise it twice
                raise
        # Whether state_bytes walked r.state: it does unless r.state writes as last rewritten.
        walked = log is not None and state_bytes is not None and state_bytes != log.state
        position = progress.position
        # A save of progress alone is one record, which carries the journals' entries since
        # the last save too (`Progress.riding`): one flush.
        appended = False
        fingerprint: bytes | None = None
        if log is not None and state_bytes is not None and reason in _APPENDED:
            progress_bytes = _state_file.progress_bytes(snapshot)
            fingerprint = _state_file.fingerprint_of(progress_bytes, state_bytes)
            riding = progress.riding()
            appended = riding is not None and log.append(
                state_bytes, progress_bytes, snapshot, saved_at, sink_lengths, riding
            )
        if appended:
            progress.rode()
            size = 0  # a record: no state file was written
        else:
            if progress.journal_pending and not walked:
                # A state that cannot be saved is refused before a journal is written to.
                _state_file.check_state(state)
                walked = True
            # The journals first: the state file commits them. Journal files a save creates
            # get the state file's permissions.
            progress.save(store)
            snapshot = progress.snapshot()
            fingerprint = _state_file.fingerprint(snapshot, state)
            size = self._compact(
                snapshot, saved_at.isoformat(), sink_lengths, log, state_bytes, walked
            )
        session.sinks.saved(sink_lengths)
        self.owed = None  # this save holds what an owed one would have
        if now is None:
            now = self.now()
        loop_started = self._loop_started
        seconds = 0.0 if loop_started is None else now - loop_started
        count = position + self.uncounted
        if loop_started is None and not self.saves:  # no time to count from yet
            self._saved_clock = now
        covered = self._since_last_save(now, count, self._pace)
        self.saves += 1
        session.saved_fingerprint = fingerprint
        self._saved_clock = now
        self._saved_count = count
        self.save_log.append(SaveRecord(self.saves, position, seconds, saved_at, reason, fired))
        self.policy.on_save(covered)
        if self.display is not None:
            self.display.saved()
        if size > _LARGE_STATE_BYTES and not self._warned_large_state:
            self._warned_large_state = True
            _warn_large_state(session, size)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: saved position %d at %.3f s (%s; %s, %d state keys) in %.1f ms",
                session.path,
                position,
                seconds,
                reason if fired is None else f"{reason}: {fired!r}",
                f"{size} bytes" if size else "appended to the log",
                len(state),
                (time.perf_counter() - started) * 1000,
            )

    def _compact(
        self,
        snapshot: dict[str, Any],
        saved_at: str,
        sink_lengths: dict[str, SinkRecord],
        log: ProgressLog | None,
        state_bytes: bytes | None,
        walked: bool,
    ) -> int:
        """Write the whole state file (a compaction of the progress log); its size.
        `walked`: r.state was checked for this save already (`check_state`)."""
        session = self._session
        log_id = None if log is None else new_log_id()
        document = StateDocument(
            progress=snapshot,
            state=session.state,
            runs=session.runs,
            created_at=session.created_at,
            saved_at=saved_at,
            sinks=sink_lengths,
            log=log_id,
        )
        try:
            data = _state_file.encode(document, _WRITER, str(session.path), checked=walked)
        except (StateNotSerializableError, StateFileError) as error:
            self.unsaveable = error  # the exit does not try again and raise it twice
            raise
        if log is None or log_id is None or state_bytes is None:
            session.store.save(data)
            return len(data)
        try:
            session.store.save(data)
        except BaseException:
            log.forget()  # the state file may name the new id or the old: append to neither
            raise
        log.compacted(log_id, state_bytes, snapshot)
        return len(data)


def _check_reading(clock: Callable[[], float]) -> None:
    """Raise TypeError, naming `clock`, when it does not return a number of seconds."""
    reading: object = clock()
    if isinstance(reading, bool) or not isinstance(reading, (int, float)):
        raise TypeError(
            f"Resumable(clock={clock!r}): the clock returned {reading!r}; it must return "
            "the time in seconds as a number, as time.monotonic does"
        )


def _member_that_fired(policy: Policy, since: SinceLastSave) -> Policy:
    """The member of `policy` that asked for the save `since` describes (asked again:
    this runs once per policy save, and keeps the members' check free of book-keeping)."""
    if isinstance(policy, PolicySwitch):
        for member in policy.policies:
            if member.should_save(since):
                return member
    return policy


def _warn_large_state(session: Session, size: int) -> None:
    """Say once that saves write a big file, and what makes it big."""
    state = len(_state_file.state_bytes(session.state) or b"")  # r.state's bytes
    if state * 2 >= size:
        logger.warning(
            "%s: the state file is %.1f MB, %.1f MB of it r.state, and every save writes "
            "all of it. Keep bulky data in files of your own and put their names in "
            "r.state.",
            session.path,
            size / 1e6,
            state / 1e6,
        )
    else:
        logger.warning(
            "%s: the state file is %.1f MB (r.state only %.1f MB of it), and every save "
            "writes all of it.",
            session.path,
            size / 1e6,
            state / 1e6,
        )


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
