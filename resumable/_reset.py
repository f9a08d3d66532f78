"""Start a job over, keeping its old state: `reset`."""

from __future__ import annotations

import os

from resumable._store import open_store
from resumable._store.url import JobName


def reset(path: str | os.PathLike[str]) -> JobName:
    """Start the job of state file `path` over, keeping its old state under another name.

    Under the job's lock, the state file moves to ``<path>.reset-<YYYYmmddTHHMMSS>`` (local
    time; ``-2``, ``-3``... when that name is taken) and its backup, if any, to the same
    name plus ``.bak``; then the directory is flushed. No save ever writes those names. The
    next `Resumable` on `path` starts a fresh job. Returns where the state file went. For
    the URL of a state object (see docs/object-storage.md) the objects are copied aside and
    deleted under the job's lease, and the URL where it went is returned.

    Raises `FileNotFoundError` when there is no state file (nothing is changed),
    `StateLockedError` when a run holds the job, `StateFileError` when `path` is a
    directory and `StateWriteError` when a file cannot be moved or the lock file created.
    """
    store = open_store(path)  # through a link, the job's own files and lock
    store.check_exists()  # before the lock: it would create a lock file
    store.lock()
    try:
        return store.set_aside()
    finally:
        store.unlock()
