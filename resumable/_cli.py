"""The command line: ``resumable status``, ``resumable reset`` and ``resumable demo``.

Exit statuses: 0 when all went well; 1 for a problem with a state file (missing,
unreadable, in use) or a reset the user declined; 2 for a usage error; 3 when ``status
--watch`` saw a run let go of its job unfinished (`resumable._watch`); 141 (128 +
SIGPIPE, as for ``cat``) when the reader of the output went away (``| head``), quietly
(the recipe of the Python docs' "Note on SIGPIPE"). An error is one
line on stderr, ``resumable: error: ...``: a `ResumableError` or an `OSError` never shows
a traceback (anything else is a bug, and does; `status` then goes on with the next path).
Whatever came from a file or a file name is escaped before it reaches the terminal
(`printable`), and made valid Unicode before it goes into JSON. docs/cli.md describes it all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from resumable._cli_summary import file_of_a_job, is_folder, summarise
from resumable._demo import run_demo
from resumable._errors import ResumableError, ResumableWarning, StateFileError
from resumable._failures import FailedItem
from resumable._inspect import StateSnapshot, inspect
from resumable._keys import tagged_key
from resumable._reset import reset
from resumable._store import open_store
from resumable._store.flock import LockHolder
from resumable._store.lease import LeaseHolder
from resumable._store.url import JobName, JobURL, is_url
from resumable._text import counted, describe_key, printable, valid_unicode
from resumable._version import __version__
from resumable._watch import ENDED as WATCH_ENDED
from resumable._watch import watch

_FAILED_SHOWN = 5  # failed items listed by `status`; --json lists them all

OK = 0
PROBLEM = 1  # with a state file, or a declined reset
USAGE = 2  # what argparse exits with, too
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for ctrl+c
CLOSED_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat` when `head` has enough

# How `status` names each kind of progress (`StateSnapshot.progress_kind`).
_PROGRESS_KINDS = {
    "position": "by position",
    "keys": "by key",
    "watermark": "by position, out of order (r.map)",
}
NO_STATE_FILE = "no state file: the job has not started, or it was reset"

Command = Callable[[argparse.Namespace], int]
_T = TypeVar("_T")
_Named = TypeVar("_Named", Path, JobURL)  # how a path on the command line comes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if getattr(arguments, "interval", None) is not None and not arguments.watch:
        parser.error("--interval goes with --watch")
    command: Command = arguments.run
    try:
        status = command(arguments)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return CLOSED_PIPE
    except KeyboardInterrupt:
        print()
        return INTERRUPTED
    except (ResumableError, OSError) as error:
        _error(_describe(error))
        return PROBLEM


def _silence_stdout() -> None:
    """The reader of stdout went away: what is still buffered goes nowhere, and Python's
    own flush at the exit does not complain about it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resumable",
        description="Look at and reset the state files of resumable loops.",
        epilog="exit status: 0 ok, 1 a problem with a state file, 2 a usage error, "
        "3 status --watch saw a run end without finishing its job, "
        "141 the output's reader went away (| head)",
    )
    parser.add_argument("--version", action="version", version=f"resumable-loop {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    status = commands.add_parser(
        "status",
        help="show how far jobs got and whether they are running",
        description="Show how far each job got, and whether a run holds it now.",
    )
    status.add_argument(
        "paths",
        nargs="+",
        type=_job,
        metavar="PATH",
        help="a state file or a state object's URL; or a folder of jobs (a local directory, "
        "or a URL ending in /, such as s3://bucket/crawl/), whose jobs are summed",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per PATH (with --watch: JSON lines, one "
        "object per PATH per refresh)",
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="refresh until every job finished (exit 0) or its run let go of it without "
        f"finishing (exit {WATCH_ENDED}); never holds a job's lock",
    )
    status.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --watch: seconds between refreshes (default 2)",
    )
    status.set_defaults(run=_status)

    reset_ = commands.add_parser(
        "reset",
        help="start jobs over, keeping their old state aside",
        description="Start jobs over: move each state file (and backup) aside, to "
        "PATH.reset-<time>, so that the next run starts fresh. Each PATH is reported; the "
        "exit status is 1 if any was not reset.",
    )
    reset_.add_argument(
        "paths", nargs="+", type=_job, metavar="PATH", help="a state file, or a state object's URL"
    )
    reset_.add_argument(
        "-y", "--yes", action="store_true", help="reset without asking (every PATH)"
    )
    reset_.set_defaults(run=_reset)

    demo = commands.add_parser(
        "demo", help="run a slow job you can stop with ctrl+c and run again to continue"
    )
    demo.add_argument("--state", type=Path, default=Path("resumable-demo.state"))
    demo.add_argument("--items", type=_whole_number, default=300, help="items, 1 or more")
    demo.add_argument("--delay", type=_seconds, default=0.04, help="seconds per item, 0 or more")
    demo.add_argument("--restart", action="store_true", help="start the job over")
    demo.set_defaults(run=_demo)
    return parser


# -- status -----------------------------------------------------------------------------


@dataclass
class _Report:
    """What `status` found out about one path."""

    path: JobName
    backup: JobName  # where the job's backup is kept, named when the state came from it
    snapshot: StateSnapshot | None = None
    missing: bool = False
    error: str | None = None  # why the state could not be shown
    holder: LockHolder | None = None
    lock_error: str | None = None  # why the lock could not be probed
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return PROBLEM if self.error or self.lock_error else OK


def _status(arguments: argparse.Namespace) -> int:
    folders = [path for path in arguments.paths if is_folder(str(path))]
    if folders:
        if arguments.watch or len(folders) != len(arguments.paths):
            _error(
                "status takes either jobs (state files, state object URLs) or folders of "
                f"jobs ({', '.join(map(str, folders))}), without --watch for folders: run "
                "it once for each"
            )
            return USAGE
        return _status_of_folders([str(folder) for folder in folders], arguments.json)
    if arguments.watch:
        interval = 2.0 if arguments.interval is None else arguments.interval
        paths = _passing_over_files_of_jobs_named(arguments.paths)
        return watch(paths, interval, arguments.json, sys.stdout)
    reports = [_look(path) for path in _passing_over_files_of_jobs_named(arguments.paths)]
    now = datetime.now(timezone.utc)
    if arguments.json:
        shown = [_valid_unicode(_shown(report, _as_json, now)) for report in reports]
        print(json.dumps(shown, indent=2))
    else:
        blocks = [block for report in reports if (block := _shown(report, _as_text, now))]
        if blocks:
            print("\n\n".join(blocks))
    for report in reports:
        for problem in (report.error, report.lock_error):
            if problem:
                _error(problem)
    return max(report.status for report in reports)


def _passing_over_files_of_jobs_named(paths: list[_Named]) -> list[_Named]:
    """`paths` less the files of a job that is named too: a shell's ``job.state*`` names
    its backup, lock, progress log and journals as well."""
    named = {str(path) for path in paths}
    return [
        path
        for path in paths
        if (found := file_of_a_job(str(path))) is None or found[0] not in named
    ]


def _status_of_folders(folders: list[str], as_json: bool) -> int:
    summaries = [summarise(folder) for folder in folders]
    if as_json:
        print(json.dumps([summary.as_json() for summary in summaries], indent=2))
    else:
        print("\n\n".join(summary.as_text() for summary in summaries))
    for summary in summaries:
        for problem in summary.problems():
            _error(problem)
    return PROBLEM if any(summary.problems() for summary in summaries) else OK


def _look(path: JobName) -> _Report:
    store = open_store(path)  # a link's job: its own lock and backup
    report = _Report(path, store.backup)
    try:
        # inspect() warns when it read the backup; that is part of the answer, a note.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResumableWarning)
            report.snapshot = inspect(path)
    except FileNotFoundError:
        report.missing = True
        report.error = f"{path}: {NO_STATE_FILE}"
    except (StateFileError, OSError) as error:
        report.error = _describe(error)
        if found := file_of_a_job(str(path)):  # not damaged: no state file at all
            job, what = found
            report.error = (
                f"{path} is the {what} of the job {job}, not a state file: run "
                f"`resumable status {job}`"
            )
    except Exception as error:  # a bug; the other paths are still reported
        report.error = _bug(path, error)
    for warning in caught:
        if issubclass(warning.category, ResumableWarning):
            report.notes.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    try:
        report.holder = store.holder()
    except OSError as error:
        report.lock_error = f"cannot tell whether a run holds {path}: {_describe(error)}"
    if report.missing and report.holder is not None:
        # A new job writes its first state file at its first save.
        report.error = (
            f"{report.error}; but {_process(report.holder)} holds its lock: a run has "
            "started and not saved yet"
        )
    return report


def _shown(report: _Report, render: Callable[[_Report, datetime], _T], now: datetime) -> _T:
    """`report` rendered; if that fails (a bug), its error, and the other paths go on."""
    try:
        return render(report, now)
    except Exception as error:
        report.snapshot, report.error = None, _bug(report.path, error)
        return render(report, now)


def _bug(path: JobName, error: Exception) -> str:
    traceback.print_exception(error)
    return f"{path} cannot be shown: {_describe(error)}. A bug: please report it with the above"


def _as_text(report: _Report, now: datetime) -> str | None:
    """One path as a block of rows; None when there is nothing to show but its error."""
    snapshot = report.snapshot
    if snapshot is None:
        return None
    if report.lock_error:
        running = "unknown"
    elif report.holder is None:
        running = "no"
    else:
        running = f"yes, {_process(report.holder)}"
    backup = f"yes, from {report.backup}" if snapshot.from_backup else "no"
    rows = [
        ("items done", f"{snapshot.position:,} ({_finished(snapshot.finished)})"),
        ("last saved", _when(snapshot.saved_at, now)),
        ("runs so far", f"{snapshot.runs:,}"),
        ("created", _when(snapshot.created_at, now)),
        ("progress", _PROGRESS_KINDS.get(snapshot.progress_kind, snapshot.progress_kind)),
        ("state keys", ", ".join(sorted(snapshot.state)) or "(none)"),
        ("failed", _failed_summary(snapshot.failed)),
        *(("", _failed_line(item)) for item in snapshot.failed[:_FAILED_SHOWN]),
        *_sink_rows(snapshot.sinks),
        ("running", running),
        ("from backup", backup),
        *(("note", note) for note in report.notes),
    ]
    lines = (f"  {label:<12} {printable(value)}" for label, value in rows)
    return "\n".join([printable(str(report.path)), *lines])


def _as_json(report: _Report, now: datetime) -> dict[str, Any]:
    """One path as JSON; every object has every key, null where it is unknown."""
    snapshot = report.snapshot
    return {
        "path": str(report.path),
        "error": report.error or report.lock_error,
        "missing": report.missing,
        "position": snapshot.position if snapshot else None,
        "finished": snapshot.finished if snapshot else None,
        "runs": snapshot.runs if snapshot else None,
        "created_at": _utc_text(snapshot.created_at) if snapshot else None,
        "saved_at": _utc_text(snapshot.saved_at) if snapshot else None,
        "seconds_since_saved": _seconds_since(snapshot.saved_at, now) if snapshot else None,
        "state_keys": sorted(snapshot.state) if snapshot else None,
        "progress_kind": snapshot.progress_kind if snapshot else None,
        "failed": [_failed_json(item) for item in snapshot.failed] if snapshot else None,
        "sinks": dict(snapshot.sinks) if snapshot else None,
        "format_version": snapshot.format_version if snapshot else None,
        "from_backup": snapshot.from_backup if snapshot else None,
        "running": None if report.lock_error else report.holder is not None,
        "pid": report.holder.pid if report.holder else None,
        # On object storage: the holder's host, and until when its lease runs.
        "host": report.holder.host if isinstance(report.holder, LeaseHolder) else None,
        "lease_until": (
            _utc_text(datetime.fromtimestamp(report.holder.expires_at, timezone.utc))
            if isinstance(report.holder, LeaseHolder)
            else None
        ),
        "notes": report.notes,
    }


def _sink_rows(sinks: dict[str, int]) -> list[tuple[str, str]]:
    """The output files of `Resumable.sink`, each with the length the next run cuts it to."""
    rows = [(f"{length:,} bytes", path) for path, length in sorted(sinks.items())]
    return [
        ("sinks" if index == 0 else "", f"{path} ({size})")
        for index, (size, path) in enumerate(rows)
    ]


def _failed_summary(failed: tuple[FailedItem, ...]) -> str:
    if not failed:
        return "none"
    more = f"; the first {_FAILED_SHOWN}:" if len(failed) > _FAILED_SHOWN else ":"
    return f"{counted(len(failed), 'item')} (retried by later runs up to their max_attempts){more}"


def _failed_line(item: FailedItem) -> str:
    where = describe_key(item.key) if item.key is not None else f"#{item.position}"
    times = "once" if item.attempts == 1 else f"{item.attempts} times"
    return f"{where}: {item.error_type}: {item.message[:80]} ({times})"


def _failed_json(item: FailedItem) -> dict[str, Any]:
    return {
        # Exactly, as the state file writes it: an int beyond 64 bits, which most JSON
        # parsers cannot read as a number, and a str that is no UTF-8 as tagged objects.
        "key": tagged_key(item.key) if item.key is not None else None,
        "position": item.position,
        "error_type": item.error_type,
        "message": item.message,
        "attempts": item.attempts,
        "failed_at": _utc_text(item.failed_at),
    }


def _valid_unicode(value: Any) -> Any:
    """`value` (JSON data) with every string made valid Unicode (`valid_unicode`)."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, list):
        return [_valid_unicode(item) for item in value]
    if isinstance(value, dict):
        return {key: _valid_unicode(item) for key, item in value.items()}
    return value


def _finished(finished: bool) -> str:
    return "finished" if finished else "not finished"


def _process(holder: LockHolder) -> str:
    if isinstance(holder, LeaseHolder):
        return holder.describe()  # the host and the lease's expiry too
    return "an unknown process" if holder.pid is None else f"pid {holder.pid}"


def _aware(moment: datetime) -> datetime:
    # The library writes aware UTC times; a hand-edited file might hold a naive one.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC; as stored when UTC is beyond the years 1 to 9999."""
    try:
        return _aware(moment).astimezone(timezone.utc).isoformat()
    except OverflowError:
        return _aware(moment).isoformat()


def _seconds_since(moment: datetime, now: datetime) -> float:
    return (now - _aware(moment)).total_seconds()  # never overflows: no conversion


def _when(moment: datetime, now: datetime) -> str:
    """Local time and how long ago: ``2026-11-26 10:40:17 CET (3 minutes ago)``."""
    try:
        local = _aware(moment).astimezone()
        shown = f"{local.year:04}-{local:%m-%d %H:%M:%S %Z}"  # %Y drops zeros before 1000
    except OverflowError:  # local time is beyond the years 1 to 9999: as stored
        shown = _aware(moment).isoformat(" ", "seconds")
    return f"{shown} ({_ago(_seconds_since(moment, now))})"


def _ago(seconds: float) -> str:
    """``3 minutes ago``: the largest whole unit, rounded down."""
    if seconds < 0:
        return f"{_amount(-seconds)} in the future: is a clock wrong?"
    if seconds < 1:
        return "just now"
    return f"{_amount(seconds)} ago"


def _amount(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return counted(int(seconds // size), unit)
    return counted(int(seconds), "second")


# -- reset ------------------------------------------------------------------------------


def _reset(arguments: argparse.Namespace) -> int:
    paths = _passing_over_files_of_jobs_named(arguments.paths)
    statuses = [_reset_one(path, arguments.yes) for path in paths]
    return max(statuses)


def _reset_one(path: JobName, yes: bool) -> int:
    if found := file_of_a_job(str(path)):
        # Moving a job's lock, log or journal aside would break the job, running or not.
        job, what = found
        _error(
            f"cannot reset {path}: it is the {what} of the job {job}, not a job. To start "
            f"that job over: resumable reset {job}"
        )
        return PROBLEM
    try:
        return _reset_path(path, yes)
    except (ResumableError, OSError) as error:  # this path failed; the others go on
        _error(_describe(error))
        return PROBLEM


def _reset_path(path: JobName, yes: bool) -> int:
    # Refuse what cannot succeed before asking, so nobody confirms a reset for nothing.
    store = open_store(path)
    try:
        store.check_exists()
    except FileNotFoundError:
        _error(f"cannot reset {path}: {NO_STATE_FILE}")
        return PROBLEM
    holder = store.holder()
    if holder is not None:
        _error(
            f"cannot reset {path}: {_process(holder)} is running this job. Stop it or let "
            "it finish, then reset."
        )
        return PROBLEM
    if not yes:
        if not sys.stdin.isatty():
            _error(
                f"reset asks before it resets {path}, and stdin is not a terminal: pass "
                "--yes to reset without asking"
            )
            return USAGE
        if not _confirm(printable(f"Reset {path} ({_what_is_done(path)})? [y/N] ")):
            print("Not reset: nothing changed.")
            return PROBLEM
    sinks = _sinks_of(path)
    aside = reset(path)  # takes the lock: a run that started meanwhile is refused there
    kept = f"{aside}"
    # What was set aside is a state file and backup under other names: a store of its own.
    if _exists(aside_backup := open_store(aside).backup):
        kept += f" (its backup: {aside_backup})"
    print(printable(f"Reset {path}: its old state is now {kept}. The next run starts over."))
    if sinks:
        print(
            printable(
                f"Its output files are left as they are: {', '.join(sorted(sinks))}. The next "
                "run refuses them (a new job's output file must be a new file): move them "
                "aside or delete them first, or run it with restart=True, which moves them "
                "aside."
            )
        )
    return OK


def _exists(job: JobName) -> bool:
    """Whether there is a file (or an object) at `job`."""
    if isinstance(job, Path):
        return job.exists()
    try:
        open_store(job).check_exists()
    except FileNotFoundError:
        return False
    return True


def _job(text: str) -> JobName:
    """A job named on the command line: the URL of a state object, or a path."""
    return JobURL(text) if is_url(text) else Path(text)


def _sinks_of(path: JobName) -> dict[str, int]:
    """The output files the job records (none when its state file cannot be read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResumableWarning)
            return inspect(path).sinks
    except (StateFileError, OSError):
        return {}


def _what_is_done(path: JobName) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResumableWarning)  # the number is what counts
            snapshot = inspect(path)
    except (StateFileError, OSError):
        return "its content cannot be read"
    return f"{counted(snapshot.position, 'item')} done, {_finished(snapshot.finished)}"


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:  # ctrl+d
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


# -- demo and helpers -------------------------------------------------------------------


def _whole_number(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number is needed, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"needs 1 or more, got {number}")
    return number


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds is needed, got {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"needs a finite number of seconds >= 0, got {text}")
    return seconds


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    seconds = _seconds(text)
    if seconds == 0:
        raise argparse.ArgumentTypeError("needs a number of seconds above 0, got 0")
    return seconds


def _demo(arguments: argparse.Namespace) -> int:
    try:
        return run_demo(arguments.state, arguments.items, arguments.delay, arguments.restart)
    except KeyboardInterrupt:  # the stop line, on a line of its own, said it all
        return INTERRUPTED


def _describe(error: BaseException) -> str:
    """The error as a message: an OSError of the system names its file and reason."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror}"
    return str(error)


def _error(message: str) -> None:
    print(f"resumable: error: {printable(message)}", file=sys.stderr)
