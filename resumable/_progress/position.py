"""What is done, by position: the first `position` items of the input.

Position-based progress assumes the input is the same sequence on every run. It checks
that on resume (the input's length and a fingerprint of its first items, `_input_check`)
and opens the input at the saved position (`feed`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any, ClassVar, TypeVar, cast

from resumable._errors import InputChangedError
from resumable._failures import Failures
from resumable._feed import (
    Feed,
    input_length,
    item_at,
    iterator_of,
    jumps,
    open_feed,
    shorter_input,
)
from resumable._input_check import (
    HEAD_ITEMS,
    InputHead,
    InputRecord,
    check_on_change,
    what_changed,
)
from resumable._store.journal_api import Journals, LoggedEntries
from resumable._text import counted

T = TypeVar("T")
_MISSING = object()
logger = logging.getLogger("resumable")


class FailureJournalOnly:
    """The journals of a progress that has none of its own, only its failure records'
    (position progress, and the watermark built on it)."""

    failures: Failures

    def load(self, journals: Journals, describe: str, logged: LoggedEntries) -> None:
        """Read the journals the restored progress names, then what the progress log holds
        past them (`logged`)."""
        self.failures.load(journals, logged.failed)

    def resumed_from_backup(self) -> None:
        """This progress was read from the backup, as the state file was damaged."""
        self.failures.resumed_from_backup()

    @property
    def journal_pending(self) -> bool:
        """Whether the next save writes to a journal (before the state file)."""
        return self.failures.unsaved

    def riding(self) -> dict[str, list[Any]] | None:
        """What a record of the progress log carries for this save (the failure entries);
        None when the save must rewrite the state file instead."""
        failed = self.failures.riding()
        return None if failed is None else ({"failed": failed} if failed else {})

    def rode(self) -> None:
        """The record of `riding` is on the disk."""
        self.failures.rode()

    def save(self, journals: Journals) -> None:
        """Write what the next save commits to the journals, flushed to the disk."""
        self.failures.save(journals)


class PositionProgress(FailureJournalOnly):
    """The first `position` items of the input are done; `finished` once it ran out."""

    kind: ClassVar[str] = "position"

    def __init__(
        self, position: int = 0, finished: bool = False, input_record: InputRecord | None = None
    ) -> None:
        self.position = position
        self.finished = finished
        self.input_record = input_record  # what the state file says about the input
        self.failures = Failures(keyed=False)
        self._head = InputHead()
        self._sized: Sized | None = None  # the input, when it has a length
        self._given_input = False  # whether this run's input replaced `input_record`
        self.started_over = False  # whether on_change="restart" dropped what was done

    def copy(self) -> PositionProgress:
        """A copy of the progress as loaded (before `feed`), for one `iterate` to work on."""
        data = self.snapshot()
        data.pop("failed", None)  # a reference to the journal, read already: copied as read
        copied = PositionProgress.restore(data)
        copied.failures = self.failures.copy()
        return copied

    def snapshot(self) -> dict[str, Any]:
        """Return the progress as plain JSON-ready data."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "position": self.position,
            "finished": self.finished,
        }
        record = self.input_record
        if self._given_input:
            length = input_length(self._sized) if self._sized is not None else None
            record = self._head.record(length, self.position)
        if record is not None:
            data["input"] = record.snapshot()
        failed = self.failures.snapshot()
        if failed is not None:
            data["failed"] = failed
        return data

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> PositionProgress:
        """Rebuild the progress from `snapshot` data; ValueError says what is malformed."""
        if data.get("kind") != cls.kind:
            raise ValueError(f"progress kind is {data.get('kind')!r}, expected {cls.kind!r}")
        position, finished = data.get("position"), data.get("finished")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"progress position must be a whole number >= 0, got {position!r}")
        if not isinstance(finished, bool):
            raise ValueError(f"progress finished must be true or false, got {finished!r}")
        progress = cls(position, finished, InputRecord.restore(data.get("input")))
        progress.failures = Failures.restore(data.get("failed"), keyed=False)
        return progress

    @property
    def recorded_position(self) -> int:
        """Items done as the state file records them (what `inspect` shows)."""
        return self.position

    @property
    def input_length(self) -> int | None:
        """The input's length as the state file records it, when it had one."""
        return self.input_record.length if self.input_record is not None else None

    def feed(
        self,
        items: Iterable[T],
        describe: str,
        on_change: str = "raise",
        retry: Iterable[int] = (),
    ) -> tuple[Feed[T], list[tuple[int, T]]]:
        """The items of `items` not done yet, once the input is checked against the record;
        and the done items at the positions `retry` (failed ones), taken on the way.

        A changed input raises `InputChangedError` (``on_change="raise"``), starts the job
        over (``"restart"``: position 0, no failures) or is accepted as it is
        (``"continue"``).
        """
        check_on_change(on_change)
        length = input_length(items)
        # The first done items, for the fingerprint: pulled from the iterator that `for`
        # would use. One that reads by index is moved about to take what is needed, and the
        # feed gets a fresh one; any other goes on from there (its pulled items kept, should
        # the job start over).
        source = iterator_of(items)
        pulled = list(itertools.islice(source, min(self.position, HEAD_ITEMS)))
        for item in pulled:
            self._head.add(item)
        changed = what_changed(self.input_record, length, self._head) if self.input_record else None
        if self.input_record is not None and self.input_record.head_from_before:
            logger.info(
                "%s: its first items were recorded by an earlier version, in a form this one "
                "cannot compare; this time only the input's length is checked, and the next "
                "save records them anew",
                describe,
            )
        if changed is not None:
            self._on_changed_input(describe, changed, on_change)
        # Only now is this the job's input: a refused one must not be recorded in its place.
        self._given_input = True
        self._sized = cast(Sized, items) if length is not None else None
        positions = sorted(p for p in retry if p < self.position)
        if jumps(items, source):
            retried = []
            for p in positions:
                found = item_at(iterator_of(items), p, _MISSING)
                if found is not _MISSING:  # past the end of a shorter input: open_feed says so
                    retried.append((p, cast(T, found)))
            # Nothing else to hand out; but an input shorter than the position is another
            # input, finished or not (open_feed says so).
            if self.finished and (length is None or length >= self.position):
                return open_feed((), 0, describe), retried
            return open_feed(items, self.position, describe), retried
        if self.position == 0:  # a new job, or one started over after pulling its head
            # chain() only when needed: it would sit between the loop and every item.
            remaining = itertools.chain(pulled, source) if pulled else source
            return open_feed(remaining, 0, describe), []
        if len(pulled) < min(self.position, HEAD_ITEMS):
            raise shorter_input(describe, self.position, None)
        retried = [(p, pulled[p]) for p in positions if p < len(pulled)]
        taken = len(pulled)
        for p in (p for p in positions if p >= len(pulled)):
            # Skip to the failed item in C, take it, go on: no Python per skipped item.
            found = next(itertools.islice(source, p - taken, p - taken + 1), _MISSING)
            if found is _MISSING:
                raise shorter_input(describe, self.position, None)
            retried.append((p, cast(T, found)))
            taken = p + 1
        if self.finished:  # never run through the rest of an iterator for nothing
            return open_feed((), 0, describe), retried
        return open_feed(source, self.position - taken, describe, skipped=taken), retried

    def tap(self, chunk: Iterator[T]) -> Iterator[T]:
        """`chunk`, noting its first items for the input's fingerprint while needed."""
        return chunk if self._head.full else self._head.tap(chunk)

    def _on_changed_input(self, describe: str, changed: str, on_change: str) -> None:
        if on_change == "raise":
            raise InputChangedError(
                f"{describe} was saved for another input: {changed}. Its "
                f"{counted(self.position, 'done item')} may not be the first of this input. "
                "Pass the same input "
                "as before; or iterate(..., on_change='restart') to start over, or "
                "on_change='continue' to go on by position anyway; for inputs that change "
                "between runs, track items by key: iterate(..., key=...)."
            )
        if on_change == "restart":
            logger.warning("%s: the input changed (%s); starting over", describe, changed)
            self.position, self.finished = 0, False
            self.started_over = True
            self._head = InputHead()
            self.failures.clear()  # their positions were in the other input
        else:
            self.finished = False  # the new input may hold items past the position
            logger.warning(
                "%s: the input changed (%s); going on at item %d as on_change='continue' asks",
                describe,
                changed,
                self.position,
            )
