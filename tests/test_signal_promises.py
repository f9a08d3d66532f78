"""Promises about signals that only a real process shows: what a program printed survives
the signal the library hands back, a signal that comes while the input is being asked for
its next item, and a handler installed from C is left alone.

Each test runs a small program as a child process and synchronises with it through a pipe
of its own, never through stdout or stderr: writing there would flush what the test wants
to find unflushed.
"""

from __future__ import annotations

import json
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


# As UNFLUSHED_PRINTS, but the program has no sys.stdout (pythonw, a daemon that closed it).
NO_STDOUT = """
    import os, sys
    from resumable import NPolicy, Resumable

    ready, path = int(sys.argv[1]), sys.argv[2]
    sys.stdout = None
    with Resumable(path, policy=NPolicy(1000), quiet=True) as r:
        for item in r.iterate(range(100)):
            if item == 3:
                os.write(ready, b"ready\\n")
                sys.stdin.readline()
"""


def test_a_program_without_stdout_still_dies_by_the_signal_handed_back(state_path: Path) -> None:
    """With sys.stdout None, the flush before a handed-back SIGTERM skips it: the program
    dies by SIGTERM (no AttributeError on the way), its progress saved."""
    with child(NO_STDOUT, str(state_path)) as (process, ready):
        wait_ready(ready)
        os.kill(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(b"", timeout=TIMEOUT)
    assert process.returncode == -signal.SIGTERM, stderr
    assert stderr == b""
    assert inspect(state_path).position == 4


# The input is a generator that, asked for item 3, says it is ready and waits on stdin: a
# slow source (a network read, a queue). Each body prints the item it ran, flushed.
SLOW_GENERATOR = """
    import os, sys
    from resumable import NPolicy, Resumable

    ready, path, keyed = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "keyed"

    def slow_source():
        for item in range(100):
            print(f"asked {item}", flush=True)
            if item == 3:
                os.write(ready, b"ready\\n")
                sys.stdin.readline()
            yield item

    with Resumable(path, policy=NPolicy(1000), quiet=True) as r:
        for item in r.iterate(slow_source(), key=int if keyed else None):
            print(f"ran {item}", flush=True)
"""


@pytest.mark.parametrize("kind", ["position", "keyed"])
def test_a_signal_while_a_slow_generator_is_asked_for_an_item_stops_after_that_item(
    state_path: Path, kind: str
) -> None:
    """SIGTERM while the generator works on item 3: item 3 counts as the item in flight,
    so it comes out, its body runs, and the loop stops without asking for item 4. Nothing
    is lost: the four items that ran are saved as done."""
    with child(SLOW_GENERATOR, str(state_path), kind) as (process, ready):
        wait_ready(ready)
        os.kill(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(b"\n", timeout=TIMEOUT)
    assert process.returncode == -signal.SIGTERM, stderr
    lines = stdout.decode().splitlines()
    assert lines == [line for n in range(4) for line in (f"asked {n}", f"ran {n}")]
    assert inspect(state_path).position == 4


# A handler installed from C before Python set up its signal module is one Python cannot
# name: signal.getsignal gives None, and it could not be put back. A program embedding
# Python has one from before the interpreter started. Here libc's signal() installs it,
# and then Python's _signal module is set up afresh (executed from its spec), which reads
# the handlers the process has, as at start-up. The handler is abort(), never called: the
# signal is never sent. What the process has installed is read with sigaction().
C_HANDLER = """
    import ctypes, importlib.util, json, signal, sys
    from resumable import Resumable

    path, name = sys.argv[2], sys.argv[3]
    signum = getattr(signal, name)
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    c_handler = ctypes.cast(libc.abort, ctypes.c_void_p).value

    def installed():
        action = ctypes.create_string_buffer(512)  # struct sigaction: the handler first
        assert libc.sigaction(signum, None, action) == 0
        return ctypes.c_void_p.from_buffer(action).value

    libc.signal(signum, c_handler)
    spec = importlib.util.find_spec("_signal")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    def seen():
        return {"getsignal": repr(signal.getsignal(signum)), "ours": installed() == c_handler}

    report = {"before": seen()}
    with Resumable(path, signals=(signum,), quiet=True) as r:
        for item in r.iterate(range(3)):
            report["during"] = seen()
    report["after"] = seen()
    print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads struct sigaction (Linux)")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_handler_installed_from_c_is_left_alone(state_path: Path, name: str) -> None:
    """signals= names a signal whose handler was installed from C: the run does not
    replace it, and it is still the one installed during the loop and after the run."""
    with child(C_HANDLER, str(state_path), name) as (process, _):
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    unchanged = {"getsignal": "None", "ours": True}
    assert report == {"before": unchanged, "during": unchanged, "after": unchanged}
    assert inspect(state_path).finished
