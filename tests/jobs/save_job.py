"""A job with a fixed sequence of saves, for the strace fault-injection tests.

    python save_job.py STATE --items N [--digest] [--fsize-limit BYTES] [--log]
                       [--record [--fail-at K]]

It runs ``range(N)`` with ``NPolicy(1)`` and an empty loop body, so a run from scratch
saves exactly N times, at positions 1, 2, ... N (the last save also marks the job
finished), and nothing else in it writes, fsyncs, links or renames a file. The library's
system calls are therefore the same in every run, and a test can name the K-th ``write``,
``fsync``, ``link`` or ``rename`` of the process in advance.

Every save is a compaction, an atomic rewrite of the state file, unless ``--log`` is
given: the job sets the library's seam for tests ``progress_log.MAX_RECORDS`` to 0 (see
docs/architecture.md). With ``--log`` the saves of positions 2 and 3 are records appended
to the progress log (``job.state.log``), and the first and the last compact.

It reports on stdout with one ``writev`` per line and never with ``write``, so a fault
injected into ``write`` hits the library's writes only:

- ``ready <position> <runs>`` once inside the with block;
- with ``--digest``, ``digest <sha256>`` in the body of item 1, that is between the save
  of position 1 and that of position 2: the SHA-256 of the state file as it is then;
- ``done <position> <finished> <saves>`` after the with block;
- ``error <json>`` instead, when a `resumable.StateWriteError` leaves the with block: its
  ``message``, its ``errno`` name, ``saves`` (``job.saves``: the saves the run completed)
  and, as ``context``, the message and errno name of the `StateWriteError` during whose
  handling it was raised, if any (found along the chain of ``__context__``).

With ``--record`` the loop records failures (``on_error="record"``) and reports ``did <i>``
in the body of item i; with ``--fail-at K`` too, the body of item K raises in
``r.attempt()`` (one failure recorded; a later run retries the item first). Without
``--fail-at`` a recorded failure succeeds when it is retried.

With ``--fsize-limit``, the body of item 1 ignores ``SIGXFSZ`` and lowers the soft
``RLIMIT_FSIZE`` of the process to BYTES, so that a write past the limit fails with
``EFBIG`` instead of killing the process; the limit is lifted again after the with block.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import resource
import signal
from pathlib import Path

import resumable
from resumable._store import progress_log


def say(line: str) -> None:
    """Write one line to stdout with a single ``writev`` system call."""
    os.writev(1, [f"{line}\n".encode()])


def describe(error: resumable.StateWriteError) -> dict[str, object]:
    """The message and errno name of a `StateWriteError`."""
    return {
        "message": str(error),
        "errno": errno.errorcode.get(error.errno or 0, str(error.errno)),
    }


def during(error: BaseException) -> resumable.StateWriteError | None:
    """The `StateWriteError` during whose handling `error` was raised, if any.

    A save that fails while the with block exits for an earlier `StateWriteError` raises
    from its `OSError`, whose context is the earlier error.
    """
    context = error.__context__
    while context is not None and not isinstance(context, resumable.StateWriteError):
        context = context.__context__
    return context


def run_recording(job: resumable.Resumable, items: int, fail_at: int) -> None:
    """The loop of ``--record``: item `fail_at` fails in ``r.attempt()``."""
    for item in job.iterate(range(items), on_error="record"):
        say(f"did {item}")
        with job.attempt():
            if item == fail_at:
                raise RuntimeError(f"item {item} fails")


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--digest", action="store_true", help="report the file at item 1")
    parser.add_argument("--fsize-limit", type=int, help="RLIMIT_FSIZE from item 1 on")
    parser.add_argument("--log", action="store_true", help="progress saves append")
    parser.add_argument("--record", action="store_true", help='on_error="record"')
    parser.add_argument("--fail-at", type=int, default=-1, help="the item that fails")
    parsed = parser.parse_args()
    if not parsed.log:
        progress_log.MAX_RECORDS = 0  # the seam for tests: every save compacts
    state = Path(parsed.state)
    items = int(parsed.items)
    digest = bool(parsed.digest)
    fsize_limit: int | None = parsed.fsize_limit

    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    job = resumable.Resumable(state, policy=resumable.NPolicy(1))
    try:
        with job:
            say(f"ready {job.position} {job.runs}")
            if parsed.record:
                run_recording(job, items, parsed.fail_at)
            else:
                for item in job.iterate(range(items)):
                    if item == 1 and digest:
                        say(f"digest {hashlib.sha256(state.read_bytes()).hexdigest()}")
                    if item == 1 and fsize_limit is not None:
                        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, limits[1]))
    except resumable.StateWriteError as error:
        report = {**describe(error), "saves": job.saves}
        earlier = during(error)
        if earlier is not None:
            report["context"] = describe(earlier)
        say(f"error {json.dumps(report)}")
        return
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # stdout may be a regular file
    say(f"done {job.position} {job.finished} {job.saves}")


if __name__ == "__main__":
    main()
