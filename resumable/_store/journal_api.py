"""What a progress and its store say to each other about a journal: plain data, no I/O.

A progress that keeps entries in a journal (the done keys, the failure records) holds a
`JournalReference`: which generation holds the journal, how many of its bytes the state
file commits, the job id the journal starts with. It never opens a file; it asks the
store (`Journals`, a part of `resumable._store.Store`) to start a journal, to read the
one a reference names (`JournalRead`), and at a save to write what changed
(`JournalChange`), and takes back the updated reference, which its snapshot records.

Between two rewrites of the state file, what changed rides the progress log instead
(`Progress.riding`): a reader hands the progress the entries of the log's records
(`LoggedEntries`) beside the journals, and the next rewrite writes them to the journals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from resumable._keys import Key
from resumable._store.journal_codec import Kind
from resumable._text import shown

# The largest generation: a fold or a new job adds one, so no job comes near it, and
# every number a state file holds stays far inside the 64 bits it can write.
MAX_GENERATION = 2**32 - 1


@dataclass(frozen=True)
class JournalReference:
    """What the state file records of one journal."""

    generation: int
    length: int  # bytes of the journal the state file commits
    # Generations from this one on are this job's own; lower ones may belong to an
    # earlier job at the same path (moved aside by reset), or be named by a damaged
    # state file set aside, and are never deleted.
    first_generation: int
    job_id: str | None  # None: saved by format version 1, not tied to its journal
    entries: int = 0  # entries in the committed bytes (the failure journal records them)

    def snapshot(self) -> dict[str, Any]:
        """The reference as the state file records it (the entries aside)."""
        return {
            "generation": self.generation,
            "length": self.length,
            "first_generation": self.first_generation,
            **({"job_id": self.job_id} if self.job_id is not None else {}),
        }


@dataclass(frozen=True)
class JournalRead:
    """The entries in the committed part of a journal, and its reference as read."""

    entries: set[Key] | list[Any]  # the keys of a key journal; else the entries, in order
    reference: JournalReference  # with the entries counted
    source: str  # the journal file, as messages name it


@dataclass(frozen=True)
class LoggedEntries:
    """What the records of the progress log hold past the journals' committed lengths
    (`resumable._store.progress_log`): the keys done and the failure entries saved since
    the state file was last rewritten, in order. A compaction writes them to the journals."""

    keys: list[Key] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)


NOTHING_LOGGED = LoggedEntries()


@dataclass(frozen=True)
class JournalChange:
    """What a save writes to one journal: the entries since the last save, or all of them.

    The store appends `appended`, or writes `everything()` into a new generation when
    `rewrite` asks for it or the journal's records make it due; `count` is how many
    entries `everything()` gives, for that rule.
    """

    kind: Kind
    reference: JournalReference
    appended: Sequence[Any]
    everything: Callable[[], list[Any]]
    count: int
    rewrite: bool


class Journals(Protocol):
    """The part of a store that keeps journals; every method works under the job's lock."""

    def new_journal(self, kind: Kind) -> JournalReference:
        """A new journal of `kind`: a new job id, and a generation above every file there
        (an earlier job's files stay as they are); nothing is written yet."""

    def read_journal(self, kind: Kind, reference: JournalReference) -> JournalRead:
        """The committed entries of the journal `reference` names; `StateFileError` when
        it is damaged, short, or another job's."""

    def write_journal(self, change: JournalChange) -> JournalReference:
        """Write `change`, flushed to the disk, so that a state file can commit it; return
        the reference to record. `StateWriteError` leaves the committed part as it was."""


def generation_field(data: Mapping[str, Any], name: str, owner: str) -> int:
    """``data[name]`` as a journal generation (0 to `MAX_GENERATION`), or a ValueError
    naming the field as ``f"{owner} {name}"``."""
    value = count_field(data, name, owner)
    if value > MAX_GENERATION:
        raise ValueError(
            f"{owner} {name} must be at most {MAX_GENERATION}, the largest journal "
            f"generation, got {shown(value)}"
        )
    return value


def count_field(data: Mapping[str, Any], name: str, owner: str) -> int:
    """``data[name]`` as a whole number >= 0, or a ValueError naming the field."""
    value = data.get(name)
    if type(value) is not int or value < 0:
        raise ValueError(f"{owner} {name} must be a whole number >= 0, got {shown(value)}")
    return value
