"""What is done, by key: for inputs that change between runs.

`KeyProgress` remembers the key of every finished item (``key(item)``, a str or an int) and
skips items whose key is done, wherever they now are in the input. The keys live in the
key journal (`resumable._store.journal_files`): each save appends the keys finished since
the previous one, so a save costs time in proportion to those, not to every key ever done.
The state file records the journal's generation and the length that save commits to; `fold`
rewrites a journal of many small records as a compact new generation now and then.

A save writes a new generation instead of appending in two more cases: when the run
resumed from the backup (the damaged state file may name the backup's generation past
its length, or a later one: see `resumable._store.journal_files` for what is kept), and
when the job was saved by format version 1 and has no job id yet (the new generation
starts with the job record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from resumable._failures import Failures
from resumable._keys import Key
from resumable._store import journal_codec, journal_files
from resumable._store.journal_files import JournalWriter

logger = logging.getLogger("resumable")


class KeyProgress:
    """The keys of the finished items, and which part of them the state file commits."""

    kind: ClassVar[str] = "keys"

    def __init__(
        self,
        generation: int = 0,
        length: int = 0,
        finished: bool = False,
        done: int = 0,
        first_generation: int | None = None,
        job_id: str | None = None,
    ) -> None:
        self.generation = generation
        # Generations from this one on are this job's own; lower ones may belong to an
        # earlier job at the same path (moved aside by reset), or be named by a damaged
        # state file set aside (see `resumed_from_backup`), and are never deleted.
        self.first_generation = generation if first_generation is None else first_generation
        self.job_id = job_id  # None: saved by format version 1, not tied to its journal
        self._from_backup = False
        self.length = length  # bytes of the journal the state file commits
        self.finished = finished
        self.done: set[Key] = set()
        self.recorded_done = done  # keys the state file says are done (checked on load)
        self.unsaved: list[Key] = []  # finished since the last save, in order
        self._records = 0
        self._writer: JournalWriter | None = None
        self.failures = Failures(keyed=True)

    @classmethod
    def start(cls, state: Path) -> KeyProgress:
        """The progress of a new keyed job at `state`: a new job id, and a generation above
        every journal file there (an earlier job's files stay as they are)."""
        return cls(
            generation=journal_files.next_generation(state), job_id=journal_codec.new_job_id()
        )

    @property
    def position(self) -> int:
        """How many items are done (keys, counting earlier runs)."""
        return len(self.done)

    def snapshot(self) -> dict[str, Any]:
        """The progress as plain data; counts the unsaved keys, so a change shows."""
        return {
            "kind": self.kind,
            "journal": {
                "generation": self.generation,
                "length": self.length,
                "first_generation": self.first_generation,
                **({"job_id": self.job_id} if self.job_id is not None else {}),
            },
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
        progress = cls(
            generation=journal_files.generation_field(journal, "generation", "keyed progress"),
            length=journal_files.count_field(journal, "length", "keyed progress"),
            finished=finished,
            done=journal_files.count_field(data, "done", "keyed progress"),
            first_generation=journal_files.generation_field(
                journal, "first_generation", "keyed progress"
            ),
            job_id=None if job_id is None else journal_codec.check_job_id(job_id),
        )
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

    def load(self, state: Path) -> None:
        """Read the committed keys and the failure records; `StateFileError` when a journal
        is damaged or short."""
        self._load_keys(state)
        self.failures.load(state)

    def _load_keys(self, state: Path) -> None:
        path = journal_files.journal_path(state, self.generation)
        contents = journal_files.read_journal(path, self.length, self.job_id)
        self.done = contents.keys
        self._records = contents.records
        if len(self.done) != self.recorded_done:
            logger.warning(
                "%s: the state file counts %d done keys, its journal holds %d; going by the "
                "journal",
                state,
                self.recorded_done,
                len(self.done),
            )

    def resumed_from_backup(self) -> None:
        """This progress was read from the backup, as the state file was damaged.

        That file may name this generation past `length`, or any later one: none of them
        is deleted or cut, and the first save writes the keys into a new generation, which
        becomes the job's first (so the files below it are never deleted either).
        """
        self._from_backup = True
        self.failures.resumed_from_backup()

    def remove_retired_journals(self, state: Path) -> None:
        """Delete this job's journal files that no state file needs any more.

        The state file names the current generation and its backup at most the newest one
        below it (folds come hundreds of saves apart), so those two stay. Generations above
        the current one are folds a crash left unfinished, unless the run resumed from the
        backup: then the damaged state file may name them. Earlier jobs' files, below
        `first_generation`, are not this job's to delete. Call it holding the lock.
        """
        generations = journal_files.journal_generations(state)
        keep = {g for g in generations if g < self.first_generation}
        if self._from_backup:
            # The backup names this generation, the damaged file this one or a later one,
            # and neither needs an older one of this job.
            keep |= {g for g in generations if g >= self.generation}
        else:
            older = [g for g in generations if self.first_generation <= g < self.generation]
            keep |= {self.generation, *([max(older)] if older else [])}
        journal_files.remove_stale_journals(state, keep=keep)
        self.failures.remove_retired_journals(state)

    @property
    def journal_pending(self) -> bool:
        """Whether the next save writes to a journal: always, as the keys live there."""
        return True

    def prepare_save(self, state: Path, mode: int | None = None) -> None:
        """Write what the next save commits to the journals (the keys first), flushed to
        the disk."""
        self._save_keys(state, mode)
        self.failures.prepare_save(state, mode)

    def _save_keys(self, state: Path, mode: int | None) -> None:
        """Put the keys finished since the last save into the journal, flushed to disk.

        Then the state file can commit them. When the journal has become many small
        records, the keys go into a compact new generation instead. A journal file this
        creates gets the permission bits `mode` (the state file's), when given.

        After a resume from the backup, and for a job without a job id (format version
        1), the first save writes a new generation whatever the keys: see the module's
        docstring.
        """
        if self._from_backup or self.job_id is None:
            self._fold(state, mode)
            return
        if not self.unsaved:
            return
        if journal_files.fold_is_due(self._records + 1, len(self.done)):
            self._fold(state, mode)
            return
        writer = self._writer
        if writer is None:
            path = journal_files.journal_path(state, self.generation)
            writer = JournalWriter.open(path, self.length, mode, self.job_id)
            self._writer = writer
        try:
            self.length = writer.append(self.unsaved)
        except BaseException:
            # A writer refuses appends after a failure; the next save opens the journal
            # again at the committed length, which cuts off what this one left.
            self._close_keys()
            raise
        self._records += 1
        self.unsaved.clear()  # in place: the loop holds this list's append

    def _fold(self, state: Path, mode: int | None) -> None:
        generation = journal_files.next_generation(state, self.generation)
        job_id = self.job_id if self.job_id is not None else journal_codec.new_job_id()
        path = journal_files.journal_path(state, generation)
        length = journal_files.fold(path, list(self.done), mode, job_id)
        self._close_keys()
        # The old generation stays until a later run opens the job: the backup may name it.
        self.generation, self.length, self.job_id = generation, length, job_id
        self.unsaved.clear()
        self._records = 1
        if self._from_backup:
            self._from_backup = False
            self.first_generation = generation
            logger.warning(
                "%s: resumed from the backup; the key journal goes on in generation %d, and "
                "the files of the generations below it stay, for the damaged state file "
                "set aside as %s.corrupt-<time>",
                state,
                generation,
                state.name,
            )
        else:
            logger.info("%s: folded the key journal into generation %d", state, generation)

    def close(self) -> None:
        """Close the journals' open files."""
        self._close_keys()
        self.failures.close()

    def _close_keys(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def check_key_function(key: object) -> Callable[[Any], Key]:
    """`key` if it is callable, else a TypeError that says what `key=` takes."""
    if not callable(key):
        raise TypeError(
            "iterate(key=...) takes a function of an item that returns its key, a str or an "
            f"int (for example key=str, or key=lambda row: row['id']); got {type(key).__name__}"
        )
    return key
