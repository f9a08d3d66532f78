"""The journals of a job as the file store keeps them: one generation file each, written
before the state file that commits it.

`Journal` is one journal (the keys, or the failure records): which generation file holds
it, how much of it the state file commits, how many entries and records it holds, and the
writer that appends to it. Both kinds share its generation logic: append, rewrite all
entries into a new generation (a fold), read, and delete the generations no state file
needs any more. Only when a rewrite is due differs by kind (`_rewrite_is_due`).
`FileJournals` holds a job's journals for the file store (`resumable._store.file`), by
kind, behind the `Journals` protocol. The files, their names and what is kept after a
resume from the backup are in `resumable._store.journal_files`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from resumable._store import journal_codec, journal_files
from resumable._store.journal_api import JournalChange, JournalRead, JournalReference
from resumable._store.journal_codec import KEYS, Kind
from resumable._store.journal_files import JournalWriter

# A failure journal is rewritten once it holds more than this many entries and more than
# twice as many as there are records: superseded entries then make up half of it, and the
# rewrite, which writes each record once, comes at most once per as many appended entries
# as there are records.
REWRITE_MIN_ENTRIES = 1_000
logger = logging.getLogger("resumable")


class Journal:
    """One journal file of a job, how much of it the state file commits, and its writer."""

    def __init__(
        self, state: Path, kind: Kind, reference: JournalReference, *, from_backup: bool
    ) -> None:
        self.state = state
        self.kind = kind
        self.generation = reference.generation
        self.length = reference.length  # bytes the state file commits
        self.first_generation = reference.first_generation
        self.job_id = reference.job_id
        self.entries = reference.entries  # in the committed bytes
        self.records = 0  # known once read or written
        # Read from the backup, as the state file was damaged: that file may name this
        # generation past `length`, or any later one (see `resumable._store.journal_files`).
        self.from_backup = from_backup
        self._writer: JournalWriter | None = None

    def reference(self) -> JournalReference:
        """What the state file records of this journal."""
        return JournalReference(
            self.generation, self.length, self.first_generation, self.job_id, self.entries
        )

    @property
    def path(self) -> Path:
        return journal_files.journal_path(self.state, self.generation, self.kind)

    def read(self) -> JournalRead:
        """The entries in the committed bytes: the keys of a key journal, else the entries
        in order."""
        entries: set[Any] | list[Any]
        if self.kind is KEYS:
            keys = journal_files.read_journal(self.path, self.length, self.job_id)
            entries, self.records = keys.keys, keys.records
        else:
            read = journal_files.read_entries(self.path, self.length, self.job_id, self.kind)
            entries, self.records = read.entries, read.records
        self.entries = len(entries)
        return JournalRead(entries, self.reference(), str(self.path))

    def write(self, change: JournalChange, mode: int | None) -> None:
        """Append `change`, or rewrite all entries when it asks or that is due."""
        if change.rewrite or self._rewrite_is_due(len(change.appended), change.count):
            self.rewrite(change.everything(), mode)
        elif change.appended:
            self.append(change.appended, mode)

    def _rewrite_is_due(self, changes: int, count: int) -> bool:
        """Whether a save of `changes` entries should rewrite all `count` entries instead."""
        if self.kind is KEYS:
            return bool(changes) and journal_files.fold_is_due(self.records + 1, count)
        entries = self.entries + changes
        return entries > max(REWRITE_MIN_ENTRIES, 2 * count) or journal_files.fold_is_due(
            self.records + 1, entries
        )

    def append(self, entries: Any, mode: int | None) -> None:
        """Append `entries` as one record (or a few), flushed to the disk."""
        writer = self._writer
        if writer is None:
            writer = JournalWriter.open(self.path, self.length, mode, self.job_id, self.kind)
            self._writer = writer
        try:
            if self.kind is KEYS:
                self.length = writer.append(entries)
            else:
                self.length = writer.append_entries(entries)
        except BaseException:
            # A writer refuses appends after a failure; the next save opens the journal
            # again at the committed length, which cuts off what this one left.
            self.close()
            raise
        self.entries += len(entries)
        self.records += 1

    def rewrite(self, entries: list[Any], mode: int | None) -> None:
        """Write `entries` into a new generation (a fold). The old generation stays until a
        later run opens the job: the backup may name it."""
        generation = journal_files.next_generation(self.state, self.generation, kind=self.kind)
        job_id = self.job_id if self.job_id is not None else journal_codec.new_job_id()
        path = journal_files.journal_path(self.state, generation, self.kind)
        if self.kind is KEYS:
            length = journal_files.fold(path, entries, mode, job_id)
        else:
            length = journal_files.fold_entries(path, entries, mode, job_id, self.kind)
        self.close()
        self.generation, self.length, self.job_id = generation, length, job_id
        self.entries, self.records = len(entries), 1
        if self.from_backup:
            # The files below it may be named by the damaged state file set aside: they
            # are not this job's to delete any more.
            self.from_backup = False
            self.first_generation = generation
            if self.kind is KEYS:
                logger.warning(
                    "%s: resumed from the backup; the key journal goes on in generation %d, "
                    "and the files of the generations below it stay, for the damaged state "
                    "file set aside as %s.corrupt-<time>",
                    self.state,
                    generation,
                    self.state.name,
                )
        elif self.kind is KEYS:
            logger.info("%s: folded the key journal into generation %d", self.state, generation)

    def remove_retired(self) -> None:
        """Delete this job's journal files that no state file needs any more.

        The state file names the current generation and its backup at most the newest one
        below it (folds come hundreds of saves apart), so those two stay. Generations above
        the current one are folds a crash left unfinished, unless the run resumed from the
        backup: then the damaged state file may name them. Earlier jobs' files, below
        `first_generation`, are not this job's to delete. Call it holding the lock.
        """
        generations = journal_files.journal_generations(self.state, self.kind)
        keep = {g for g in generations if g < self.first_generation}
        if self.from_backup:
            # The backup names this generation, the damaged file this one or a later one,
            # and neither needs an older one of this job.
            keep |= {g for g in generations if g >= self.generation}
        else:
            older = [g for g in generations if self.first_generation <= g < self.generation]
            keep |= {self.generation, *([max(older)] if older else [])}
        journal_files.remove_stale_journals(self.state, keep=keep, kind=self.kind)

    def close(self) -> None:
        """Close the writer; safe to call twice. Appends were flushed when they returned."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class FileJournals:
    """The journals of the job at state file `state`, by kind: the file store's `Journals`."""

    def __init__(self, state: Path) -> None:
        self._state = state
        self._journals: dict[Kind, Journal] = {}
        self.from_backup = False  # whether the state the journals were named by is the backup's

    def new_journal(self, kind: Kind) -> JournalReference:
        generation = journal_files.next_generation(self._state, kind=kind)
        reference = JournalReference(generation, 0, generation, journal_codec.new_job_id())
        self._keep(Journal(self._state, kind, reference, from_backup=False))
        return reference

    def read_journal(self, kind: Kind, reference: JournalReference) -> JournalRead:
        return self._journal(kind, reference).read()

    def write_journal(self, change: JournalChange, mode: int | None) -> JournalReference:
        journal = self._journal(change.kind, change.reference)
        journal.write(change, mode)
        return journal.reference()

    def _journal(self, kind: Kind, reference: JournalReference) -> Journal:
        """The journal `reference` names: the one kept, unless the reference is another."""
        journal = self._journals.get(kind)
        if journal is None or journal.reference() != reference:
            journal = Journal(self._state, kind, reference, from_backup=self.from_backup)
            self._keep(journal)
        return journal

    def _keep(self, journal: Journal) -> None:
        earlier = self._journals.get(journal.kind)
        if earlier is not None:
            earlier.close()
        self._journals[journal.kind] = journal

    def remove_retired(self) -> None:
        """Delete the generations of the journals read that no state file needs any more."""
        for journal in self._journals.values():
            journal.remove_retired()

    def close(self) -> None:
        for journal in self._journals.values():
            journal.close()
