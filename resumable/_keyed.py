"""What is done, by key: for inputs that change between runs.

`KeyProgress` remembers the key of every finished item (``key(item)``, a str or an int) and
skips items whose key is done, wherever they now are in the input. The keys live in the
key journal (`resumable._journal`): each save appends the keys finished since the previous
one, so a save costs time in proportion to those, not to every key ever done. The state
file records the journal's generation and the length that save commits to; `fold`
rewrites a journal of many small records as a compact new generation now and then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resumable import _journal
from resumable._failures import Failures
from resumable._journal import JournalWriter, Key

logger = logging.getLogger("resumable")


class KeyProgress:
    """The keys of the finished items, and which part of them the state file commits."""

    kind = "keys"

    def __init__(
        self,
        generation: int = 0,
        length: int = 0,
        finished: bool = False,
        done: int = 0,
        first_generation: int | None = None,
    ) -> None:
        self.generation = generation
        # Generations from this one on are this job's own; lower ones may belong to an
        # earlier job at the same path (moved aside by reset) and are never deleted.
        self.first_generation = generation if first_generation is None else first_generation
        self.length = length  # bytes of the journal the state file commits
        self.finished = finished
        self.done: set[Key] = set()
        self.recorded_done = done  # keys the state file says are done (checked on load)
        self.unsaved: list[Key] = []  # finished since the last save, in order
        self._records = 0
        self._writer: JournalWriter | None = None
        self.failures = Failures()

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
            },
            "done": len(self.done),
            "finished": self.finished,
            **({"failed": self.failures.snapshot()} if self.failures else {}),
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
        progress = cls(
            generation=_count(journal, "generation"),
            length=_count(journal, "length"),
            finished=finished,
            done=_count(data, "done"),
            first_generation=_count(journal, "first_generation"),
        )
        progress.failures = Failures.restore(data.get("failed"))
        return progress

    def load(self, state: Path) -> None:
        """Read the committed keys; `StateFileError` when the journal is damaged or short."""
        contents = _journal.read_journal(_journal.journal_path(state, self.generation), self.length)
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

    def remove_retired_journals(self, state: Path) -> None:
        """Delete this job's journal files that no state file needs any more.

        The state file names the current generation and its backup at most the newest one
        below it (folds come hundreds of saves apart), so those two stay. Generations above
        the current one are folds a crash left unfinished. Earlier jobs' files, below
        `first_generation`, are not this job's to delete. Call it holding the lock.
        """
        generations = _journal.journal_generations(state)
        older = [g for g in generations if self.first_generation <= g < self.generation]
        keep = {g for g in generations if g < self.first_generation}
        keep |= {self.generation, *([max(older)] if older else [])}
        _journal.remove_stale_journals(state, keep=keep)

    def prepare_save(self, state: Path, mode: int | None = None) -> None:
        """Put the keys finished since the last save into the journal, flushed to disk.

        Then the state file can commit them. When the journal has become many small
        records, the keys go into a compact new generation instead. A journal file this
        creates gets the permission bits `mode` (the state file's), when given.
        """
        if not self.unsaved:
            return
        if _journal.fold_is_due(self._records + 1, len(self.done)):
            self._fold(state, mode)
            return
        writer = self._writer
        if writer is None:
            path = _journal.journal_path(state, self.generation)
            writer = JournalWriter.open(path, self.length, mode)
            self._writer = writer
        try:
            self.length = writer.append(self.unsaved)
        except BaseException:
            # A writer refuses appends after a failure; the next save opens the journal
            # again at the committed length, which cuts off what this one left.
            self.close()
            raise
        self._records += 1
        self.unsaved.clear()  # in place: the loop holds this list's append

    def _fold(self, state: Path, mode: int | None) -> None:
        generation = _journal.next_generation(state, self.generation)
        length = _journal.fold(_journal.journal_path(state, generation), list(self.done), mode)
        self.close()
        # The old generation stays until a later run opens the job: the backup may name it.
        self.generation, self.length = generation, length
        self.unsaved.clear()
        self._records = 1
        logger.info("%s: folded the key journal into generation %d", state, generation)

    def close(self) -> None:
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


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if type(value) is not int or value < 0:
        raise ValueError(f"keyed progress {name} must be a whole number >= 0, got {value!r}")
    return value
