"""Items that failed: what `iterate(on_error="record")` remembers, and retries next run.

A failure is recorded for the item in flight when an exception (an `Exception`, never
ctrl+c or SIGTERM) leaves a ``with r.attempt():`` block. The records are kept as the keys
of keyed progress are: in a journal beside the state file, ``job.state.failed-<g>``
(`resumable._store.journal_files`, records of the kind `FAILURES`), which each rewrite of
the state file appends the changes since the previous rewrite to, before the state file
commits them; the saves between carry their changes in the records of the progress log
(`riding`, `resumable._store.progress_log`), and the next rewrite appends those first. So
a save costs time in proportion to the failures and successes since the last save, not
to every record. The job's first failures ride a record too: until a rewrite starts the
journal, the records' progress says ``"failed": {"entries": n, "items": m}``, naming no
journal, and the entries are all in the log.
`Failures` holds the records and a reference to the journal; the store reads and writes
the journal (`resumable._store.journal_api`).

Each journal entry is one JSON object:

    a failure        the item's record: {"position": 3, "error_type": ..., "message": ...,
                     "attempts": 2, "failed_at": ...} ({"key": ...} with keyed progress)
    a success        {"position": 3, "cleared": true}: the item's record goes

Reading replays the entries in order; the last one for an item wins. The state file names
the generation, the committed length, the job id the journal starts with, how many entries
and records it holds there, and how many items are failed (``"failed": {...}`` in the
progress). When superseded entries outnumber the records, or the journal has many small
records, a save writes the records into a new generation instead (a fold). A job saved by
format version 1 kept the records in the state file itself (``"failed": [...]``); its
first save writes them into a journal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from resumable._errors import StateFileError
from resumable._keys import key_from_tagged, tagged_key
from resumable._store.journal_api import (
    JournalChange,
    JournalReference,
    Journals,
    count_field,
    generation_field,
)
from resumable._store.journal_codec import FAILURES, check_job_id
from resumable._text import shown

MESSAGE_LIMIT = 500  # characters of an exception's message kept in the state file
ON_ERROR_CHOICES = ("raise", "record")
logger = logging.getLogger("resumable")
# The fields of "failed" in a record of the progress log that saved a job's first failures,
# before a rewrite of the state file started the journal.
_UNJOURNALED = frozenset(("entries", "items"))
_RESTORE = (
    "Restore the file from a backup, or pass restart=True to start the job over "
    "(every item runs again)."
)


@dataclass(frozen=True)
class FailedItem:
    """One item whose body failed, as `Resumable.failed` and `inspect` report it.

    Attributes:
        key: the item's key (keyed progress), else None.
        position: the item's index in the input (positional progress), else None.
        error_type: the exception's class, e.g. ``"ConnectionError"`` or
            ``"urllib.error.HTTPError"``.
        message: the exception's message (its first 500 characters).
        attempts: how many times the item failed, over all runs.
        failed_at: when it last failed (aware datetime, UTC).
    """

    key: str | int | None
    position: int | None
    error_type: str
    message: str
    attempts: int
    failed_at: datetime

    @property
    def where(self) -> str | int:
        """The key or the position: what identifies the item."""
        where = self.key if self.key is not None else self.position
        assert where is not None  # `restore` and `Failures.record` set one of the two
        return where

    def snapshot(self) -> dict[str, Any]:
        # A key is written as the journal writes it: ints beyond 64 bits and strings with
        # lone surrogates (file names) as tagged objects, which orjson can write.
        where: dict[str, object] = (
            {"key": tagged_key(self.key)} if self.key is not None else {"position": self.position}
        )
        return {
            **where,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "failed_at": self.failed_at.isoformat(),
        }

    @classmethod
    def restore(cls, data: object) -> FailedItem:
        if not isinstance(data, Mapping):
            raise ValueError(f"a failed item must be an object, got {data!r}")
        key, position = data.get("key"), data.get("position")
        if (key is None) == (position is None):
            raise ValueError(f"a failed item has a key or a position, got {dict(data)!r}")
        if key is not None:
            try:
                key = key_from_tagged(key)
            except ValueError as error:
                raise ValueError(f"a failed item's key is {error}") from None
        if position is not None and (type(position) is not int or position < 0):
            raise ValueError(f"a failed item's position must be an int >= 0, got {position!r}")
        error_type, message = data.get("error_type"), data.get("message")
        attempts, failed_at = data.get("attempts"), data.get("failed_at")
        if not isinstance(error_type, str) or not isinstance(message, str):
            raise ValueError(f"a failed item needs error_type and message strings: {data!r}")
        if type(attempts) is not int or attempts < 1:
            raise ValueError(f"a failed item's attempts must be an int >= 1, got {attempts!r}")
        if not isinstance(failed_at, str):
            raise ValueError(f"a failed item's failed_at must be a string, got {failed_at!r}")
        return cls(key, position, error_type, message, attempts, datetime.fromisoformat(failed_at))


def _message_of(error: BaseException) -> str:
    """The exception's message as the state file can hold it, whatever its str() does."""
    try:
        message = str(error)
    except Exception as broken:  # a __str__ that raises must not end the loop
        message = f"<str() of the exception raised {type(broken).__name__}>"
    # Lone surrogates (file names decoded with surrogateescape) are no valid UTF-8, which
    # JSON needs: kept visible as backslash escapes.
    return message[:MESSAGE_LIMIT].encode("utf-8", "backslashreplace").decode("utf-8")


class Failures:
    """The failed items of a job, by key or position, and the journal that keeps them."""

    def __init__(self, items: Iterable[FailedItem] = (), *, keyed: bool = False) -> None:
        self.keyed = keyed
        self.items: dict[str | int, FailedItem] = {item.where: item for item in items}
        # The items recorded or cleared since the last save, in order: what the next save
        # appends. (A dict as an ordered set: replayed, the records come back in order.)
        self.changed: dict[str | int, None] = {}
        # The entries saved in records of the progress log since the state file was last
        # rewritten, in order: the next rewrite appends them to the journal first.
        self.logged: list[dict[str, Any]] = []
        self.journal: JournalReference | None = None  # until the first record is saved
        # Whether the next save writes all records into a new generation: records read
        # from the state file itself (format version 1), or all dropped by a restart.
        self._rewrite = bool(self.items)

    def record(self, where: str | int, error: BaseException) -> FailedItem:
        """Count one more failure of the item at `where`; return its record."""
        earlier = self.items.get(where)
        kind = type(error)
        module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        failed = FailedItem(
            key=where if self.keyed else None,
            position=None if self.keyed else int(where),
            error_type=f"{module}{kind.__qualname__}",
            message=_message_of(error),
            attempts=(earlier.attempts if earlier else 0) + 1,
            failed_at=datetime.now(timezone.utc),
        )
        self.items[where] = failed
        self.changed[where] = None
        return failed

    def succeeded(self, where: str | int) -> None:
        """The item at `where` ran to its end: it is no longer failed."""
        if self.items.pop(where, None) is not None:
            self.changed[where] = None

    def clear(self) -> None:
        """Drop every record, as the job starts over."""
        self.items.clear()
        self.changed.clear()
        self.logged = []
        self._rewrite = self.journal is not None

    def copy(self) -> Failures:
        """A copy to work on, with the same journal: only one of the two goes on to save."""
        copied = Failures(keyed=self.keyed)
        copied.items, copied.changed = dict(self.items), dict(self.changed)
        copied.logged = list(self.logged)
        copied.journal, copied._rewrite = self.journal, self._rewrite
        return copied

    @property
    def unsaved(self) -> bool:
        """Whether the next rewrite of the state file writes to the journal."""
        return bool(self.changed or self.logged) or self._rewrite

    def given_up(self, max_attempts: int) -> list[FailedItem]:
        """The items that failed `max_attempts` times: left recorded, and skipped."""
        return [item for item in self.items.values() if item.attempts >= max_attempts]

    def to_retry(self, max_attempts: int) -> list[FailedItem]:
        """The other failed items: tried again."""
        return [item for item in self.items.values() if item.attempts < max_attempts]

    def snapshot(self) -> dict[str, Any] | None:
        """What the state file records (None: nothing, as no item ever failed).

        Unsaved changes count among the entries, so that a change shows.
        """
        journal = self.journal
        if journal is None and not self.items:
            return None
        pending = len(self.items) if self._rewrite else len(self.logged) + len(self.changed)
        return {
            **(journal.snapshot() if journal is not None else {}),
            "entries": (journal.entries if journal is not None else 0) + pending,
            "items": len(self.items),
        }

    @classmethod
    def restore(cls, data: object, *, keyed: bool) -> Failures:
        """Rebuild from `snapshot` data (None when absent), or from the list of records of
        format version 1; ValueError when malformed. `load` then reads the journal."""
        if data is None:
            return cls(keyed=keyed)
        if isinstance(data, list):
            return cls((_record_of(entry, keyed) for entry in data), keyed=keyed)
        if not isinstance(data, Mapping):
            raise ValueError(
                "failed must be an object naming the failure journal (or, in format version "
                f"1, a list of failed items), got {shown(data)}"
            )
        failures = cls(keyed=keyed)
        if data.keys() == _UNJOURNALED:
            # A record of the progress log saved the job's first failures: no journal yet,
            # its entries are all in the log's records (`load`).
            count_field(data, "entries", "failed")
            count_field(data, "items", "failed")
            return failures
        generation = generation_field(data, "generation", "failed")
        job_id = check_job_id(data.get("job_id"))
        length = count_field(data, "length", "failed")
        first_generation = generation_field(data, "first_generation", "failed")
        entries = count_field(data, "entries", "failed")
        count_field(data, "items", "failed")
        failures.journal = JournalReference(generation, length, first_generation, job_id, entries)
        return failures

    def load(self, journals: Journals, logged: list[Any]) -> None:
        """Replay the journal's entries, then those the progress log holds past them
        (`logged`: all of them before the first rewrite after the job's first failure
        starts the journal); `StateFileError` when the journal is damaged or short, or
        either holds an entry that is no record of this job's kind."""
        if self.journal is not None:
            read = journals.read_journal(FAILURES, self.journal)
            self.journal = read.reference
            self._replay_all(read.entries, f"the failure journal {read.source}")
        self._replay_all(logged, "the progress log")
        self.logged = list(logged)

    def _replay_all(self, entries: Iterable[object], source: str) -> None:
        for number, entry in enumerate(entries, 1):
            try:
                where, record = _replay(entry, self.keyed)
            except ValueError as error:
                raise StateFileError(
                    f"{source} holds a bad failure entry (number {number:,}): {error}. {_RESTORE}"
                ) from None
            if record is None:
                self.items.pop(where, None)
            else:
                self.items[where] = record

    def riding(self) -> list[dict[str, Any]] | None:
        """The entries a record of the progress log carries for this save: one per item
        that failed or succeeded since the last save, the job's first failures too (the
        rewrite that compacts the log starts the journal). None when the save must rewrite
        the state file instead: a rewrite of all records is due."""
        if self._rewrite:
            return None
        if self.journal is None and not self.items and not self.logged:
            self.changed.clear()  # what failed succeeded before a save: nothing to keep
            return []
        return [self._entry(where) for where in self.changed]

    def rode(self) -> None:
        """The record of `riding` is on the disk: its entries wait there for a rewrite."""
        if self.changed:
            self.logged += [self._entry(where) for where in self.changed]
            self.changed.clear()

    def save(self, journals: Journals) -> None:
        """Put the changes since the last rewrite of the state file (those that rode the
        progress log, then the new ones) into the journal, flushed to the disk, so that the
        state file can commit them; or all records into a new generation when that is
        due."""
        journal = self.journal
        if journal is None:
            if not self.items:  # nothing failed, or what failed succeeded: nothing to keep
                self.changed.clear()
                self.logged = []
                return
            journal = self.journal = journals.new_journal(FAILURES)
        change = JournalChange(
            kind=FAILURES,
            reference=journal,
            appended=self.logged + [self._entry(where) for where in self.changed],
            everything=lambda: [item.snapshot() for item in self.items.values()],
            count=len(self.items),
            rewrite=self._rewrite,
        )
        self.journal = journals.write_journal(change)
        self._rewrite = False
        self.logged = []
        self.changed.clear()

    def _entry(self, where: str | int) -> dict[str, Any]:
        record = self.items.get(where)
        if record is not None:
            return record.snapshot()
        place = {"key": tagged_key(where)} if self.keyed else {"position": where}
        return {**place, "cleared": True}

    def resumed_from_backup(self) -> None:
        """Read from the backup, as the state file was damaged: the first save writes a
        new generation (the store keeps the files the damaged one may name)."""
        if self.journal is not None:
            self._rewrite = True

    def __len__(self) -> int:
        return len(self.items)


def _replay(entry: object, keyed: bool) -> tuple[str | int, FailedItem | None]:
    """The item an entry is about, and its record (None: the entry clears it)."""
    if isinstance(entry, Mapping) and entry.get("cleared") is True:
        where = _where(entry, keyed)
        if set(entry) != {"key" if keyed else "position", "cleared"}:
            raise ValueError(f"a cleared item has its key or position only, got {shown(entry)}")
        return where, None
    record = _record_of(entry, keyed)
    return record.where, record


def _record_of(entry: object, keyed: bool) -> FailedItem:
    """The failed item `entry` holds, checked to be of the job's kind of progress."""
    record = FailedItem.restore(entry)
    if (record.key is not None) != keyed:
        raise ValueError(
            f"a failed item of {'keyed' if keyed else 'positional'} progress needs a "
            f"{'key' if keyed else 'position'}, got {shown(entry)}"
        )
    return record


def _where(entry: Mapping[str, Any], keyed: bool) -> str | int:
    if keyed:
        return key_from_tagged(entry.get("key"))
    position = entry.get("position")
    if type(position) is not int or position < 0:
        raise ValueError(f"a position must be an int >= 0, got {shown(position)}")
    return position
