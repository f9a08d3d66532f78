"""One run per state file: an exclusive lock held on a separate lock file.

The lock is an OS lock on an open file (``flock`` on POSIX, ``msvcrt.locking`` on
Windows), so the kernel releases it the moment the holder dies, even by ``kill -9``: a
stale lock file on disk never blocks a new run. The file holds the holder's pid for the
error message. It is left in place on release, because deleting a lock file while another
process waits on it would let two processes hold two different files. For the same reason
a run checks before each save that the lock file at the path is still the file it locked
(one ``stat``): were it deleted or replaced, a second run could have locked a new file,
so the save is refused rather than overwrite that run's progress.

A child made by ``os.fork()`` gets copies of the descriptors, and an ``flock`` belongs to
the open file description they share: unlocking in the child would free the parent's lock,
and a child that kept its copy would hold the lock after the parent died. So the child
closes its copies at once, without unlocking (`os.register_at_fork`).

`lock_holder` tells from outside whether a run holds the lock (for ``resumable status``).
The OS offers no way to ask about an flock without trying it, so it takes the lock and
drops it at once; a run that is refused tries again a few times over about 20 ms, so one
that starts in that instant is not turned away by a lock nobody really holds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from resumable._errors import StateLockedError
from resumable._store.durable import close_fd

if sys.platform == "win32":  # pragma: no cover - Windows only
    import msvcrt
else:
    import fcntl

# The pid goes at the start of the file; Windows locks a byte range, so lock a byte well
# past it and the pid stays readable by the process that is refused.
_WINDOWS_LOCKED_BYTE = 1 << 20
_PID_WIDTH = 21  # 20 digits hold any 64-bit pid, then a newline
# The pauses before a refused run tries the lock again. `lock_holder` holds it for two
# system calls (microseconds; a few milliseconds if its process is preempted in between),
# a real run for as long as it runs: about 20 ms in all tells the two apart.
RETRY_PAUSES = (0.001, 0.004, 0.016)

# The lock files this process holds, and by which FileLock. dict.setdefault and dict.pop
# are single C calls, so claiming and releasing need no threading lock: a lock held when
# an interrupt lands between two lines would never be released.
_held_in_this_process: dict[str, FileLock] = {}


class FileLock:
    """An exclusive, non-blocking lock on `path`, naming its holder when refused."""

    def __init__(self, path: Path, job: Path) -> None:
        self.path = path
        self._path = os.fspath(path)  # os.stat of a str skips the conversion of a Path
        self.job = job
        self._fd: int | None = None
        self._key = os.path.normcase(os.path.realpath(path))
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the locked file
        self.lost = False  # the file at `path` is no longer the one locked

    def acquire(self) -> None:
        """Take the lock or raise `StateLockedError`; never waits for a run, only
        retries for about 20 ms in case `lock_holder` is probing it."""
        if _held_in_this_process.setdefault(self._key, self) is not self:
            raise StateLockedError(
                f"{self.job} is already open in this process (pid {os.getpid()}): "
                "one Resumable per state file at a time. Reuse the open one, or close "
                "it (leave its with block) before opening the file again.",
                pid=os.getpid(),
            )
        try:
            self._fd = _lock_file(self.path, self.job)
            self._identity = _identity(os.fstat(self._fd))
            # Deleted between its open and its lock, the file locked would be no one's.
            self.check_held()
        except BaseException:
            self.release()
            raise

    def check_held(self) -> None:
        """Raise `StateLockedError` unless the file at `path` is still the one locked.

        A lock file deleted or replaced while a run holds it lets a second run lock a new
        file at the same path: the two would then overwrite each other's progress.
        """
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            found = None
        # Inline, as it runs before every save (a save of progress is an append: each call
        # costs a few percent of it).
        if found is not None and (found.st_dev, found.st_ino) == self._identity:
            return
        self.lost = True
        holder = _pid_in(self.path) if found is not None else None
        what = (
            "was deleted"
            if found is None
            else f"was replaced by another file (written by process {holder})"
            if holder
            else "was replaced by another file"
        )
        raise StateLockedError(
            f"{self.job}: its lock file {self.path} {what} while this run (pid "
            f"{os.getpid()}) held it, so a second run of the job may be running. The save "
            "was refused, so as not to overwrite that run's progress; items finished since "
            "the last save will run again. See `resumable status` for the job, let any "
            "other run finish, then run again. Never delete a lock file while its run "
            "holds it.",
            pid=holder,
        )

    def release(self) -> None:
        """Release the lock; safe to call when it is not held, and to call again after an
        exception cut a release short (closing and forgetting the descriptor is one line)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                _unlock(self._fd)  # closing releases it too; Windows asks for an unlock
            self._fd = close_fd(self._fd)
        self._forget()

    def _forget(self) -> None:
        if _held_in_this_process.get(self._key) is self:
            _held_in_this_process.pop(self._key, None)

    def _let_go_in_forked_child(self) -> None:
        """Close this process's copy of the descriptor, leaving the parent's lock held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _let_go_of_locks_in_forked_child() -> None:
    """Run in the child after ``os.fork()``: the locks stay the parent's alone."""
    for lock in list(_held_in_this_process.values()):
        lock._let_go_in_forked_child()
    _held_in_this_process.clear()


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_let_go_of_locks_in_forked_child)


@dataclass(frozen=True)
class LockHolder:
    """A process that holds a job's lock; `pid` is None when the lock file does not say."""

    pid: int | None


def lock_holder(path: Path) -> LockHolder | None:
    """Who holds the lock on lock file `path` right now; None when nobody does.

    Creates and writes nothing: a missing lock file means the lock is free. To find out,
    it takes the lock and releases it at once (see the module docstring). Raises
    `OSError` when the lock file exists but cannot be opened or locked.
    """
    try:
        # O_NONBLOCK: should the path be a FIFO, opening it must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    try:
        if try_lock(fd):
            _unlock(fd)
            return None
        return LockHolder(_read_pid(fd))
    finally:
        os.close(fd)


def _lock_file(path: Path, job: Path) -> int:
    """Open and lock `path`, write our pid into it, and return the descriptor."""
    fd: int | None = None
    try:  # opened inside the try: no line between opening and the cleanup that covers it
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        # A call, not a nested `try:`: CPython 3.11 leaves the instruction of a `try:` line
        # outside the enclosing try, so an exception raised there (by a trace function)
        # would skip the close below.
        _lock_or_refuse(fd, path, job)
        _write_pid(fd)
        return fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


def _lock_or_refuse(fd: int, path: Path, job: Path) -> None:
    """Lock `fd`, or raise `StateLockedError` naming the process that holds the lock."""
    try:
        _lock_unless_held(fd)
    except OSError:
        holder = _read_pid(fd)
        who = f"process {holder}" if holder else "another process"
        raise StateLockedError(
            f"{job} is in use by {who}: only one run of a job at a time. Wait for it "
            "to finish or stop it; the lock frees itself when that process ends "
            f"(lock file: {path}).",
            pid=holder,
        ) from None


def _lock_unless_held(fd: int) -> None:
    """Lock `fd`; when refused, try again after each of the short `RETRY_PAUSES`, then
    raise the refusal."""
    for pause in RETRY_PAUSES:
        with contextlib.suppress(OSError):
            _lock(fd)
            return
        wait_before_retry(pause)
    _lock(fd)


def wait_before_retry(seconds: float) -> None:
    """Pause `seconds` before a refused run tries the lock again.

    The seam for tests (docs/architecture.md, "Seams for tests"): a test replaces this
    function, looked up at each pause, to see the pauses taken or to free the lock in one,
    with no real time waited.
    """
    time.sleep(seconds)


def _identity(found: os.stat_result) -> tuple[int, int]:
    return found.st_dev, found.st_ino


def _pid_in(path: Path) -> int | None:
    """The pid written in lock file `path`, if it can be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, _PID_WIDTH))
    return None


def _write_pid(fd: int) -> None:
    # Always the same width, so the file never needs truncating (an ftruncate costs
    # hundreds of microseconds: it is a journaled size change).
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid():<{_PID_WIDTH - 1}}\n".encode())


if sys.platform == "win32":  # pragma: no cover - Windows only

    def _lock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    def try_lock(fd: int) -> bool:
        try:
            _lock(fd)
        except PermissionError:  # msvcrt reports a lock held elsewhere as EACCES
            return False
        return True

else:

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def try_lock(fd: int) -> bool:
        try:
            _lock(fd)
        except BlockingIOError:  # EWOULDBLOCK: held elsewhere; other errors are raised
            return False
        return True
