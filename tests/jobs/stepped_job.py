"""A job stepped through stdin, one item at a time, for the signal and lock tests.

    python stepped_job.py STATE EFFECTS [options]

It prints one flushed line per event: ``ready <position> <runs>`` once inside the with
block; per item ``start <i>``, then it waits for a line on stdin, appends ``<i>`` to the
effects log (one O_APPEND write) and prints ``end <i>``; after the with block
``done <position> <finished>``. With ``--step-input`` the input itself waits too: before
it hands out item ``<i>`` it prints ``pull <i>`` and waits for a line (a slow source);
``--key`` tracks done items by key (``key=int``); ``--batch N`` loops over batches of N
items (``iterate(..., batch=N)``), each item of a batch stepped as above. Wherever it
waits for stdin it answers a ``ping`` line with ``pong`` and goes on waiting (see
`harness.Child.answers_ping`); end of stdin while waiting exits with status 1.

SIGINT, SIGTERM and SIGHUP start at Python's defaults (``default_int_handler``,
``SIG_DFL``), whatever handlers the test runner passed down.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import resumable


@dataclass(frozen=True)
class Options:
    """The command line of the job."""

    state: Path
    effects: Path
    items: int
    every: int
    break_at: int | None
    wait_before_loop: bool
    wait_after_loop: bool
    save_in_body: bool
    save_after_loop: bool
    inner_job: bool
    block_in_save: bool
    block_after_backup: bool
    pause_after_restore: bool
    pause_entering_exit: bool
    user_handler: bool
    report: bool
    key: bool
    batch: int | None
    step_input: bool


def parse_options() -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("effects", type=Path)
    parser.add_argument("--items", type=int, default=10, help="items in the input")
    parser.add_argument("--every", type=int, default=1000, help="policy NPolicy(EVERY)")
    parser.add_argument("--break-at", type=int, help="break out of the loop at this item")
    parser.add_argument(
        "--wait-before-loop", action="store_true", help="wait ('waiting before-loop') first"
    )
    parser.add_argument(
        "--wait-after-loop", action="store_true", help="wait ('waiting after-loop') after it"
    )
    parser.add_argument(
        "--save-in-body",
        action="store_true",
        help="call job.save() in every item's body, once its 'start' line is answered",
    )
    parser.add_argument(
        "--save-after-loop",
        action="store_true",
        help="after the loop, call job.save(), then print 'saved after loop' and wait",
    )
    parser.add_argument(
        "--inner-job",
        action="store_true",
        help="make --save-after-loop's save inside the with block of a second job, "
        "STATE.inner, whose handlers are installed over the job's",
    )
    parser.add_argument(
        "--block-in-save",
        action="store_true",
        help="in every save, print 'fsync' and wait before the temp file or the record "
        "appended to the progress log is flushed",
    )
    parser.add_argument(
        "--block-after-backup",
        action="store_true",
        help="in every save, print 'backup kept' and wait once the previous state file is "
        "linked as the backup, before the new one is renamed over it",
    )
    parser.add_argument(
        "--pause-after-restore",
        action="store_true",
        help="once the handlers are restored on exit, print 'restored' and wait",
    )
    parser.add_argument(
        "--pause-entering-exit",
        action="store_true",
        help="when the with block's __exit__ is entered, before its first instruction, "
        "print 'exiting' and wait (a profile hook with __exit__'s frame as its caller)",
    )
    parser.add_argument(
        "--user-handler",
        action="store_true",
        help="before the job, install a Python handler for SIGTERM and SIGHUP that prints "
        "'user handler <SIGNAME> saved=<position in the state file>'",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="when KeyboardInterrupt or Interrupted leaves the with block, print "
        "'caught <name>', the handlers, and whether the job opens again; then re-raise",
    )
    parser.add_argument("--key", action="store_true", help="keyed progress, key=int")
    parser.add_argument("--batch", type=int, help="loop over batches: iterate(batch=BATCH)")
    parser.add_argument(
        "--step-input",
        action="store_true",
        help="the input prints 'pull <i>' and waits for a line before it yields item i",
    )
    parsed = parser.parse_args()
    return Options(
        state=Path(parsed.state),
        effects=Path(parsed.effects),
        items=int(parsed.items),
        every=int(parsed.every),
        break_at=None if parsed.break_at is None else int(parsed.break_at),
        wait_before_loop=bool(parsed.wait_before_loop),
        wait_after_loop=bool(parsed.wait_after_loop),
        save_in_body=bool(parsed.save_in_body),
        save_after_loop=bool(parsed.save_after_loop),
        inner_job=bool(parsed.inner_job),
        block_in_save=bool(parsed.block_in_save),
        block_after_backup=bool(parsed.block_after_backup),
        pause_after_restore=bool(parsed.pause_after_restore),
        pause_entering_exit=bool(parsed.pause_entering_exit),
        user_handler=bool(parsed.user_handler),
        report=bool(parsed.report),
        key=bool(parsed.key),
        batch=None if parsed.batch is None else int(parsed.batch),
        step_input=bool(parsed.step_input),
    )


def say(line: str) -> None:
    """Print one line for the test, at once."""
    print(line, flush=True)


def wait_for_line(label: str) -> None:
    """Print `label`, then wait for a line on stdin, answering each ``ping`` with ``pong``."""
    say(label)
    while True:
        line = sys.stdin.readline()
        if not line:
            raise SystemExit(f"stepped_job: stdin ended while waiting at {label!r}")
        if line.strip() != "ping":
            return
        say("pong")


def handler_name(handler: object) -> str:
    """A short name for a signal handler, for the ``handlers`` line."""
    if handler is signal.default_int_handler:
        return "default_int_handler"
    if handler == signal.SIG_DFL:
        return "SIG_DFL"
    if handler == signal.SIG_IGN:
        return "SIG_IGN"
    return str(getattr(handler, "__qualname__", repr(handler)))


def install_test_points(options: Options) -> None:
    """Hold the library at a chosen point of a save or an exit, for the test.

    Each point is found by what the process does (the system calls a save makes, the
    handlers in place), never by the library's own functions, so that moving code inside
    the library moves no point.
    """
    if options.block_in_save:
        fsync = os.fsync

        def blocking_fsync(fd: Any) -> None:
            if is_temp_file(fd):  # not a journal's fsync, nor the directory's
                wait_for_line("fsync")  # the temp file is written, not yet flushed or renamed
            fsync(fd)

        os.fsync = blocking_fsync
        fdatasync = os.fdatasync

        def blocking_fdatasync(fd: Any) -> None:
            if is_progress_log(fd):  # a save appended to the progress log
                wait_for_line("fsync")  # the record is written, not yet flushed
            fdatasync(fd)

        os.fdatasync = blocking_fdatasync

    if options.block_after_backup:
        link = os.link

        def link_then_block(source: Any, backup: Any, **keywords: Any) -> None:
            link(source, backup, **keywords)  # a save links the previous file as the backup
            wait_for_line("backup kept")

        os.link = link_then_block  # type: ignore[assignment]

    if options.pause_after_restore:
        set_handler = signal.signal
        signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # as `main` set them
        before: dict[int, Any] = {signum: signal.getsignal(signum) for signum in signums}
        moments: list[str] = []  # "installed" once the job's handlers are in, then "paused"

        def pause_once_all_are_back(signum: int, handler: Any) -> Any:
            previous = set_handler(signum, handler)
            if not moments and handler != before.get(signum):
                moments.append("installed")
            elif moments == ["installed"] and all(
                signal.getsignal(s) == h for s, h in before.items()
            ):
                moments.append("paused")  # the first with block only, not the report's
                pause_on_return(sys._getframe(1), "restored")
            return previous

        signal.signal = pause_once_all_are_back  # type: ignore[assignment]

    if options.pause_entering_exit:
        exit_code = resumable.Resumable.__exit__.__code__

        def pause_at_exit(frame: FrameType, event: str, arg: object) -> None:
            # A profile hook runs as a function is entered: the stack is then exactly that
            # of __exit__ about to run its first instruction, where Python also runs signal
            # handlers. The hook removes itself, so it pauses once.
            if event == "call" and frame.f_code is exit_code:
                sys.setprofile(None)
                wait_for_line("exiting")

        sys.setprofile(pause_at_exit)


def is_progress_log(fd: Any) -> bool:
    """Whether `fd` is open on a job's progress log, ``<state file>.log``."""
    fd = fd if isinstance(fd, int) else fd.fileno()
    return os.readlink(f"/proc/self/fd/{fd}").endswith(".log")


def is_temp_file(fd: Any) -> bool:
    """Whether `fd` is open on a save's temp file, ``.<name>.<pid>.<token>.tmp``."""
    fd = fd if isinstance(fd, int) else fd.fileno()
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    return name.startswith(".") and name.endswith(".tmp")


def pause_on_return(frame: FrameType, label: str) -> None:
    """Wait for a line as `frame` returns: where its caller goes on, which is where Python
    also runs signal handlers (a signal's exception comes out of the call to `frame`)."""

    def hook(current: FrameType, event: str, arg: object) -> None:
        if event == "return" and current is frame:
            sys.setprofile(None)
            wait_for_line(label)

    sys.setprofile(hook)


def install_user_handler(options: Options) -> Callable[[int, FrameType | None], None]:
    """Install the program's own handler for SIGTERM and SIGHUP, as a user program might."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        saved = resumable.inspect(options.state).position
        say(f"user handler {signal.Signals(signum).name} saved={saved}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    return on_signal


def report(options: Options, error: BaseException) -> None:
    """Say what left the with block, which handlers are in place, and if the job opens."""
    say(f"caught {type(error).__name__}")
    handlers = (
        f"{signum.name}={handler_name(signal.getsignal(signum))}"
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    )
    say("handlers " + " ".join(handlers))
    try:
        with resumable.Resumable(options.state, signals=()) as again:
            say(f"reopened {again.position}")
    except resumable.StateLockedError as refused:
        say(f"locked {refused}")


def stepped_input(count: int) -> Iterator[int]:
    """The items 0 to `count` - 1, each handed out once a line comes: a slow source."""
    for item in range(count):
        wait_for_line(f"pull {item}")
        yield item


def step(job: resumable.Resumable, item: int, options: Options, effects: int) -> None:
    """The body for one item: wait for its line, then record its effect."""
    wait_for_line(f"start {item}")
    if options.save_in_body:
        job.save()
    os.write(effects, f"{item}\n".encode())
    say(f"end {item}")


def run(options: Options) -> None:
    """The job itself."""
    effects = os.open(options.effects, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        policy = resumable.NPolicy(options.every)
        with resumable.Resumable(options.state, policy=policy) as job:
            say(f"ready {job.position} {job.runs}")
            if options.wait_before_loop:
                wait_for_line("waiting before-loop")
            items: Iterable[int] = range(options.items)
            if options.step_input:
                items = stepped_input(options.items)
            key = int if options.key else None
            if options.batch is None:
                for item in job.iterate(items, key=key):
                    if item == options.break_at:
                        break
                    step(job, item, options, effects)
            else:
                for batch in job.iterate(items, key=key, batch=options.batch):
                    if options.break_at in batch:
                        break
                    for item in batch:
                        step(job, item, options, effects)
            if options.wait_after_loop:
                wait_for_line("waiting after-loop")
            if options.save_after_loop:
                inner = options.state.with_name(options.state.name + ".inner")
                with resumable.Resumable(inner) if options.inner_job else contextlib.nullcontext():
                    job.save()
                    wait_for_line("saved after loop")
        say(f"done {job.position} {job.finished}")
    finally:
        os.close(effects)


def main() -> None:
    """Set the default handlers, install the requested test points, run the job."""
    options = parse_options()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    install_test_points(options)
    if options.user_handler:
        install_user_handler(options)
    try:
        run(options)
    except (KeyboardInterrupt, resumable.Interrupted) as error:
        if options.report:
            report(options, error)
        raise


if __name__ == "__main__":
    main()
