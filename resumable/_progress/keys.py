"""What is done, by key: for inputs that change between runs.

`KeyProgress` remembers the key of every finished item (``key(item)``, a str or an int) and
skips items whose key is done, wherever they now are in the input. The keys live in the
key journal (`resumable._store.journal_files`): each rewrite of the state file appends
the keys finished since the previous one, so a save costs time in proportion to those,
not to every key ever done. The saves between two rewrites carry their keys in the
records of the progress log (`riding`, `resumable._store.progress_log`): one flush each;
the keys that rode it (`logged`) go into the journal at the next rewrite. The state file
records the journal's generation and the length that rewrite commits to; a fold rewrites
a journal of many small records as a compact new generation now and then.
The store reads and writes the journal (`resumable._store.journal_api`); the progress
holds the keys and a reference to it.

A save writes a new generation instead of appending in two more cases: when the run
resumed from the backup (the damaged state file may name the backup's generation past
its length, or a later one: see `resumable._store.journal_files` for what is kept), and
when the job was saved by format version 1 and has no job id yet (the new generation
starts with the job record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from resumable._failures import Failures
from resumable._keys import Key, check_keys
from resumable._store import journal_codec
from resumable._store.journal_api import (
    JournalChange,
    JournalReference,
    Journals,
    LoggedEntries,
    count_field,
    generation_field,
)
from resumable._store.journal_codec import KEYS

logger = logging.getLogger("resumable")


class KeyProgress:
    """The keys of the finished items, and the journal that the state file commits them in."""

    kind: ClassVar[str] = "keys"

    def __init__(self, journal: JournalReference, finished: bool = False, done: int = 0) -> None:
        self.journal = journal  # the key journal's generation and committed length
        self._from_backup = False
        self.finished = finished
        self.done: set[Key] = set()
        self.recorded_done = done  # keys the state file says are done (checked on load)
        self.unsaved: list[Key] = []  # finished since the last save, in order
        # Saved in records of the progress log since the state file was last rewritten: the
        # next rewrite puts them into the journal first.
        self.logged: list[Key] = []
        self.failures = Failures(keyed=True)

    @classmethod
    def start(cls, journals: Journals) -> KeyProgress:
        """The progress of a new keyed job: a new key journal, above every one there (an
        earlier job's files stay as they are)."""
        return cls(journals.new_journal(KEYS))

    @property
    def position(self) -> int:
        """How many items are done (keys, counting earlier runs)."""
        return len(self.done)

    def snapshot(self) -> dict[str, Any]:
        """The progress as plain data; counts the unsaved keys, so a change shows."""
        return {
            "kind": self.kind,
            "journal": self.journal.snapshot(),
            "done": len(self.done),
            "finished": self.finished,
            **({"failed": failed} if (failed := self.failures.snapshot()) is not None else {}),
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> KeyProgress:
        """Rebuild from `snapshot` data; ValueError says what is malformed."""
        journal = data.get("journal")
        if not isinstance(journal, Mapping):
            raise ValueError(f"keyed progress needs a journal object, got {journal!r}")
        finished = data.get("finished")
        if not isinstance(finished, bool):
            raise ValueError(f"progress finished must be true or false, got {finished!r}")
        job_id = journal.get("job_id")
        generation = generation_field(journal, "generation", "keyed progress")
        length = count_field(journal, "length", "keyed progress")
        done = count_field(data, "done", "keyed progress")
        first_generation = generation_field(journal, "first_generation", "keyed progress")
        reference = JournalReference(
            generation,
            length,
            first_generation,
            None if job_id is None else journal_codec.check_job_id(job_id),
        )
        progress = cls(reference, finished=finished, done=done)
        progress.failures = Failures.restore(data.get("failed"), keyed=True)
        return progress

    @property
    def recorded_position(self) -> int:
        """Items done as the state file records them (what `inspect` shows, without reading
        a journal of millions of keys to count them again)."""
        return self.recorded_done

    @property
    def input_length(self) -> None:
        """Keyed progress records no input length: its input may change between runs."""
        return None

    def load(self, journals: Journals, describe: str, logged: LoggedEntries) -> None:
        """Read the committed keys and the failure records, and add what the progress log
        holds past them (`logged`); `StateFileError` when a journal is damaged or short."""
        read = journals.read_journal(KEYS, self.journal)
        assert isinstance(read.entries, set)  # a key journal reads as a set of keys
        self.done, self.journal = read.entries, read.reference
        self.logged = list(logged.keys)
        self.done.update(self.logged)
        if len(self.done) != self.recorded_done:
            logger.warning(
                "%s: the state file counts %d done keys, its journal holds %d; going by the "
                "journal",
                describe,
                self.recorded_done,
                len(self.done),
            )
        self.failures.load(journals, logged.failed)

    def resumed_from_backup(self) -> None:
        """This progress was read from the backup, as the state file was damaged.

        That file may name this generation past its length, or any later one: the store
        deletes or cuts none of them, and the first save writes the keys into a new
        generation, which becomes the job's first (so the files below it are never
        deleted either).
        """
        self._from_backup = True
        self.failures.resumed_from_backup()

    @property
    def journal_pending(self) -> bool:
        """Whether the next save writes to a journal: always, as the keys live there."""
        return True

    def riding(self) -> dict[str, list[Any]] | None:
        """What a record of the progress log carries for this save: the keys finished
        since the last save, and the failure entries; None when the save must rewrite the
        state file instead (a new generation is due: see the module's docstring).
        `UsageError` for a key that is not a str or an int, before anything is written."""
        if self._from_backup or self.journal.job_id is None:
            return None
        failed = self.failures.riding()
        if failed is None:
            return None
        check_keys(self.unsaved)
        riding: dict[str, list[Any]] = {"keys": self.unsaved} if self.unsaved else {}
        if failed:
            riding["failed"] = failed
        return riding

    def rode(self) -> None:
        """The record of `riding` is on the disk: its keys wait there for the next rewrite."""
        self.logged += self.unsaved
        self.unsaved.clear()  # in place: the loop holds this list's append
        self.failures.rode()

    def save(self, journals: Journals) -> None:
        """Write what the next save commits to the journals (the keys first), flushed to
        the disk: what rode the log since the last rewrite, and what is new."""
        self._save_keys(journals)
        self.failures.save(journals)

    def _save_keys(self, journals: Journals) -> None:
        """Put the keys finished since the last save into the journal, flushed to disk.

        Then the state file can commit them. When the journal has become many small
        records, the store writes the keys into a compact new generation instead.

        After a resume from the backup, and for a job without a job id (format version
        1), the first save writes a new generation whatever the keys: see the module's
        docstring.
        """
        rewrite = self._from_backup or self.journal.job_id is None
        if not (rewrite or self.unsaved or self.logged):
            return
        change = JournalChange(
            kind=KEYS,
            reference=self.journal,
            appended=self.logged + self.unsaved,
            everything=lambda: list(self.done),
            count=len(self.done),
            rewrite=rewrite,
        )
        self.journal = journals.write_journal(change)
        self._from_backup = False
        self.logged = []
        self.unsaved.clear()  # in place: the loop holds this list's append


def check_key_function(key: object) -> Callable[[Any], Key]:
    """`key` if it is callable, else a TypeError that says what `key=` takes."""
    if not callable(key):
        raise TypeError(
            "iterate(key=...) takes a function of an item that returns its key, a str or an "
            f"int (for example key=str, or key=lambda row: row['id']); got {type(key).__name__}"
        )
    return key
