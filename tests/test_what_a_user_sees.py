"""What a person sees when a loop stops: the stop line on a terminal, the traceback of a
ctrl+c, an error shown once, counts as people write them, warnings that point at their
own line and exceptions named as they import them."""

from __future__ import annotations

import fcntl
import os
import pickle
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import traceback
import warnings
from pathlib import Path

import pyte  # the test group installs it: a missing one must fail, never skip
import pytest

import resumable
from resumable import (
    InputChangedError,
    NPolicy,
    Resumable,
    ResumableWarning,
    StateNotSerializableError,
    inspect,
)

from jobs.harness import Child

# A job that writes its progress to the terminal and tells the test, on a pipe of its own,
# when an item is under way; the test answers with SIGINT.
PROGRESS_JOB = """
import os, sys
from resumable import Resumable
state, ready, style, keyed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "key"
with Resumable(state) as r:
    for n in r.iterate(range(10**9), key=int if keyed else None):
        if style == "carriage-return":
            sys.stdout.write(f"\\r  item {n}")
            sys.stdout.flush()  # as the demo does: shown at once
        elif n < 3:
            print(f"item {n}")
        if n == 2:
            sys.stdout.flush()
            os.write(ready, b"go\\n")
"""


def run_until_ctrl_c(
    tmp_path: Path, style: str, *, keyed: bool = False, terminal: bool = False
) -> bytes | str:
    """Run PROGRESS_JOB, send SIGINT once its third item runs, return what it showed:
    the bytes of its pseudo-terminal, or its stderr when `terminal` is False."""
    script = tmp_path / "job.py"
    script.write_text(PROGRESS_JOB)
    ready_read, ready_write = os.pipe()
    arguments = [
        sys.executable,
        str(script),
        str(tmp_path / "job.state"),
        str(ready_write),
        style,
        "key" if keyed else "position",
    ]
    if terminal:
        controller, terminal_fd = pty.openpty()
        size_terminal(terminal_fd)
        os.set_inheritable(terminal_fd, True)
        child = subprocess.Popen(
            arguments,
            stdin=terminal_fd,
            stdout=terminal_fd,
            stderr=terminal_fd,
            pass_fds=(ready_write,),
        )
        os.close(terminal_fd)
    else:
        child = subprocess.Popen(
            arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(ready_write,)
        )
    os.close(ready_write)
    try:
        with os.fdopen(ready_read, "rb") as ready:
            assert ready.readline() == b"go\n"
        child.send_signal(signal.SIGINT)
        if not terminal:
            _, stderr = child.communicate(timeout=60)
            return stderr.decode()
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child and its terminal are gone
                break
            if not chunk:
                break
            shown += chunk
        child.wait(timeout=60)
        return shown
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if terminal:
            os.close(controller)


def size_terminal(fd: int) -> None:
    """Give the pseudo-terminal `fd` the size of the screen that `screen_lines` draws."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))


ROWS, COLUMNS = 40, 80


def screen_lines(shown: bytes) -> list[str]:
    """What the terminal shows after `shown`, line by line, right-trimmed, up to its last
    line that is not blank."""
    screen = pyte.Screen(COLUMNS, ROWS)
    pyte.ByteStream(screen).feed(shown)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_the_stop_line_starts_a_line_of_its_own_after_a_carriage_return_progress_line(
    tmp_path: Path,
) -> None:
    shown = run_until_ctrl_c(tmp_path, "carriage-return", terminal=True)
    assert isinstance(shown, bytes)
    lines = screen_lines(shown)
    stop = next(i for i, line in enumerate(lines) if "resumable: stopped by SIGINT" in line)
    assert lines[stop].startswith("resumable: stopped by SIGINT after "), lines
    assert lines[stop - 1].lstrip("^C").startswith("  item "), lines  # kept, not overwritten


def test_the_stop_line_after_whole_lines_follows_them_without_a_blank_line(
    tmp_path: Path,
) -> None:
    shown = run_until_ctrl_c(tmp_path, "lines", terminal=True)
    assert isinstance(shown, bytes)
    lines = screen_lines(shown)
    assert lines[:3] == ["item 0", "item 1", "item 2"]
    assert lines[3].startswith("resumable: stopped by SIGINT after "), lines  # no blank line


@pytest.mark.parametrize("keyed", [False, True], ids=["by position", "by key"])
def test_a_ctrl_c_traceback_ends_at_a_line_that_says_the_progress_is_saved(
    tmp_path: Path, keyed: bool
) -> None:
    stderr = run_until_ctrl_c(tmp_path, "lines", keyed=keyed)
    assert isinstance(stderr, str)
    lines = [line for line in stderr.splitlines() if line.strip() and set(line.strip()) - set("^~")]
    assert lines[-1] == "KeyboardInterrupt"
    frames = [line for line in lines if line.startswith("  File ")]
    # The script's loop, and the raise that stops it: no frame of the library's inner
    # workings, and no exception chained before it.
    assert len(frames) == 2, stderr
    assert "job.py" in frames[0]
    assert str(Path(resumable.__file__).parent) in frames[1]  # the library's frame
    assert lines[-2].strip() == (
        "raise stop  # resumable: stopped between items; the progress is saved"
    )
    assert "During handling" not in stderr


# Waits inside its third item, answering each "ping" with "pong" (the harness's proof that
# a signal sent before it was handled).
WAITING_JOB = """
import sys
from resumable import Resumable
with Resumable(sys.argv[1]) as r:
    for n in r.iterate(range(10)):
        if n == 2:
            print("waiting", flush=True)
            while sys.stdin.readline() == "ping\\n":
                print("pong", flush=True)
"""


def test_a_second_ctrl_c_traceback_ends_at_a_line_that_says_it_stopped_at_once(
    tmp_path: Path,
) -> None:
    script = tmp_path / "waiting_job.py"
    script.write_text(WAITING_JOB)
    with Child(script, tmp_path / "job.state") as child:
        child.expect("waiting")
        child.send_signal(signal.SIGINT)
        child.ping()  # the first ctrl+c was handled: the item goes on
        child.send_signal(signal.SIGINT)
        ended = child.finish()
    lines = [
        line for line in ended.stderr.splitlines() if line.strip() and set(line.strip()) - set("^~")
    ]
    assert lines[-1] == "KeyboardInterrupt", ended.stderr
    assert (
        lines[-2].strip().endswith("# resumable: stopped at once (a second signal, or no loop)")
    ), ended.stderr
    assert "stopped by SIGINT after 2 items" in ended.stderr


def test_an_unserialisable_state_is_raised_once_and_the_job_is_released(state_path: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)
    with (
        pytest.raises(StateNotSerializableError) as raised,
        Resumable(state_path, policy=NPolicy(1)) as r,
    ):
        for n in r.iterate(range(5)):
            r.state["when"] = {n: object()}
    shown = "".join(traceback.format_exception(raised.value))
    assert shown.count("StateNotSerializableError: ") == 1, shown  # not raised again on exit
    assert signal.getsignal(signal.SIGINT) is handler
    with Resumable(state_path) as again:  # the lock is free
        assert again.position == 0  # nothing was saved, not even a part


def test_counts_in_the_stop_line_read_as_people_write_them(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Resumable(state_path, policy=NPolicy(10_000)) as r:
        for _ in r.iterate(range(1234)):
            pass
    with Resumable(state_path, restart=True) as r, pytest.raises(KeyboardInterrupt):
        for _ in r.iterate(range(1234)):
            signal.raise_signal(signal.SIGINT)
    assert "stopped by SIGINT after 1 item (1 in this run)" in capsys.readouterr().err
    with Resumable(tmp := state_path.with_name("big.state")) as r, pytest.raises(KeyboardInterrupt):
        for n in r.iterate(range(5000)):
            if n == 1233:
                signal.raise_signal(signal.SIGINT)
    assert inspect(tmp).position == 1234
    assert "stopped by SIGINT after 1,234 items (1,234 in this run)" in capsys.readouterr().err


def test_the_backup_warning_points_at_the_line_that_opened_the_job(state_path: Path) -> None:
    with Resumable(state_path, policy=NPolicy(1)) as r:  # saves thrice: a backup
        for _ in r.iterate(range(3)):
            pass
    state_path.write_text("{ not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Resumable(state_path):
            pass
    assert [w.category for w in caught] == [ResumableWarning]
    assert caught[0].filename == __file__


def test_inspect_warns_at_the_line_that_called_it(state_path: Path) -> None:
    with Resumable(state_path, policy=NPolicy(1)) as r:  # saves thrice: a backup
        for _ in r.iterate(range(3)):
            pass
    state_path.write_text("{ not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inspect(state_path)
    assert [(w.category, w.filename) for w in caught] == [(ResumableWarning, __file__)]


def test_the_off_main_thread_warning_points_at_the_line_that_opened_the_job(
    state_path: Path,
) -> None:
    caught: list[warnings.WarningMessage] = []

    def run() -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with Resumable(state_path):
                pass
        caught.extend(seen)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [(w.category, w.filename) for w in caught] == [(ResumableWarning, __file__)]


PUBLIC_CLASSES = [
    value for name in resumable.__all__ if isinstance(value := getattr(resumable, name), type)
]


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_public_classes_are_named_as_they_are_imported(cls: type) -> None:
    assert cls.__module__ in ("resumable", "resumable.policies")
    assert getattr(sys.modules[cls.__module__], cls.__qualname__) is cls
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_an_error_shows_as_resumable_dot_its_name_and_pickles() -> None:
    error = InputChangedError("the input changed")
    shown = traceback.format_exception_only(type(error), error)
    assert shown == ["resumable.InputChangedError: the input changed\n"]
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is InputChangedError
    assert str(again) == "the input changed"


def test_counts_in_an_input_changed_error_read_as_people_write_them(state_path: Path) -> None:
    with Resumable(state_path) as r:
        for _ in r.iterate(list(range(1500))):
            pass
    with pytest.raises(InputChangedError) as raised, Resumable(state_path) as r:
        list(r.iterate(list(range(1000))))
    assert "it had 1,500 items last time and has 1,000 now" in str(raised.value)
    assert "Its 1,500 done items may not be the first of this input" in str(raised.value)


def test_a_pickled_interrupted_keeps_its_signal_and_exit_status() -> None:
    again = pickle.loads(pickle.dumps(resumable.Interrupted(signal.SIGTERM)))
    assert (again.signum, again.code) == (signal.SIGTERM, 128 + signal.SIGTERM)
