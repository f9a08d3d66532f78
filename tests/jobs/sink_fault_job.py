"""A job with a sink and a fixed sequence of saves, for the strace fault tests of sinks.

    python sink_fault_job.py STATE OUT --items N [--silent-from M]

It runs ``range(N)`` with ``NPolicy(1)`` and writes ``<item>\\n`` to the sink OUT per item,
so the save of position K is the K-th that flushes and fsyncs the sink: the sink's K-th
``write`` and ``fsync`` system calls. (Opening a new sink saves first, with nothing to
flush.) With ``--silent-from M`` the items from M on write nothing: their saves have no
output to flush. It reports on stdout with one ``writev`` per line:

- ``ready <position>`` once the sink is open;
- ``digest <sha256>`` in the body of item 1, between the save of position 1 and that of
  position 2: the SHA-256 of the state file as it is then;
- ``done <position> <finished>`` after the with block;
- ``error <json>`` instead, when a `resumable.StateWriteError` leaves the with block: its
  ``message``, its ``errno`` name, ``saves`` and, as ``context``, the `StateWriteError`
  during whose handling it was raised, if any (as save_job.py reports them).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
from pathlib import Path

import resumable


def say(line: str) -> None:
    """Write one line to stdout with a single ``writev`` system call."""
    os.writev(1, [f"{line}\n".encode()])


def describe(error: resumable.StateWriteError) -> dict[str, object]:
    """The message and errno name of a `StateWriteError`."""
    return {"message": str(error), "errno": errno.errorcode.get(error.errno or 0, "")}


def during(error: BaseException) -> resumable.StateWriteError | None:
    """The `StateWriteError` during whose handling `error` was raised, if any."""
    context = error.__context__
    while context is not None and not isinstance(context, resumable.StateWriteError):
        context = context.__context__
    return context


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--silent-from", type=int, default=None)
    parsed = parser.parse_args()
    job = resumable.Resumable(parsed.state, policy=resumable.NPolicy(1))
    try:
        with job:
            out = job.sink(parsed.out)
            say(f"ready {job.position}")
            for item in job.iterate(range(int(parsed.items))):
                if item == 1:
                    say(f"digest {hashlib.sha256(parsed.state.read_bytes()).hexdigest()}")
                if parsed.silent_from is None or item < parsed.silent_from:
                    out.write(f"{item}\n")
    except resumable.StateWriteError as error:
        report: dict[str, object] = {**describe(error), "saves": job.saves}
        if (context := during(error)) is not None:
            report["context"] = describe(context)
        say(f"error {json.dumps(report)}")
        return
    say(f"done {job.position} {job.finished}")


if __name__ == "__main__":
    main()
