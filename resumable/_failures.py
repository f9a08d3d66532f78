"""Items that failed: what `iterate(on_error="record")` remembers, and retries next run.

A failure is recorded for the item in flight when an exception (an `Exception`, never
ctrl+c or SIGTERM) leaves a ``with r.attempt():`` block. The records are kept as the keys
of keyed progress are: in a journal beside the state file, ``job.state.failed-<g>``
(`resumable._store.journal_files`, records of the kind `FAILURES`), which each save
appends the changes since the previous save to, before the state file commits them. So a save costs
time in proportion to the failures and successes since the last save, not to every record.

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
from pathlib import Path
from typing import Any

from resumable._errors import StateFileError
from resumable._keys import key_from_tagged, tagged_key
from resumable._store import journal_codec, journal_files
from resumable._store.journal_codec import FAILURES
from resumable._store.journal_files import JournalWriter
from resumable._text import shown

MESSAGE_LIMIT = 500  # characters of an exception's message kept in the state file
ON_ERROR_CHOICES = ("raise", "record")
# A save writes the records into a new generation once the journal holds more than this
# many entries and more than twice as many as there are records: superseded entries then
# make up half of it, and the rewrite, which writes each record once, comes at most once
# per as many appended entries as there are records.
REWRITE_MIN_ENTRIES = 1_000
logger = logging.getLogger("resumable")
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
        self.journal: FailureJournal | None = None  # until the first record is saved
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
        self._rewrite = self.journal is not None

    def copy(self) -> Failures:
        """A copy to work on, with the same journal: only one of the two goes on to save."""
        copied = Failures(keyed=self.keyed)
        copied.items, copied.changed = dict(self.items), dict(self.changed)
        copied.journal, copied._rewrite = self.journal, self._rewrite
        return copied

    @property
    def unsaved(self) -> bool:
        """Whether the next save writes to the journal."""
        return bool(self.changed) or self._rewrite

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
        pending = len(self.items) if self._rewrite else len(self.changed)
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
        failures.journal = FailureJournal.restore(data)
        return failures

    def load(self, state: Path) -> None:
        """Replay the journal's entries; `StateFileError` when it is damaged or short, or
        holds an entry that is no record of this job's kind."""
        journal = self.journal
        if journal is None:
            return
        entries = journal.read(state)
        for number, entry in enumerate(entries, 1):
            try:
                where, record = _replay(entry, self.keyed)
            except ValueError as error:
                raise StateFileError(
                    f"the failure journal {journal.path(state)} holds a bad entry (number "
                    f"{number:,}): {error}. {_RESTORE}"
                ) from None
            if record is None:
                self.items.pop(where, None)
            else:
                self.items[where] = record

    def prepare_save(self, state: Path, mode: int | None = None) -> None:
        """Put the changes since the last save into the journal, flushed to the disk, so
        that the state file can commit them; or all records into a new generation when
        that is due. A journal file this creates gets the permission bits `mode`."""
        journal = self.journal
        if journal is None:
            if not self.items:  # nothing failed, or what failed succeeded before a save
                self.changed.clear()
                return
            journal = self.journal = FailureJournal.start(state)
        if self._rewrite or journal.rewrite_is_due(len(self.changed), len(self.items)):
            journal.rewrite(state, [item.snapshot() for item in self.items.values()], mode)
            self._rewrite = False
        elif self.changed:
            journal.append(state, [self._entry(where) for where in self.changed], mode)
        self.changed.clear()

    def _entry(self, where: str | int) -> dict[str, Any]:
        record = self.items.get(where)
        if record is not None:
            return record.snapshot()
        place = {"key": tagged_key(where)} if self.keyed else {"position": where}
        return {**place, "cleared": True}

    def resumed_from_backup(self) -> None:
        """Read from the backup, as the state file was damaged: the journal files that file
        may name stay, and the first save writes a new generation."""
        if self.journal is not None:
            self.journal.from_backup = True
            self._rewrite = True

    def remove_retired_journals(self, state: Path) -> None:
        """Delete this job's failure journals that no state file names; hold the lock."""
        if self.journal is not None:
            self.journal.remove_retired(state)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def __len__(self) -> int:
        return len(self.items)


class FailureJournal:
    """Which journal file holds the records, how much of it the state file commits, and
    the writer that appends to it."""

    def __init__(
        self,
        generation: int,
        job_id: str,
        length: int = 0,
        first_generation: int | None = None,
    ) -> None:
        self.generation = generation
        self.job_id = job_id  # every generation starts with this job record
        self.length = length  # bytes the state file commits
        # Generations from this one on are this job's own; lower ones may be an earlier
        # job's at the same path (moved aside by reset), and are never deleted.
        self.first_generation = generation if first_generation is None else first_generation
        self.entries = 0  # in the committed bytes
        self.records = 0
        self.from_backup = False
        self._writer: JournalWriter | None = None

    @classmethod
    def start(cls, state: Path) -> FailureJournal:
        """The journal of a job's first failure record: a generation above every file."""
        return cls(journal_files.next_generation(state, kind=FAILURES), journal_codec.new_job_id())

    def snapshot(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "length": self.length,
            "first_generation": self.first_generation,
            "job_id": self.job_id,
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> FailureJournal:
        journal = cls(
            journal_files.generation_field(data, "generation", "failed"),
            journal_codec.check_job_id(data.get("job_id")),
            journal_files.count_field(data, "length", "failed"),
            journal_files.generation_field(data, "first_generation", "failed"),
        )
        journal.entries = journal_files.count_field(data, "entries", "failed")
        journal_files.count_field(data, "items", "failed")
        return journal

    def path(self, state: Path) -> Path:
        return journal_files.journal_path(state, self.generation, kind=FAILURES)

    def read(self, state: Path) -> list[Any]:
        """The entries in the committed bytes, in order."""
        contents = journal_files.read_entries(self.path(state), self.length, self.job_id, FAILURES)
        self.entries, self.records = len(contents.entries), contents.records
        return contents.entries

    def rewrite_is_due(self, changes: int, items: int) -> bool:
        entries = self.entries + changes
        return entries > max(REWRITE_MIN_ENTRIES, 2 * items) or journal_files.fold_is_due(
            self.records + 1, entries
        )

    def append(self, state: Path, entries: list[dict[str, Any]], mode: int | None) -> None:
        writer = self._writer
        if writer is None:
            writer = JournalWriter.open(
                self.path(state), self.length, mode, self.job_id, kind=FAILURES
            )
            self._writer = writer
        try:
            self.length = writer.append_entries(entries)
        except BaseException:
            # A writer refuses appends after a failure; the next save opens the journal
            # again at the committed length, which cuts off what this one left.
            self.close()
            raise
        self.entries += len(entries)
        self.records += 1

    def rewrite(self, state: Path, records: list[dict[str, Any]], mode: int | None) -> None:
        """Write `records` into a new generation (the old one stays while the backup may
        name it: the next run deletes it)."""
        generation = journal_files.next_generation(state, self.generation, kind=FAILURES)
        path = journal_files.journal_path(state, generation, kind=FAILURES)
        length = journal_files.fold_entries(path, records, mode, self.job_id, FAILURES)
        self.close()
        self.generation, self.length = generation, length
        self.entries, self.records = len(records), 1
        if self.from_backup:
            # The files below it may be named by the damaged state file set aside: they
            # are not this job's to delete any more.
            self.from_backup = False
            self.first_generation = generation

    def remove_retired(self, state: Path) -> None:
        """As the key journal's (`KeyProgress.remove_retired_journals`): the current
        generation stays, and the newest below it (the backup may name it); after a resume
        from the backup, every generation from the backup's up stays."""
        generations = journal_files.journal_generations(state, kind=FAILURES)
        keep = {g for g in generations if g < self.first_generation}
        if self.from_backup:
            keep |= {g for g in generations if g >= self.generation}
        else:
            older = [g for g in generations if self.first_generation <= g < self.generation]
            keep |= {self.generation, *([max(older)] if older else [])}
        journal_files.remove_stale_journals(state, keep=keep, kind=FAILURES)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
