"""Where a job's progress is kept: the `Store` protocol, and `open_store`, which picks one.

A store keeps a job's state document and its previous generation (the backup), holds the
job's lock while a run has the job open, tells who holds it, and sets the job aside when
it is reset. `Resumable`, `inspect`, `reset` and the command line reach the job's files
through a store, never by their names.

| module | what it answers |
| --- | --- |
| `document` | the state file's format: encode, decode, `check_state`, `fingerprint` |
| `file` | the local file store: state file, backup, lock file, temp files, set aside |
| `durable` | an atomic, durable replace of a file (temp file, fsync, rename) |
| `flock` | one run per job: the OS lock on the lock file, and who holds it |
| `journal_api` | what progress and store say about a journal: reference, change, read |
| `journal` | a job's journals as the file store keeps them: generations, writers |
| `journal_codec` | the record format of the key and failure journals, over bytes |
| `journal_files` | the journal files: names, generations, read, append, fold |
| `object` | a job on object storage (a store URL): state object, backup, fenced saves |
| `object_backend` | a URL's objects (obstore, imported only then) and the conditional puts |
| `object_journal` | keyed progress and failure records on object storage: chunk objects |
| `lease` | one run per job on object storage: a lease object, conditional puts |
| `url` | a job named by a store URL: `is_url`, `JobURL` (a URL kept as given) |

A progress that keeps a journal (the done keys, the failure records) holds only a
reference to it: the store reads it, and at a save writes what changed, before the state
document that commits it.
"""

from __future__ import annotations

import os
from typing import Protocol

from resumable._store.document import Loaded
from resumable._store.file import FileStore, resolve
from resumable._store.flock import LockHolder
from resumable._store.journal_api import Journals
from resumable._store.url import JobName, JobURL, is_url


class Store(Journals, Protocol):
    """Where one job is kept: its state document, the backup, its journals, and the
    job's lock."""

    @property
    def path(self) -> JobName:
        """The job's state file, symlinks followed, or its URL: what messages name."""

    @property
    def backup(self) -> JobName:
        """Where the previous save is kept, which a run resumes from when needed."""

    @property
    def lock_lost(self) -> bool:
        """Whether `check_lock` found the lock taken away while it was held."""

    def read(self) -> Loaded | None:
        """The saved state (or the backup's) without the lock; None for a fresh job."""

    def check_exists(self) -> None:
        """Raise `FileNotFoundError` unless the job has saved state."""

    def holder(self) -> LockHolder | None:
        """Who holds the job's lock right now; None when nobody does."""

    def lock(self) -> None:
        """Take the job's lock, or raise `StateLockedError` naming its holder."""

    def unlock(self) -> None:
        """Release the job's lock."""

    def check_lock(self) -> None:
        """Raise `StateLockedError` unless the lock is still held: call it before a save."""

    def remove_stale_temp_files(self) -> None:
        """Remove what an interrupted save left; call it while holding the lock."""

    def load(self) -> Loaded | None:
        """Read the saved state for a run holding the lock; None for a fresh job."""

    def start_fresh(self) -> None:
        """This run is a new job: its first save sets any earlier job's state aside."""

    def save(self, data: bytes) -> None:
        """Replace the saved state with `data`, atomically; the old one becomes the backup."""

    def set_aside(self) -> JobName:
        """Move the saved state and its backup aside, under the lock; return where it went."""

    def remove_retired_journals(self) -> None:
        """Delete what no saved state names any more of the journals `read_journal` read;
        call it while holding the lock."""

    def close_journals(self) -> None:
        """Close the journals' open files; safe to call twice."""


def open_store(path: str | os.PathLike[str]) -> Store:
    """The store of the job at `path`: `ObjectStore` for a URL with a scheme
    (``s3://bucket/crawl/job.state``, ``memory://...``, ``file://...``), else the local
    files of `FileStore`, symlinks followed (`resolve`). obstore is imported for a URL
    only."""
    if is_url(path):
        from resumable._store.object import ObjectStore

        return ObjectStore(JobURL(os.fspath(path)))
    return FileStore(resolve(path))
