"""Atomic, durable file replacement: the old content or the new, never neither.

A save writes a uniquely named temporary file in the same directory, flushes it to the
disk, renames it over the target and then flushes the directory, so that after a crash or
power loss the target holds either the previous bytes or the new ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

StrPath = str | os.PathLike[str]

if sys.platform != "win32":
    import fcntl

TEMP_SUFFIX = ".tmp"
# Windows refuses to replace a file another program (a virus scanner, an editor) holds
# open; such holds are short, so the rename is retried for about a second.
_WINDOWS_REPLACE_RETRIES = 10
_WINDOWS_REPLACE_PAUSE = 0.1


def temp_name(target: StrPath) -> str:
    """A fresh temp-file path beside `target`, recognisable by `is_temp_of`."""
    # Strings, not pathlib: a save runs this, and pathlib's parsing costs microseconds.
    directory, name = os.path.split(os.fspath(target))
    token = secrets.token_hex(4)
    return os.path.join(directory, f".{name}.{os.getpid()}.{token}{TEMP_SUFFIX}")


def is_temp_of(target: Path, candidate: Path) -> bool:
    """Whether `candidate` is a temp file that a save of `target` may have left behind."""
    return _temp_pattern(target.name).fullmatch(candidate.name) is not None


def _temp_pattern(name: str) -> re.Pattern[str]:
    # The temp files of `name` and of its backup, and not those of another job's file.
    return re.compile(rf"\.{re.escape(name)}(?:\.bak)?\.\d+\.[0-9a-f]{{8}}{TEMP_SUFFIX}")


def replace_durably(target: StrPath, data: bytes, keep_previous_as: StrPath | None = None) -> None:
    """Replace `target` with `data` atomically and durably: `replace_atomically`, then a
    flush of the directory so that the rename itself survives a power cut."""
    replace_atomically(target, data, keep_previous_as)
    fsync_directory(os.path.dirname(os.fspath(target)) or os.curdir)


def replace_atomically(
    target: StrPath, data: bytes, keep_previous_as: StrPath | None = None, mode: int | None = None
) -> None:
    """Replace `target` with `data`, flushed to the disk, by an atomic rename.

    With `keep_previous_as`, the current `target` becomes that file (a hard link, so no
    bytes are copied) just before the replace. With `mode`, the new file gets those
    permission bits (else the umask decides). On any error the temp file is removed, the
    previous `target` is intact and the error is raised. An fsync error is never retried:
    after a failed fsync the kernel may have dropped the dirty pages, so a retry could
    report success for data that never reached the disk. The rename is durable only once
    the directory is flushed (`fsync_directory`).
    """
    temp = temp_name(target)
    # The descriptor and the temp file are created inside the try, so no line runs
    # between acquiring them and the cleanup that covers them: an exception at any line
    # (a KeyboardInterrupt from a handler that is not ours) leaves neither behind.
    fd: int | None = None
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        set_mode(fd, mode)
        write_all(fd, data)
        fsync_file(fd)
        fd = close_fd(fd)
        if keep_previous_as is not None:
            _keep_as_backup(target, keep_previous_as)
        _replace(temp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


_fchmod: Callable[[int, int], None] | None = getattr(os, "fchmod", None)  # not on Windows < 3.13


def set_mode(fd: int, mode: int | None) -> None:
    """Give the open file `fd` exactly the permission bits `mode`, whatever the umask
    (None: leave what the umask gave)."""
    if mode is not None and _fchmod is not None:
        _fchmod(fd, mode)


# ``fd = close_fd(fd)`` closes a descriptor and forgets it in one line. It is os.close
# itself (which returns None), so no line of Python code runs between the two: an
# exception from a trace function or a signal handler comes before or after both, and a
# cleanup after an interrupt never closes a descriptor twice (which could close another
# file that reused its number). The annotation only lets the result be assigned.
close_fd: Callable[[int], int | None] = os.close


def fsync_file(fd: int) -> None:
    """Flush a file's data to the disk itself (F_FULLFSYNC on macOS, where fsync is not)."""
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass  # some file systems (network, FAT) lack it; plain fsync is the best left
    os.fsync(fd)


def fsync_directory(directory: StrPath) -> None:
    """Make a rename in `directory` durable; Windows has no directory handles to flush."""
    if sys.platform != "win32":
        fd: int | None = None
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            fd = close_fd(fd)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`: os.write may write less than it is given."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _keep_as_backup(source: StrPath, backup: StrPath) -> None:
    """Make `backup` another name of `source`'s current content: a hard link.

    The old backup goes first, so for a moment there is none: harmless, because `source`
    is intact until the replace that follows, and a backup is only read when `source` is
    not. Replacing the backup atomically through a temp name would cost a rename and an
    unlink more in every save.
    """
    try:  # noqa: SIM105 - contextlib.suppress costs a context manager in every save
        os.unlink(backup)
    except FileNotFoundError:
        pass
    try:
        os.link(source, backup)
    except FileNotFoundError:
        return  # nothing to keep yet
    except OSError:
        # File systems without hard links (FAT, some network shares): copy the bytes,
        # through a temp file, so that a copy cut short never has the backup's name.
        temp = temp_name(backup)
        try:
            Path(temp).write_bytes(Path(source).read_bytes())
            _replace(temp, backup)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


if sys.platform == "win32":  # pragma: no cover - Windows only

    def _replace(source: StrPath, destination: StrPath) -> None:
        for attempt in range(_WINDOWS_REPLACE_RETRIES):
            try:
                os.replace(source, destination)
                return
            except PermissionError:
                if attempt == _WINDOWS_REPLACE_RETRIES - 1:
                    raise
                time.sleep(_WINDOWS_REPLACE_PAUSE)

else:
    _replace = os.replace
