"""Where and how progress is kept: a state file, its backup and its lock file.

For ``job.state`` the store uses ``job.state.bak`` (the previous generation),
``job.state.lock`` (held while a run is open) and short-lived ``.job.state.*.tmp`` files
during a save. A damaged state file is never overwritten or deleted: when the run resumes
from the backup instead, the first save gives the damaged file a second name,
``job.state.corrupt-<time>``, byte for byte as it was, before the new state replaces it;
`reset` moves the state file and its backup to ``job.state.reset-<time>`` and
``job.state.reset-<time>.bak``.

The journals beside the state file (``job.state.keys-<g>``, ``job.state.failed-<g>``)
are kept by `resumable._store.journal.FileJournals`, which the store's journal methods
hand on to. The progress log ``job.state.log`` (`resumable._store.progress_log`) holds
the saves of progress made since the state file was last rewritten; a reader applies it
to the state file it read, and moving a state file aside moves its log with it.

What a reader checks before it trusts a file, in order:

| check | when it fails |
| --- | --- |
| open without blocking; `fstat` the open file | any error: `NotDamagedError` |
| a regular file (no FIFO, device, socket or directory) | `NotDamagedError` |
| at most `MAX_BYTES` bytes, before one is read | damage |
| what `document.decode` checks | damage, or `NotDamagedError` for a newer format |

Damage sends the job to the backup; `NotDamagedError` never does, because an error that
stops the read says nothing about the bytes, and a newer file is no damaged one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

from resumable._errors import (
    StateFileError,
    StateWriteError,
    describe_os_error,
    read_fix,
    reset_command,
    warn,
)
from resumable._store import document, durable
from resumable._store.document import MAX_BYTES, Loaded, NotDamagedError, StateDocument
from resumable._store.durable import close_fd
from resumable._store.flock import FileLock, LockHolder, lock_holder
from resumable._store.journal import FileJournals
from resumable._store.journal_api import JournalChange, JournalRead, JournalReference
from resumable._store.journal_codec import Kind
from resumable._store.progress_log import ProgressLog, apply_log, log_path


def resolve(path: str | os.PathLike[str]) -> Path:
    """The state file that `path` names, symlinks followed: `Resumable`, `reset`, `inspect`
    and ``resumable status`` all use it, so that a job reached through a link and by its
    own name is one job, with one lock and one backup."""
    return Path(os.path.realpath(os.fspath(path)))


def backup_path(path: Path) -> Path:
    """The backup of state file `path`: its previous generation."""
    return path.with_name(path.name + ".bak")


def lock_path(path: Path) -> Path:
    """The lock file of state file `path`, held by the run that has the job open."""
    return path.with_name(path.name + ".lock")


def aside_path(path: Path, reason: str) -> Path:
    """A free name to move state file `path` aside to: ``<name>.<reason>-<local time>``.

    The time is ``YYYYmmddTHHMMSS``; ``-2``, ``-3``... follow when that name, its
    ``.bak`` or its ``.log`` is taken (a move aside that a crash cut short leaves a log
    under the name). No save ever writes such a name, so what is moved there stays.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{reason}-{stamp}")
    count = 1
    while aside.exists() or backup_path(aside).exists() or os.path.lexists(log_path(str(aside))):
        count += 1
        aside = path.with_name(f"{path.name}.{reason}-{stamp}-{count}")
    return aside


def read_state(path: Path) -> Loaded | None:
    """Read the state file at `path`, falling back to its backup when it is damaged.

    Returns None when there is no state file (a fresh job). Raises `StateFileError` when
    neither file can be used, and `NotDamagedError` when the state file cannot be used
    though it may be intact. Never writes anything.
    """
    try:
        main_error = _decode_file(path)
    except FileNotFoundError:
        return None
    if isinstance(main_error, StateDocument):
        return Loaded(main_error, from_backup=False)
    backup = backup_path(path)
    try:
        backup_result = _decode_file(backup)
    except FileNotFoundError:
        backup_result = StateFileError(f"there is no backup ({backup})")
    except NotDamagedError as error:
        backup_result = error
    if isinstance(backup_result, StateDocument):
        warn(
            f"{main_error}; resuming from the backup {backup}. The damaged file is kept "
            f"as {path.name}.corrupt-<time> at the first save.",
        )
        return Loaded(backup_result, from_backup=True)
    raise StateFileError(
        f"{main_error}, and {backup_result}. Nothing was changed. Restore the file, move "
        f"it away to start over, or start over with restart=True (at the shell: "
        f"{reset_command(path)}); the old file is kept as {path.name}.reset-<time>."
    )


def refuse_directory(path: Path) -> None:
    """Raise `StateFileError` when `path` is a directory: never read, replaced or moved."""
    if path.is_dir():
        raise _directory_error(path)


def _directory_error(path: Path) -> StateFileError:
    return NotDamagedError(
        f"{path} is a directory, not a state file: pass the path of a file, "
        f"e.g. {path / 'job.state'}"
    )


def require_state_file(path: Path) -> None:
    """Raise `FileNotFoundError` unless there is a state file at `path` (`StateFileError`
    when it is a directory)."""
    refuse_directory(path)
    if not path.exists():
        raise FileNotFoundError(f"no state file at {path}: nothing to reset")


def _decode_file(path: Path) -> StateDocument | StateFileError:
    """The document in the file at `path`, or the damage found in it. Raises
    `FileNotFoundError` when there is none and `NotDamagedError` when it cannot be used
    though it may be intact."""
    data = _read(path)
    if data is None:
        return StateFileError(
            f"{path} is larger than any state file ({MAX_BYTES // 2**20} MiB at most)"
        )
    try:
        return apply_log(document.decode(data, str(path)), os.fspath(path))
    except NotDamagedError:
        raise
    except StateFileError as error:
        return error


# O_NONBLOCK: opening a FIFO must not wait for a writer (reads of a regular file ignore it).
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def _read(path: Path) -> bytes | None:
    """The bytes of the regular file at `path`; None when it holds more than `MAX_BYTES`.

    The type and size are checked on the open file before a byte is read, so a FIFO, a
    device or a huge sparse file costs no time and no memory. Any error from the system
    (EACCES, EPERM, EIO, ELOOP, ...) raises `NotDamagedError`: it says nothing about the
    bytes, which may well be intact, so it must never send the job to the backup.
    """
    # The descriptor is opened inside the try, and closed and forgotten in one line, so
    # that an exception at any line (an interrupt) leaves it neither open nor closed twice.
    fd: int | None = None
    try:
        fd = os.open(path, _READ_FLAGS)
        data = _read_regular_file(path, fd)
        fd = close_fd(fd)
    except BaseException as error:
        if fd is not None:
            os.close(fd)
        if isinstance(error, IsADirectoryError):
            raise _directory_error(path) from None
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            raise _cannot_read(path, error) from error
        raise
    return data


def _read_regular_file(path: Path, fd: int) -> bytes | None:
    found = os.fstat(fd)
    if stat.S_ISDIR(found.st_mode):
        raise _directory_error(path)
    if not stat.S_ISREG(found.st_mode):
        raise NotDamagedError(
            f"{path} is {_file_kind(found.st_mode)}, not a state file, which is a regular "
            "file. Nothing was read or changed: pass the path of a state file, or move this "
            "one away."
        )
    if found.st_size > MAX_BYTES:
        return None
    # One read of the size fstat gave (os.read allocates what it is asked for); more only
    # if the file grew since, up to the bound.
    chunks = []
    left, want = MAX_BYTES + 1, found.st_size + 1
    while left > 0 and (chunk := os.read(fd, min(left, want))):
        chunks.append(chunk)
        left -= len(chunk)
        want = 1 << 16
    return b"".join(chunks) if left > 0 else None


def _cannot_read(path: Path, error: OSError) -> NotDamagedError:
    return NotDamagedError(
        f"{path} cannot be read: {describe_os_error(error)}. That says nothing about its "
        f"content, so it is not taken for damage: the backup is not used and nothing was "
        f"changed. {read_fix(error)}, then run again."
    )


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


class FileStore:
    """A job's state file with its backup and lock; `save` writes atomically and durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = backup_path(path)
        # The names a save uses, as strings once: pathlib would redo its work every save.
        self._target = os.fspath(path)
        self._backup = os.fspath(self.backup)
        self._directory = os.fspath(path.parent)
        self._lock = FileLock(lock_path(path), job=path)
        self._main_is_damaged = False
        self._fresh = False  # a new job, whose first save moves an earlier job's files aside
        # The state file's permission bits as the run found them: every save keeps them, so
        # a file the user made private (r.state may hold secrets) stays private.
        self._mode: int | None = None
        self._journals = FileJournals(path)
        # Progress-only saves are appended here between compactions (`progress_log`).
        self.progress_log = ProgressLog(self._target)

    def read(self) -> Loaded | None:
        """Read the state (or its backup) without the lock and without changing anything
        (`read_state`); None for a fresh job."""
        return read_state(self.path)

    def check_exists(self) -> None:
        """Raise `FileNotFoundError` unless there is a state file (`StateFileError` when
        the path is a directory)."""
        require_state_file(self.path)

    def holder(self) -> LockHolder | None:
        """Who holds the job's lock right now (`lock_holder`); None when nobody does."""
        return lock_holder(lock_path(self.path))

    def lock(self) -> None:
        """Take the job's lock."""
        try:
            self._lock.acquire()
        except OSError as error:
            raise StateWriteError(
                f"cannot create the lock file for {self.path}: {error.strerror}. Check "
                "that the directory exists and that this user may write to it.",
                errno=error.errno,
            ) from error

    def unlock(self) -> None:
        """Release the job's lock."""
        self._lock.release()

    def check_lock(self) -> None:
        """Raise `StateLockedError` when the lock file was deleted or replaced while held:
        a second run may hold a new one. Call it before anything of a save is written."""
        try:
            self._lock.check_held()
        except OSError as error:
            raise StateWriteError(
                f"could not save progress to {self.path}: checking its lock file failed: "
                f"{describe_os_error(error)}. The previous state file is intact.",
                errno=error.errno,
            ) from error

    @property
    def lock_lost(self) -> bool:
        """Whether `check_lock` found the lock file deleted or replaced."""
        return self._lock.lost

    def load(self) -> Loaded | None:
        """Read the state (or its backup); None for a fresh job."""
        loaded = read_state(self.path)
        self._main_is_damaged = loaded is not None and loaded.from_backup
        self._journals.from_backup = self._main_is_damaged
        if loaded is not None:
            with contextlib.suppress(OSError):  # gone since it was read: the umask decides
                self._mode = stat.S_IMODE(os.stat(self._target).st_mode)
        self.progress_log.set_mode(self._mode)
        return loaded

    def start_fresh(self) -> None:
        """This run is a new job: its first save moves any earlier job's files aside."""
        refuse_directory(self.path)  # restart=True skipped the read that refuses it
        self._fresh = True

    def save(self, data: bytes) -> None:
        """Replace the state file with `data`; the old one becomes the backup."""
        try:
            if self._fresh:
                # An earlier job's state file (restart=True) or a backup left after its
                # state file was deleted must not become this job's backup: were this
                # job's file damaged, the fallback would resume the other job.
                self._set_aside_earlier_job()
                durable.replace_atomically(self._target, data, mode=self._mode)
                self._fresh = False
            elif self._main_is_damaged:
                # The damaged file gets its second name just before the new state replaces
                # it, so that at every instant a run finds the damaged file beside the good
                # backup (and resumes from the backup again), or the new state.
                corrupt = os.fspath(aside_path(self.path, "corrupt"))
                # Its log first (the damage may be there): the next append would cut it.
                _move_log(self._target, corrupt)
                durable.replace_atomically(
                    self._target, data, keep_previous_as=corrupt, mode=self._mode
                )
                self._main_is_damaged = False
            else:
                durable.replace_atomically(
                    self._target, data, keep_previous_as=self._backup, mode=self._mode
                )
        except OSError as error:
            raise StateWriteError(
                f"could not save progress to {self.path}: {describe_os_error(error)}. The previous "
                "state file is intact; items finished since it was saved will run again "
                "next time.",
                errno=error.errno,
            ) from error
        try:
            durable.fsync_directory(self._directory)
        except OSError as error:
            raise StateWriteError(
                f"saved progress to {self.path}, but flushing its directory failed: "
                f"{describe_os_error(error)}. The new state is in place; after a power cut the "
                "previous save may come back, and items finished since it would run again.",
                errno=error.errno,
            ) from error

    def _set_aside_earlier_job(self) -> None:
        if not (self.path.exists() or self.backup.exists()):
            return
        aside = aside_path(self.path, "reset")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.backup, backup_path(aside))  # first: see set_aside
        # As in set_aside: the log keeps its name until the state file moved, so that a
        # crash between the two leaves the earlier job whole (a log whose state file is
        # gone is stale by its id: no later state file names it).
        log_linked = _link_log(self._target, os.fspath(aside))
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        if log_linked:
            with contextlib.suppress(OSError):
                os.unlink(log_path(self._target))

    def new_journal(self, kind: Kind) -> JournalReference:
        """A new journal of `kind` beside the state file (`FileJournals`)."""
        return self._journals.new_journal(kind)

    def read_journal(self, kind: Kind, reference: JournalReference) -> JournalRead:
        """The committed entries of the journal file `reference` names."""
        return self._journals.read_journal(kind, reference)

    def write_journal(self, change: JournalChange) -> JournalReference:
        """Write `change` to its journal file, which gets the state file's permission bits
        when a save creates it."""
        return self._journals.write_journal(change, self._mode)

    def remove_retired_journals(self) -> None:
        """Delete the journal generations no state file needs any more; hold the lock."""
        self._journals.remove_retired()

    def close_journals(self) -> None:
        """Close the journals' and the progress log's open files."""
        try:
            self._journals.close()
        finally:
            self.progress_log.close()

    def set_aside(self) -> Path:
        """Move the state file and its backup aside, so that the next run starts over.

        Call it while holding the lock. The state file goes to
        ``<name>.reset-<time>`` and the backup, if any, to that name plus ``.bak``; the
        directory is flushed. Returns where the state file went. Raises
        `FileNotFoundError` when there is no state file, and nothing is changed then.
        """
        require_state_file(self.path)
        aside = aside_path(self.path, "reset")
        # The backup goes first: a crash between the two renames leaves the job as it was
        # (minus a backup, kept aside), never a fresh job beside the old job's backup, which
        # its first unreadable save would fall back to.
        backup_aside = backup_path(aside)
        moved = ""  # what the message must say was moved already
        try:
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.backup, backup_aside)
                moved = (
                    f" Its backup was moved aside already, to {backup_aside.name} beside it: "
                    f"the job is as it was, less that backup (rename it back to "
                    f"{self.backup.name} to keep it)."
                )
            # The log gets its second name first and loses the first only after the state
            # file moved: a crash between leaves the job as it was, log and all.
            log_linked = _link_log(self._target, os.fspath(aside))
            os.replace(self.path, aside)
        except OSError as error:
            raise StateWriteError(
                f"could not move {self.path} aside to {aside.name}: {describe_os_error(error)}."
                f"{moved} Check that this user may write to its directory.",
                errno=error.errno,
            ) from error
        if log_linked:
            with contextlib.suppress(OSError):
                os.unlink(log_path(self._target))
        try:
            durable.fsync_directory(self.path.parent)
        except OSError as error:
            raise StateWriteError(
                f"moved {self.path} aside to {aside.name}, but flushing its directory failed: "
                f"{describe_os_error(error)}. The reset is done; after a power cut the state "
                "file may come back, and the job would resume instead of starting over.",
                errno=error.errno,
            ) from error
        return aside

    def remove_stale_temp_files(self) -> None:
        """Remove temp files an interrupted save left; call it while holding the lock."""
        # Only a run holding the lock writes temp files, so any found now are orphans.
        # os.scandir and a plain prefix test keep this cheap in a directory of many files.
        prefix = f".{self.path.name}."
        with contextlib.suppress(OSError), os.scandir(self.path.parent) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and durable.is_temp_of(
                    self.path, Path(entry.path)
                ):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _move_log(state: str, to: str) -> None:
    """Move the progress log of state file `state` to be the log of `to`, if there is one:
    a state file moved aside keeps the records that extend it."""
    log = log_path(state)
    if os.path.lexists(log):  # a look first: most jobs at rest have no log to move
        with contextlib.suppress(FileNotFoundError):
            os.replace(log, log_path(to))


def _link_log(state: str, to: str) -> bool:
    """Give the progress log of state file `state` the name of `to`'s log as well (a hard
    link), if there is a log; True when the old name is left to delete. Without hard links
    the log is moved instead."""
    log = log_path(state)
    if not os.path.lexists(log):
        return False
    try:
        os.link(log, log_path(to))
    except FileExistsError:
        raise
    except OSError:
        _move_log(state, to)
        return False
    return True
