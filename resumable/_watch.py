"""``resumable status --watch``: follow jobs that run elsewhere, read-only.

Each refresh probes a job's lock as ``status`` does (takes it and lets go at once, never
holding it) and then reads its state file as `inspect` does. In that order: a run saves
its last progress before it releases its lock, so a lock found free is followed by a read
of that last save, and a job that finished is never taken for one that died.

| what is shown | where it comes from |
| --- | --- |
| items done, and of how many | the state file; the total when it records the input's length |
| rate | the last saves of this run that the watch saw: items over seconds between them |
| time left | the items still to do at that rate, when the total is known |
| last saved | now minus the last save's ``saved_at`` |
| running | the lock's holder and its pid; once it lets go, whether that pid still lives |

A path's watch is over when its job finished (`FINISHED`), or when the run seen holding it
let go without finishing (`ENDED`: stopped, crashed, killed). The command ends when every
path's watch is over, with the highest of their statuses.
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from resumable._errors import ResumableWarning, StateFileError
from resumable._inspect import StateSnapshot, inspect
from resumable._store import open_store
from resumable._text import counted, printable, valid_unicode

FINISHED = 0
ENDED = 3  # the run that held the job let go of it without finishing
_SAVES_KEPT = 10  # the rate is measured over at most this many of the last saves seen


@dataclass(frozen=True)
class Reading:
    """One path at one refresh: what `--json` prints, one object per line."""

    path: str
    observed_at: str
    error: str | None
    position: int | None
    total: int | None
    finished: bool | None
    runs: int | None
    saved_at: str | None
    seconds_since_saved: float | None
    items_per_second: float | None
    eta_seconds: float | None
    running: bool | None
    pid: int | None
    alive: bool | None
    outcome: str | None  # None while watching; "finished" or "ended"

    def as_json(self) -> str:
        data = {key: valid_unicode(v) if isinstance(v, str) else v for key, v in vars(self).items()}
        return json.dumps(data)


@dataclass
class Watched:
    """A path, and what the watch has learnt about it so far."""

    path: Path
    saves: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=_SAVES_KEPT)
    )
    runs: int | None = None
    holder_pid: int | None = None  # of the last run seen holding the lock
    holder_here = True  # whether it runs on this host (a lease names the host of its run)
    seen_running: bool = False
    outcome: str | None = None

    def refresh(self) -> Reading:
        """Look at the path once more."""
        error = None
        holder_known = True
        try:
            holder = open_store(self.path).holder()  # a link's job: its own lock
        except (OSError, StateFileError) as problem:  # a store URL that cannot be reached
            holder, holder_known = None, False
            error = f"cannot tell whether a run holds {self.path}: {problem}"
        snapshot: StateSnapshot | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResumableWarning)  # the backup is still progress
                snapshot = inspect(self.path)
        except FileNotFoundError:
            error = error or f"{self.path}: no state file yet: waiting for the first save"
        except (StateFileError, OSError) as problem:
            error = str(problem)
        now = datetime.now(timezone.utc)
        if holder is not None:
            self.seen_running, self.holder_pid = True, holder.pid
            host = getattr(holder, "host", None)  # a lease's (`LeaseHolder`)
            self.holder_here = host is None or host == socket.gethostname()
        if snapshot is not None:
            self._note_save(snapshot)
        if snapshot is not None and snapshot.finished:
            self.outcome = "finished"
        elif holder_known and holder is None and self.seen_running:
            self.outcome = "ended"
        return self._reading(snapshot, now, error, holder is not None if holder_known else None)

    def _note_save(self, snapshot: StateSnapshot) -> None:
        if snapshot.runs != self.runs:  # another run: its pace is its own
            self.saves.clear()
            self.runs = snapshot.runs
        when = _aware(snapshot.saved_at).timestamp()
        if not self.saves or when > self.saves[-1][0]:
            self.saves.append((when, snapshot.position))

    def rate(self) -> float | None:
        """Items per second between the first and the last save seen in this run."""
        if len(self.saves) < 2:
            return None
        (first_time, first_done), (last_time, last_done) = self.saves[0], self.saves[-1]
        if last_time <= first_time or last_done < first_done:
            return None
        return (last_done - first_done) / (last_time - first_time)

    def _reading(
        self, snapshot: StateSnapshot | None, now: datetime, error: str | None, running: bool | None
    ) -> Reading:
        rate = self.rate() if snapshot is not None and self.outcome is None else None
        total = snapshot.input_length if snapshot is not None else None
        eta = None
        if snapshot is not None and rate and total is not None:
            eta = max(0, total - snapshot.position) / rate
        saved_at = _aware(snapshot.saved_at) if snapshot is not None else None
        return Reading(
            path=str(self.path),
            observed_at=now.isoformat(),
            error=error,
            position=snapshot.position if snapshot else None,
            total=total,
            finished=snapshot.finished if snapshot else None,
            runs=snapshot.runs if snapshot else None,
            saved_at=saved_at.isoformat() if saved_at else None,
            seconds_since_saved=(now - saved_at).total_seconds() if saved_at else None,
            items_per_second=rate,
            eta_seconds=eta,
            running=running,
            pid=self.holder_pid,
            # A pid on another host cannot be looked up here: unknown.
            alive=_alive(self.holder_pid) if self.holder_here else None,
            outcome=self.outcome,
        )


def watch(paths: Sequence[Path], interval: float, as_json: bool, out: IO[str]) -> int:
    """Refresh every `interval` seconds until every path's watch is over; the status."""
    watched = [Watched(path) for path in paths]
    redraw = _Redraw(out) if not as_json and out.isatty() else None
    while True:
        readings = [item.refresh() for item in watched]
        if as_json:
            out.write("".join(reading.as_json() + "\n" for reading in readings))
        else:
            lines = _header(interval, readings) + [
                line for reading in readings for line in _as_text(reading)
            ]
            if redraw is not None:
                redraw.show(lines)
            else:
                out.write("\n".join(lines) + "\n\n")
        out.flush()
        if all(item.outcome for item in watched):
            return max(ENDED if item.outcome == "ended" else FINISHED for item in watched)
        time.sleep(interval)


class _Redraw:
    """Draws each refresh over the previous one on a terminal, as watch(1) does: from the
    top left corner, clearing the rest of the screen. (Going back up the lines drawn last
    time would count wrong as soon as a key typed meanwhile is echoed.) Lines are cut to
    the terminal's width, so that a long path does not push the rest down."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def show(self, lines: list[str]) -> None:
        try:
            columns = os.get_terminal_size(self.out.fileno()).columns
        except OSError:
            columns = 0
        width = columns - 1 if columns > 1 else None  # 0: a terminal that gives no size
        self.out.write("\x1b[H\x1b[J" + "".join(line[:width] + "\n" for line in lines))


def _header(interval: float, readings: list[Reading]) -> list[str]:
    clock = datetime.now().strftime("%H:%M:%S")
    if all(reading.outcome for reading in readings):
        return [f"resumable status --watch, {clock}: done watching"]
    return [f"resumable status --watch, {clock}, every {interval:g} s (ctrl+c to stop)"]


def _as_text(reading: Reading) -> list[str]:
    rows: list[tuple[str, str]] = []
    if reading.position is not None:
        rows += [
            ("items done", _done(reading)),
            ("rate", _rate(reading)),
            ("time left", _time_left(reading)),
            ("last saved", _ago(reading.seconds_since_saved)),
        ]
    rows.append(("running", _running(reading)))
    if reading.error:
        rows.append(("error", reading.error))
    return [
        printable(reading.path),
        *(f"  {label:<12} {printable(value)}" for label, value in rows),
    ]


def _done(reading: Reading) -> str:
    assert reading.position is not None
    if reading.finished:
        return f"{reading.position:,} (finished)"
    if reading.total:
        share = 100 * reading.position / reading.total
        return f"{reading.position:,} of {reading.total:,} ({share:.1f}%)"
    return f"{reading.position:,}"


def _rate(reading: Reading) -> str:
    if reading.outcome:
        return "-"
    if reading.items_per_second is None:
        return "not known yet: it takes two saves of this run"
    return f"{_number(reading.items_per_second)} items/s"


def _time_left(reading: Reading) -> str:
    if reading.finished:
        return "none"
    if reading.outcome:
        return "-"
    if reading.eta_seconds is not None:
        return f"about {_duration(reading.eta_seconds)}"
    if reading.total is None:
        return "unknown: the state file records no length of the input"
    return "unknown until the rate is"


def _running(reading: Reading) -> str:
    if reading.running is None:
        return "unknown"
    pid = "an unknown pid" if reading.pid is None else f"pid {reading.pid}"
    if reading.running:
        return f"yes, {pid} (alive)" if reading.alive is not False else f"yes, {pid}"
    if reading.outcome == "finished":
        return "no: the job finished"
    if reading.outcome == "ended":
        if reading.alive is None and reading.pid is not None:
            fate = "another host's: not looked up"  # a lease's run on another machine
        else:
            fate = "still alive" if reading.alive else "gone"
        return f"no: {pid} let go without finishing the job ({fate})"
    return "no: waiting for a run to start"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return "just now"
    return f"{_duration(seconds)} ago"


def _duration(seconds: float) -> str:
    """``3 minutes 5 seconds``: the two largest whole units."""
    if seconds < 1:
        return "less than a second"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if whole >= size or (unit == "second" and not parts):
            parts.append(counted(whole // size, unit))
            whole %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _number(value: float) -> str:
    if value >= 100 or not math.isfinite(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _alive(pid: int | None) -> bool | None:
    """Whether process `pid` exists (in this pid namespace); None when the pid is unknown."""
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, another user's
        return True
    except OSError:
        return None
    return True


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
