"""A keyed job with a fixed sequence of saves, for the strace fault tests of the key journal.

    python keyed_save_job.py STATE --items N [--stop-at K] [--fold-after R] [--raise-on-usr1]
                             [--log] [--record [--fail-at K]]
    python keyed_save_job.py STATE reset

It runs ``range(N)`` with ``key=`` (item i has the key ``"k<i>"``), ``NPolicy(1)`` and a
loop body that only reports the item, so each item is one save: an append of one key to
the key journal, then the state file. It reports on stdout with one ``writev`` per line
and never with ``write``, so a fault injected into ``write`` hits the library's writes only:

- ``ready <position> <runs>`` once inside the with block;
- ``did <i>`` in the body of item i; with ``--stop-at K`` the body of item K breaks out of
  the loop instead (item K is not done; items 0 to K - 1 are, each saved);
- ``done <position> <finished> <saves>`` after the with block;
- ``error <json>`` instead, when a `resumable.StateWriteError` or `resumable.StateFileError`
  leaves the with block: its ``type``, ``message``, ``errno`` name (if any) and ``saves``;
- ``interrupted <saves>`` instead, when a KeyboardInterrupt leaves it;
- ``raised <type> <saves>`` instead, when the exception of ``--raise-on-usr1`` leaves it.

``--fold-after R`` sets the library's seam for tests ``FOLD_MIN_RECORDS`` (see
docs/architecture.md) to R: the key journal is folded into a new generation at the save
that would make it hold more than R records (with one key per save, the save of item R).
Every save rewrites the state file (a compaction) unless ``--log`` is given: the job sets
the seam for tests ``progress_log.MAX_RECORDS`` to 0, as save_job.py does.
``--raise-on-usr1`` installs a SIGUSR1 handler that raises `UserHandlerError`, as a
program's own handler may (a timeout on SIGALRM, say): not an `OSError`, and not held
back by the library, whose handlers are for SIGINT, SIGTERM and SIGHUP only.

With ``--record`` the loop records failures (``on_error="record"``); with ``--fail-at K``
too, the body of item K raises in ``r.attempt()`` after it reported ``did K``: one
failure recorded, which is no key done and counts as an item for the policy (a save).
Without ``--fail-at`` a recorded failure succeeds when it is retried.

``reset`` calls `resumable.reset` and prints ``reset <name of the file set aside>``, or
``error <json>`` when it raises `StateWriteError`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Literal

import resumable
from resumable._store import journal_files, progress_log


class UserHandlerError(Exception):
    """What the program's own SIGUSR1 handler raises."""


def raise_user_handler_error(signum: int, frame: FrameType | None) -> None:
    """A program's signal handler that raises."""
    raise UserHandlerError(f"signal {signum}")


def say(line: str) -> None:
    """Write one line to stdout with a single ``writev`` system call."""
    os.writev(1, [f"{line}\n".encode()])


def describe(error: resumable.ResumableError) -> dict[str, object]:
    """The type, message and errno name of an error of the library."""
    number = getattr(error, "errno", None)
    return {
        "type": type(error).__name__,
        "message": str(error),
        "errno": errno.errorcode.get(number, str(number)) if number else None,
    }


def key(item: int) -> str:
    """The key of item `item`."""
    return f"k{item}"


def main() -> None:
    """Run the job, or reset it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("command", nargs="?", choices=["run", "reset"], default="run")
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--stop-at", type=int, default=-1)
    parser.add_argument("--fold-after", type=int, default=0)
    parser.add_argument("--raise-on-usr1", action="store_true")
    parser.add_argument("--log", action="store_true", help="progress saves append")
    parser.add_argument("--record", action="store_true", help='on_error="record"')
    parser.add_argument("--fail-at", type=int, default=-1, help="the item that fails")
    parsed = parser.parse_args()
    if not parsed.log:
        progress_log.MAX_RECORDS = 0  # the seam for tests: every save compacts
    if parsed.fold_after:
        journal_files.FOLD_MIN_RECORDS = parsed.fold_after  # the seam for tests
    if parsed.raise_on_usr1:
        signal.signal(signal.SIGUSR1, raise_user_handler_error)
    state = Path(parsed.state)
    if parsed.command == "reset":
        try:
            aside = resumable.reset(state)
        except resumable.StateWriteError as error:
            say(f"error {json.dumps(describe(error))}")
            return
        say(f"reset {aside.name}")
        return
    job = resumable.Resumable(state, policy=resumable.NPolicy(1))
    try:
        with job:
            say(f"ready {job.position} {job.runs}")
            on_error: Literal["raise", "record"] = "record" if parsed.record else "raise"
            for item in job.iterate(range(int(parsed.items)), key=key, on_error=on_error):
                if item == parsed.stop_at:
                    break
                say(f"did {item}")
                if parsed.record:
                    with job.attempt():
                        if item == parsed.fail_at:
                            raise RuntimeError(f"item {item} fails")
    except (resumable.StateWriteError, resumable.StateFileError) as error:
        say(f"error {json.dumps({**describe(error), 'saves': job.saves})}")
        return
    except KeyboardInterrupt:
        say(f"interrupted {job.saves}")
        return
    except UserHandlerError:
        say(f"raised UserHandlerError {job.saves}")
        return
    say(f"done {job.position} {job.finished} {job.saves}")


if __name__ == "__main__":
    main()
