"""Jobs that fork inside the loop, for the fork tests.

    python fork_job.py terminate STATE
    python fork_job.py nested STATE
    python fork_job.py linger STATE
    python fork_job.py fall-through STATE

Each prints flushed lines for the test:

- ``terminate``: in item 0 it starts a multiprocessing "fork" child that reports its
  SIGINT and SIGTERM handlers (``child handlers <SIGINT> <SIGTERM>``) and then blocks, calls
  ``Process.terminate()``, and prints ``exitcode <code>`` once the child ended (or
  ``alive`` when it did not within the harness timeout).
- ``nested``: three jobs open at once, each loop in the body of the one before (STATE and
  two files beside it); in each of the innermost loop's 6 items it does what ``terminate``
  does, printing the same two lines.
- ``linger``: a job saving after every item; in item 1 it starts a multiprocessing "fork"
  child that lets go of stdout and stderr and then waits for a signal, prints
  ``lingering <child pid>`` once that child runs, and waits for a line on stdin.
- ``fall-through``: in item 2 a plain ``os.fork()`` child calls ``r.save()`` (it prints
  ``child save: <exception name>``), changes ``r.state`` and breaks out of the loop, so it
  leaves the with block as a normal exit would; it then prints ``child left the with
  block`` and ends with ``os._exit(0)``. The parent prints ``child exited <status>``, waits
  for a line on stdin, finishes the loop and prints ``done <position> <r.state>``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import resumable

FORK = multiprocessing.get_context("fork")
# The harness's TIMEOUT (jobs/harness.py): a script run by its path cannot import the
# harness, and by then the test waiting for this child has failed anyway.
TIMEOUT = 30.0


def say(line: str) -> None:
    """Print one line for the test, at once."""
    print(line, flush=True)


def handler_name(handler: object) -> str:
    """A short name for a signal handler."""
    if handler is signal.default_int_handler:
        return "default_int_handler"
    if handler == signal.SIG_DFL:
        return "SIG_DFL"
    return str(getattr(handler, "__qualname__", repr(handler)))


def report_and_block(connection: Connection) -> None:
    """In the child: send the handlers in place, then block until the end."""
    names = [handler_name(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]
    connection.send(" ".join(names))
    connection.recv()  # never sent: the child waits here for its terminate()


def terminate_a_child() -> None:
    """Start a fork child that reports its handlers, and terminate it."""
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=report_and_block, args=(theirs,))
    child.start()
    say(f"child handlers {ours.recv()}")
    child.terminate()
    child.join(TIMEOUT)
    say("alive" if child.is_alive() else f"exitcode {child.exitcode}")
    if child.is_alive():
        child.kill()
        child.join()


def terminate(state: Path) -> None:
    """Terminate a fork child started inside the loop."""
    with resumable.Resumable(state) as r:
        for _ in r.iterate(range(1)):
            terminate_a_child()


def nested(state: Path) -> None:
    """Terminate fork children started inside three nested loops."""
    with resumable.Resumable(state) as outer:
        for _ in outer.iterate(range(1)):
            with resumable.Resumable(state.with_suffix(".middle")) as middle:
                for _ in middle.iterate(range(1)):
                    with resumable.Resumable(state.with_suffix(".inner")) as inner:
                        for _ in inner.iterate(range(6)):
                            terminate_a_child()


def wait_for_a_signal(running: Event) -> None:
    """In the child: let go of the test's pipes, say it runs, and wait for a signal."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    running.set()
    signal.pause()


def linger(state: Path) -> None:
    """Start a child that outlives the job, and wait."""
    with resumable.Resumable(state, policy=resumable.NPolicy(1)) as r:
        for item in r.iterate(range(10)):
            if item == 1:
                running = FORK.Event()
                child = FORK.Process(target=wait_for_a_signal, args=(running,))
                child.start()
                running.wait(TIMEOUT)
                say(f"lingering {child.pid}")
                sys.stdin.readline()


def fall_through(state: Path) -> None:
    """Fork a plain child that leaves the with block normally."""
    parent = os.getpid()
    with resumable.Resumable(state, policy=resumable.NPolicy(1000)) as r:
        for item in r.iterate(range(5)):
            if item == 2:
                pid = os.fork()
                if pid == 0:
                    try:
                        r.save()
                        say("child save: none")
                    except resumable.ResumableError as error:
                        say(f"child save: {type(error).__name__}")
                    r.state["by"] = "child"
                    break
                _, status = os.waitpid(pid, 0)
                say(f"child exited {os.waitstatus_to_exitcode(status)}")
                sys.stdin.readline()
        if os.getpid() != parent:
            say("child left the with block")
            os._exit(0)
    say(f"done {r.position} {json.dumps(r.state)}")


def main() -> None:
    """Run the job named on the command line."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    jobs = {
        "terminate": terminate,
        "nested": nested,
        "linger": linger,
        "fall-through": fall_through,
    }
    jobs[sys.argv[1]](Path(sys.argv[2]))


if __name__ == "__main__":
    main()
