"""Promises about signals that only a real process shows: what a program printed survives
the signal the library hands back, a signal that comes while the input is being asked for
its next item, and a handler installed from C is left alone.

Each test runs a small program as a child process and synchronises with it through a pipe
of its own, never through stdout or stderr: writing there would flush what the test wants
to find unflushed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resumable import inspect

TIMEOUT = 30.0  # a deadline on a wait, never a substitute for it


@contextmanager
def child(program: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run `program` with ``sys.argv[1]`` = the write end of a pipe the parent reads;
    yield the process and the read end."""
    ready_read, ready_write = os.pipe()
    # Buffered as a program's output usually is (PYTHONUNBUFFERED would flush every write).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(program), str(ready_write), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(ready_write,),
        env=env,
    )
    os.close(ready_write)
    try:
        yield process, ready_read
    finally:
        os.close(ready_read)
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


def wait_ready(ready: int, expected: bytes = b"ready\n") -> None:
    """Block until the child writes `expected` to its pipe."""
    got = b""
    while len(got) < len(expected):
        chunk = os.read(ready, len(expected) - len(got))
        assert chunk, f"the child ended before it was ready (read {got!r})"
        got += chunk
    assert got == expected


# The body prints each item without flushing: stdout into a pipe is block-buffered, so
# nothing reaches the pipe until a flush. The body of item 3 writes a partial line to
# stderr (line-buffered: kept until a newline), says it is ready on its own pipe and
# waits on stdin, where the parent's signal finds it.
UNFLUSHED_PRINTS = """
    import os, sys
    from resumable import NPolicy, Resumable

    ready, path = int(sys.argv[1]), sys.argv[2]
    with Resumable(path, policy=NPolicy(1000), quiet=True) as r:
        for item in r.iterate(range(100)):
            print(f"item {item}")
            if item == 3:
                sys.stderr.write("no newline yet")
                os.write(ready, b"ready\\n")
                sys.stdin.readline()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_what_the_program_printed_is_flushed_before_the_signal_is_handed_back(
    state_path: Path, signum: int
) -> None:
    """Stopped by SIGTERM or SIGHUP, the program dies by that signal, which skips Python's
    own flush at exit: every line it printed still reaches the pipe, and stderr too."""
    with child(UNFLUSHED_PRINTS, str(state_path)) as (process, ready):
        wait_ready(ready)
        os.kill(process.pid, signum)  # pending at once: it acts before item 3's read returns
        stdout, stderr = process.communicate(b"", timeout=TIMEOUT)
    assert process.returncode == -signum, stderr
    assert stdout.decode().splitlines() == [f"item {n}" for n in range(4)]
    assert stderr.decode() == "no newline yet"
    assert inspect(state_path).position == 4
