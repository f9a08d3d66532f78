"""Run the job scripts of this directory as child processes and follow them line by line.

A `Child` runs one job script by its path with `sys.executable`, so that it imports the
``resumable`` installed in that environment, as the test process does. A thread reads
its stdout into a queue and another collects its stderr, so the test always knows the last
thing the child reported and never blocks on a full pipe. Synchronisation goes through
those lines and the child's stdin only: no sleep ever stands in for it. The one bounded
poll, `Child.wait_not_pending`, watches a real condition (a signal leaving the pending
set in ``/proc``).

`Job` names the files of one job (state file, effects log) inside a test's ``tmp_path``.
The test modules import this module as ``jobs.harness``: pytest's ``pythonpath`` option
(pyproject.toml) puts ``tests/`` on ``sys.path``, as ``--import-mode=importlib`` does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import resumable

JOBS_DIR = Path(__file__).resolve().parent

# The signals a Resumable handles when no `signals=` is given (its documented default),
# and what `signal.getsignal` returns for one.
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Handler = Callable[[int, FrameType | None], Any] | int | None

# How long a healthy child may take to reach its next line before the test fails instead
# of hanging. A deadline on a wait, never a substitute for the wait.
TIMEOUT = 30.0
_POLL_PAUSE = 0.001


def resumable_command() -> Callable[[list[str]], int]:
    """The function the installed ``resumable`` command calls with its arguments: found
    through its entry point (``[project.scripts]`` in pyproject.toml), wherever it lives."""
    (entry,) = entry_points(group="console_scripts", name="resumable")
    main: Callable[[list[str]], int] = entry.load()
    return main


# `resumable_command` for ``python -c``: the command with the child's arguments.
RESUMABLE_COMMAND = (
    "import sys; from importlib.metadata import entry_points; "
    "(entry,) = entry_points(group='console_scripts', name='resumable'); "
    "sys.exit(entry.load()(sys.argv[1:]))"
)


def child_env() -> dict[str, str]:
    """The environment of a child: ours, as it is.

    Nothing is added to ``PYTHONPATH``: the child imports the package installed for
    `sys.executable`, or the copy a caller put first on ``PYTHONPATH`` (tools/mutants.py
    names its mutated tree there), the same one the test process imports.
    """
    return dict(os.environ)


def campaign_seed() -> int:
    """A fresh seed for a randomised test, or ``RESUMABLE_TEST_SEED`` to replay one.

    It is printed, so pytest shows it with the output of a failing test.
    """
    chosen = os.environ.get("RESUMABLE_TEST_SEED")
    seed = int(chosen) if chosen else random.SystemRandom().randrange(2**32)
    print(f"random seed {seed}; replay with RESUMABLE_TEST_SEED={seed}")
    return seed


@dataclass(frozen=True)
class Finished:
    """How a child ended: its return code, the stdout lines not read yet, and all of stderr."""

    returncode: int
    stdout: list[str]
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        """The stderr output split into lines."""
        return self.stderr.splitlines()


class Child:
    """A job script running as a child process, read line by line; a context manager.

    `script` is a file name in this directory, or the path of a script elsewhere. `env`
    replaces the environment `child_env` gives. `new_session` starts the child in a session
    and process group of its own (its pid is the group's id), as a terminal runs a program
    in its own foreground group.
    """

    def __init__(
        self,
        script: str | os.PathLike[str],
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.argv = [sys.executable, str(JOBS_DIR / script), *(os.fspath(a) for a in args)]
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env() if env is None else dict(env),
            start_new_session=new_session,
        )
        self.seen: list[str] = []  # every stdout line read so far, in order
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._ended = False
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_stdin()
        for thread in self._threads:
            thread.join(TIMEOUT)

    # -- reading ------------------------------------------------------------------------

    def read_line(self, timeout: float = TIMEOUT) -> str | None:
        """The next stdout line without its newline, or None once stdout has ended."""
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(self.describe(f"no stdout line within {timeout} s")) from None
        if line is None:
            self._ended = True
            return None
        self.seen.append(line)
        return line

    def expect(self, expected: str) -> None:
        """Read the next stdout line and fail unless it is `expected`."""
        line = self.read_line()
        if line != expected:
            raise AssertionError(self.describe(f"expected {expected!r}, got {line!r}"))

    # -- writing and signalling ---------------------------------------------------------

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        if not self.try_send(line):
            raise AssertionError(self.describe(f"could not send {line!r}: stdin is closed"))

    def try_send(self, line: str) -> bool:
        """Write one line to the child's stdin; False when the child no longer reads it."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: we closed stdin ourselves
            return False
        return True

    def answers_ping(self) -> bool:
        """Send ``ping``: True if the child answers ``pong``, False if its stdout ends.

        The job scripts answer ``ping`` at every point where they wait for stdin. A signal
        sent before the ``ping`` is handled before the child can read the ``ping``: the
        kernel delivers a pending signal before the read that returns the line gets back
        to the program, and Python runs the handler before the next bytecode. So ``pong``
        proves the handler ran and returned, and the end of stdout proves it raised.
        """
        self.try_send("ping")
        line = self.read_line()
        if line is None:
            return False
        if line != "pong":
            raise AssertionError(self.describe(f"expected 'pong' or the end, got {line!r}"))
        return True

    def ping(self) -> None:
        """Fail unless the child answers ``pong``: it handled earlier signals and waits on."""
        if not self.answers_ping():
            raise AssertionError(self.describe("the child ended instead of answering 'ping'"))

    def send_signal(self, signum: int) -> None:
        """Send `signum` and return once the kernel has delivered it to the child."""
        os.kill(self.pid, signum)
        self.wait_not_pending(signum)

    def wait_not_pending(self, signum: int) -> None:
        """Poll /proc until `signum` is no longer pending for the child (or it has died).

        A standard signal sent again while still pending would merge with the first, so a
        test waits for this before sending the same signal twice.
        """
        bit = 1 << (signum - 1)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                return
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("State", "").startswith(("Z", "X")):
                return
            pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
            if not pending & bit:
                return
            if time.monotonic() > deadline:
                raise AssertionError(self.describe(f"signal {signum} still pending"))
            time.sleep(_POLL_PAUSE)

    # -- ending -------------------------------------------------------------------------

    def finish(self, timeout: float = TIMEOUT) -> Finished:
        """Close stdin, wait for the child to exit, and collect what it wrote after that."""
        self._close_stdin()
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(self.describe(f"did not exit within {timeout} s")) from None
        rest: list[str] = []
        while (line := self.read_line()) is not None:
            rest.append(line)
        for thread in self._threads:
            thread.join(TIMEOUT)
        return Finished(returncode, rest, "".join(self._stderr))

    def kill9(self) -> Finished:
        """Kill the child with SIGKILL and collect what it wrote before it died."""
        os.kill(self.pid, signal.SIGKILL)
        return self.finish()

    def describe(self, problem: str) -> str:
        """`problem`, with the command, the last stdout lines and the stderr so far."""
        stderr = "".join(self._stderr)
        return (
            f"{problem}\n  command: {' '.join(self.argv)}\n  returncode: {self.process.poll()}"
            f"\n  last stdout lines: {self.seen[-15:]}\n  stderr: {stderr[-3000:]!r}"
        )

    # -- internals ----------------------------------------------------------------------

    def _close_stdin(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\n"))
        finally:
            self.process.stdout.close()
            self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self._stderr.append(line)


def running_in_group(pgid: int) -> list[int]:
    """The processes of process group `pgid` that still run (zombies have ended), from
    /proc: a group outlives its leader while any process in it does."""
    running = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended as we looked
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            running.append(int(entry.name))
    return sorted(running)


def wait_until_group_ended(pgid: int) -> float:
    """Poll /proc until no process of group `pgid` runs; the seconds that took."""
    began = time.monotonic()
    while running := running_in_group(pgid):
        if time.monotonic() - began > TIMEOUT:
            raise AssertionError(f"processes {running} of group {pgid} still run")
        time.sleep(_POLL_PAUSE)
    return time.monotonic() - began


@dataclass(frozen=True)
class Job:
    """The files of one job in `directory`, and the job scripts that work on them."""

    directory: Path

    @property
    def state(self) -> Path:
        """The state file."""
        return self.directory / "job.state"

    @property
    def effects(self) -> Path:
        """The effects log: one line ``<item>`` per item body that ran to its end."""
        return self.directory / "effects.log"

    @property
    def lock_file(self) -> Path:
        """The lock file the library keeps beside the state file."""
        return self.state.with_name(self.state.name + ".lock")

    def stepped(self, *options: str) -> Child:
        """Start ``stepped_job.py`` on this job: one item per line sent to its stdin."""
        return Child("stepped_job.py", self.state, self.effects, *options)

    def fast(self, *options: str) -> Child:
        """Start ``fast_job.py`` on this job: items as fast as the saves allow."""
        return Child("fast_job.py", self.state, self.effects, *options)

    def probe(self) -> Child:
        """Start ``open_probe.py``: it tries once to open this job and reports as JSON."""
        return Child("open_probe.py", self.state)

    def snapshot(self) -> resumable.StateSnapshot:
        """What the state file says, read with `resumable.inspect`."""
        return resumable.inspect(self.state)

    def effects_log(self) -> list[int]:
        """The items in the effects log, in the order their bodies finished."""
        if not self.effects.exists():
            return []
        return [int(line) for line in self.effects.read_text().splitlines()]

    def temp_files(self) -> list[Path]:
        """The temp files a save of the state file (or its backup) leaves while it runs."""
        prefix = f".{self.state.name}."
        return sorted(
            path
            for path in self.directory.iterdir()
            if path.name.startswith(prefix) and path.name.endswith(".tmp")
        )

    def lock_is_free(self) -> bool:
        """Whether nobody holds the job's lock (tried with flock, changing nothing)."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing the only descriptor also drops a lock taken above
        return True


# -- scripts run to their end, optionally under strace ----------------------------------

STRACE = shutil.which("strace")


@dataclass(frozen=True)
class Traced:
    """A job script run to its end: how it ended, its stdout lines, its strace log (empty
    when it did not run under strace)."""

    command: list[str]
    returncode: int
    stdout: list[str]
    stderr: str
    log: list[str]

    def describe(self, problem: str) -> str:
        """`problem`, with the command, the output and the end of the strace log."""
        log = "\n    ".join(self.log[-25:])
        return (
            f"{problem}\n  command: {' '.join(self.command)}\n  returncode: {self.returncode}"
            f"\n  stdout: {self.stdout}\n  stderr: {self.stderr[-3000:]!r}"
            f"\n  strace log (end):\n    {log}"
        )

    def matching(self, pattern: re.Pattern[str]) -> list[str]:
        """The log lines of calls that match `pattern`."""
        return [line for line in self.log if pattern.search(line)]

    def killed_call(self) -> str:
        """The log line of the call the process was killed in."""
        for index, line in enumerate(self.log):
            if line.endswith("+++ killed by SIGKILL +++") and index > 0:
                return self.log[index - 1]
        raise AssertionError(self.describe("the log shows no kill"))

    def first_failure(self, errno_name: str) -> str:
        """The log line of the first call that failed with `errno_name`."""
        for line in self.log:
            if f"= -1 {errno_name} " in line:
                return line
        raise AssertionError(self.describe(f"no call failed with {errno_name}"))

    def check_is_nth(self, line: str, pattern: re.Pattern[str], nth: int, what: str) -> None:
        """Fail unless `line` is the `nth` call (from 1) of the log that matches `pattern`."""
        assert pattern.search(line), self.describe(f"{what}: hit {line!r}")
        calls = self.matching(pattern)
        number = calls.index(line) + 1 if line in calls else None
        assert number == nth, self.describe(
            f"{what}: hit call {number} of those matching {pattern.pattern!r}, not call {nth}"
        )

    def calls(self, name: str, path: Path) -> list[str]:
        """The log lines of the system call `name` on the file `path`."""
        return self.matching(re.compile(rf"^\d+\s+{name}\(\d+<{re.escape(str(path))}>"))


def run_script(
    script: str,
    args: Sequence[str],
    *,
    log: Path,
    strace_options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Traced:
    """Run a job script of this directory to its end, under ``strace -f -qq -y -o LOG``
    with `strace_options` when there are any."""
    command = [sys.executable, str(JOBS_DIR / script), *args]
    if strace_options:
        assert STRACE is not None
        command = [STRACE, "-f", "-qq", "-y", "-o", str(log), *strace_options, *command]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_env() if env is None else dict(env),
        timeout=TIMEOUT,
        check=False,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    return Traced(
        command, completed.returncode, completed.stdout.splitlines(), completed.stderr, lines
    )
