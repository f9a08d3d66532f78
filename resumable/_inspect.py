"""A read-only look at a state file, for scripts, dashboards and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from resumable._errors import StateFileError
from resumable._failures import FailedItem
from resumable._progress import restore
from resumable._store import open_store
from resumable._store.url import JobName, local_anchor


@dataclass(frozen=True)
class StateSnapshot:
    """What a state file says, as `inspect` found it.

    Attributes:
        path: the state file (symlinks followed), or the URL of the state object.
        position: items done.
        finished: whether the job ran to the end of its input.
        state: the user state saved with the progress.
        runs: how many runs the job has had.
        created_at: when the job first started (aware datetime, UTC).
        saved_at: when the file was last written (aware datetime, UTC).
        format_version: the state file format version.
        from_backup: True when the state file was unreadable and this is its backup.
        progress_kind: ``"position"`` (the first `position` items are done), ``"keys"``
            (`position` items are done by key, whatever their place in the input) or
            ``"watermark"`` (`r.map`: `position` items are done, finished out of order).
        failed: the items recorded as failed (``iterate(..., on_error="record")``).
        input_length: the length of the job's input, when it has one and the state file
            records it (position progress over a sequence); None otherwise.
        sinks: the job's output files (`Resumable.sink`): each path (absolute, as the
            state file's folder makes it) with its recorded length in bytes, which the
            next run cuts the file back to.
    """

    path: JobName
    position: int
    finished: bool
    state: dict[str, Any]
    runs: int
    created_at: datetime
    saved_at: datetime
    format_version: int
    from_backup: bool
    progress_kind: str = "position"
    failed: tuple[FailedItem, ...] = ()
    input_length: int | None = None
    sinks: dict[str, int] = field(default_factory=dict)


def inspect(path: str | os.PathLike[str]) -> StateSnapshot:
    """Read the state file at `path` (or the state object at a store URL) without taking
    its lock or changing anything.

    Raises `FileNotFoundError` when there is no state file, and `StateFileError` when
    neither it nor its backup can be read. When only the backup is readable, a
    `ResumableWarning` says so and the snapshot has ``from_backup=True``. A symlink is
    followed as `Resumable` follows it: `path` of the snapshot is the file it points to.
    """
    store = open_store(path)
    location = store.path
    loaded = store.read()
    if loaded is None:
        raise FileNotFoundError(f"no state file at {location}")
    document = loaded.document
    try:
        progress = restore(document.progress)
        # The failure records, read through the store (and those its progress log holds);
        # the keys are not: the count the state file (or the log's last record) records is
        # what a quick look shows, not a journal of millions of keys read to count them.
        progress.failures.load(store, document.logged.failed)
        created_at = datetime.fromisoformat(document.created_at)
        saved_at = datetime.fromisoformat(document.saved_at)
    except ValueError as error:
        raise StateFileError(f"{location} holds data this version cannot use: {error}") from None
    return StateSnapshot(
        path=location,
        position=progress.recorded_position,
        finished=progress.finished,
        state=document.state,
        runs=document.runs,
        created_at=created_at,
        saved_at=saved_at,
        format_version=document.format_version,
        from_backup=loaded.from_backup,
        progress_kind=progress.kind,
        failed=tuple(progress.failures.items.values()),
        input_length=progress.input_length,
        sinks={
            os.path.normpath(local_anchor(location).parent / path): record["length"]
            for path, record in document.sinks.items()
        },
    )
