"""The exceptions and warnings that `resumable` raises.

Every error is a `ResumableError`, so one ``except ResumableError`` catches them all, and
every message says what went wrong and what to do next.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ResumableError(Exception):
    """Base class of every error raised by `resumable`."""


class StateFileError(ResumableError):
    """A state file is unreadable, corrupt, or from an unknown format version.

    The library never overwrites or deletes such a file; the message says how to proceed.
    """


class StateWriteError(ResumableError):
    """Progress could not be written: the previous state file is intact.

    The operating-system error is the ``__cause__``; `errno` repeats its error number.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class StateLockedError(ResumableError):
    """Another run (in this or another process) holds the lock of this state file."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CalledTooOftenError(ResumableError):
    """`Resumable.save` was called sooner after the previous save than ``min_interval``."""


class StateNotSerializableError(ResumableError, TypeError):
    """`Resumable.state` holds a value that cannot be saved as JSON; `key` names where."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class InputChangedError(ResumableError):
    """The input no longer matches the saved progress (for example, it became shorter)."""


class UsageError(ResumableError):
    """The library was used in a way it does not support; the message names the fix."""


class Interrupted(SystemExit):
    """The loop was stopped by a termination signal other than SIGINT.

    It derives from `SystemExit` (not `Exception`), so ``except Exception`` does not swallow
    it, and an uncaught one ends the program quietly with exit status ``128 + signum``,
    the status a shell reports for death by that signal. SIGINT raises `KeyboardInterrupt`
    instead, as Python always does for ctrl+c.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal_name(self.signum)}"

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int]]:
        # Rebuilt from the signal, not from SystemExit's args (the exit status), which
        # would make the status 128 + 128 + signum.
        return (type(self), (self.signum,))


class ResumableWarning(UserWarning):
    """A problem `resumable` worked around (for example, resuming from the backup file)."""


def reset_command(path: os.PathLike[str] | str) -> str:
    """The shell's way to start a job over, for messages that also name restart=True."""
    return f"resumable reset {shlex.quote(os.fspath(path))}"


def warn(message: str) -> None:
    """Issue a `ResumableWarning` that points at the caller's line, the first frame
    outside this package, wherever in the library it was raised."""
    warnings.warn(message, ResumableWarning, stacklevel=_first_outside_frame())


def _first_outside_frame() -> int:
    """The `stacklevel` of the first frame, counted from `warn`'s, outside the package."""
    frame = sys._getframe(2)  # the caller of `warn`
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def signal_name(signum: int) -> str:
    """Return ``"SIGTERM"`` for 15, and a readable fallback for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_os_error(error: BaseException) -> str:
    """An I/O error as it reads in a message: its reason and errno name, e.g.
    ``No space left on device [ENOSPC]``; any other exception as its repr."""
    if isinstance(error, OSError):
        name = errno.errorcode.get(error.errno or 0, "error")
        return f"{error.strerror or error} [{name}]"
    return repr(error)


def read_fix(error: OSError) -> str:
    """What to do about a file that cannot be read for `error`, as a sentence without its
    full stop: give read access after a refusal, otherwise fix the disk or file system."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return (
            "Give this user read access to it (a run as another user, or under sudo, may "
            "have left it so)"
        )
    return "Fix what stops the read (the disk, the file system, the network share)"
