"""What is done: progress measured as a position in the input.

A progress object answers one question, which items are already done, and turns itself
into plain data (`snapshot`) and back (`restore`) so the store never needs to know what
kind of progress it is writing. Position-based progress assumes the input is the same
sequence on every run; the first `position` items are done.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from typing import Any, TypeVar, cast

from resumable._errors import InputChangedError

T = TypeVar("T")

# Iterators of the built-in sequences can be moved to an index without touching the items
# before it (`__setstate__`), which is how a resumed list skips its done prefix for free.
_EMPTY_SEQUENCES: tuple[Sequence[object], ...] = ([], (), "", b"", bytearray(), range(0))
_JUMPABLE_ITERATORS = frozenset(type(iter(empty)) for empty in _EMPTY_SEQUENCES)
_MISSING = object()


class PositionProgress:
    """The first `position` items of the input are done; `finished` once it ran out."""

    kind = "position"

    def __init__(self, position: int = 0, finished: bool = False) -> None:
        self.position = position
        self.finished = finished

    def snapshot(self) -> dict[str, Any]:
        """Return the progress as plain JSON-ready data."""
        return {"kind": self.kind, "position": self.position, "finished": self.finished}

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
        return cls(position, finished)

    def remaining(self, items: Iterable[T], describe: str) -> Iterator[T]:
        """Return an iterator over the items not yet done.

        A sequence (``len`` and indexing) is entered at the position directly; any other
        iterable has its done prefix consumed and discarded, without running the loop body.
        A sequence or iterable shorter than the position raises `InputChangedError`.
        `describe` names the state file in that message.
        """
        start = self.position
        size = _length(items)
        if size is not None:
            if size < start:
                raise _shorter_input(describe, start, size)
            iterator = iter(items)
            if start == 0:
                return iterator
            if type(iterator) in _JUMPABLE_ITERATORS:
                iterator.__setstate__(start)  # type: ignore[attr-defined]
                return iterator
            return map(cast("Sequence[T]", items).__getitem__, range(start, size))
        iterator = iter(items)
        # islice(it, start - 1, start) discards start - 1 items and hands back the last done
        # one, so running out early is detected without counting in Python.
        if start and next(itertools.islice(iterator, start - 1, start), _MISSING) is _MISSING:
            raise _shorter_input(describe, start, None)
        return iterator


def _length(items: object) -> int | None:
    """The length of a sequence (``len`` and indexing), or None for other iterables."""
    kind = type(items)
    # numpy arrays, pandas Index and friends index like sequences but do not register as
    # Sequence; mappings and sets have a length but no positions.
    if not isinstance(items, Sequence) and (
        not hasattr(kind, "__len__")
        or not hasattr(kind, "__getitem__")
        or isinstance(items, (Mapping, Set))
        or hasattr(kind, "keys")
    ):
        return None
    try:
        return len(items)  # type: ignore[arg-type]
    except OverflowError:  # range(10**20): too long for len(); iterate it instead
        return None


def _shorter_input(describe: str, position: int, size: int | None) -> InputChangedError:
    has = f"has only {size} items" if size is not None else "ran out before that"
    return InputChangedError(
        f"{describe} says {position} items are done, but the input {has}. The input "
        "changed since the last run. Pass the same input as before, or start over with "
        "Resumable(..., restart=True)."
    )
