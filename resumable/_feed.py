"""Handing the loop its items at C speed, with a count that can be read and cut short.

The loop the user writes, ``for item in r.iterate(items)``, runs over
``itertools.chain.from_iterable`` of chunks. A chunk is a C iterator over the next few
items, so between chunk ends no Python code of this library runs at all. What makes that
safe is a *counter*: a C iterator whose remaining length (``__length_hint__``) tells how
many items the loop has taken, and whose position (``__setstate__``) can be moved to its
end, so that the loop stops after the current item. A signal handler uses that to stop
the loop; `Resumable.position` uses it to answer mid-chunk.

- A sequence whose iterator can jump (list, tuple, range, str, bytes) is its own counter.
- Another sequence is read by index, counted by the range iterator of its indexes.
- Any other iterable is zipped, in C, with a list iterator of Nones: ``map(dict.get, nones,
  source)`` pulls a None before each item, and gives back the item. A sentinel iterator
  chained after the source tells a source that ran out from a chunk that ran full.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from typing import Any, Generic, Protocol, TypeVar, cast

from resumable._errors import InputChangedError

T = TypeVar("T")

# Iterators of the built-in sequences can be moved to an index without touching the items
# before it, so a resumed list skips its done prefix for free.
_EMPTY_SEQUENCES: tuple[Sequence[object], ...] = ([], (), "", b"", bytearray(), range(0))
_JUMPABLE_ITERATORS = frozenset(type(iter(empty)) for empty in _EMPTY_SEQUENCES)
# One shared list serves as the counter of every chunk of a plain iterable: a chunk of n
# items is an iterator over its last n Nones, so no chunk allocates anything per item.
MAX_CHUNK = 1024
_NONES: list[None] = [None] * MAX_CHUNK
_MISSING = object()


class _Counter(Protocol):
    """A built-in iterator that reports what is left and can be moved to its end."""

    def __length_hint__(self) -> int: ...
    def __setstate__(self, state: int) -> None: ...


class Feed(Generic[T]):
    """The remaining items of one input, handed out in chunks."""

    def __init__(self) -> None:
        self._cut_at: int | None = None

    def chunk(self, size: int) -> Iterator[T]:
        """A C iterator over at most `size` further items."""
        raise NotImplementedError

    def taken(self) -> int:
        """Items the loop has taken so far, plus one while a pull that raised is counted.

        When the loop is left inside a chunk, the items done are ``taken() - 1``: either
        the last item taken is in flight, or the pull that raised counted one too many.
        """
        raise NotImplementedError

    def exhausted(self) -> bool:
        """Whether the input has no more items (false after `cut`)."""
        raise NotImplementedError

    def cut(self) -> None:
        """Hand out no further item; the current chunk ends after the item in flight."""
        raise NotImplementedError


class _SequenceFeed(Feed[T]):
    def __init__(self, items: Sequence[T], start: int, size: int) -> None:
        super().__init__()
        source = iter(items)
        if type(source) in _JUMPABLE_ITERATORS:
            source.__setstate__(start)  # type: ignore[attr-defined]
            self._counter = cast(_Counter, source)
            self._source: Iterator[T] = source
            # A list may grow while it is looped over; its iterator follows, and so do we.
            self._total: Callable[[], int] = lambda: len(items) - start
        else:
            indexes = iter(range(start, size))
            self._counter = cast(_Counter, indexes)
            self._source = map(items.__getitem__, indexes)
            self._total = lambda: size - start

    def chunk(self, size: int) -> Iterator[T]:
        return itertools.islice(self._source, size)

    def taken(self) -> int:
        if self._cut_at is not None:
            return self._cut_at
        return self._total() - self._counter.__length_hint__()

    def exhausted(self) -> bool:
        return self._cut_at is None and self._counter.__length_hint__() == 0

    def cut(self) -> None:
        self._cut_at = self.taken()
        self._counter.__setstate__(sys.maxsize)  # built-in iterators clamp to their end


class _IterableFeed(Feed[T]):
    def __init__(self, source: Iterator[T]) -> None:
        super().__init__()
        self._not_ended: list[None] = [None]
        # Once `source` runs out, chain pulls this iterator, which pops the list and stops.
        ended: Iterator[T] = iter(cast(Callable[[], T], self._not_ended.pop), None)
        self._source: Iterator[T] = itertools.chain(source, ended)
        self._counter = cast(_Counter, iter(()))
        self._taken_before = 0
        self._chunk_size = 0
        self._item_for = cast(Callable[[None, T], T], {}.get)  # {}.get(None, item) is item

    def chunk(self, size: int) -> Iterator[T]:
        if self._cut_at is not None:
            return iter(())
        self._taken_before = self.taken()
        counter = iter(_NONES)
        cast(_Counter, counter).__setstate__(MAX_CHUNK - size)
        self._counter, self._chunk_size = cast(_Counter, counter), size
        return map(self._item_for, counter, self._source)

    def taken(self) -> int:
        if self._cut_at is not None:
            return self._cut_at
        pulled = self._chunk_size - self._counter.__length_hint__()
        # The pull that found the source ended took a None but gave no item.
        return self._taken_before + pulled - (0 if self._not_ended else 1)

    def exhausted(self) -> bool:
        return not self._not_ended

    def cut(self) -> None:
        self._cut_at = self.taken()
        self._counter.__setstate__(MAX_CHUNK)


def open_feed(items: Iterable[T], start: int, describe: str) -> Feed[T]:
    """A feed of the items of `items` after the first `start`.

    A sequence (``len`` and indexing) is entered at `start` directly; any other iterable
    has its first `start` items consumed and discarded. An input shorter than `start`
    raises `InputChangedError`; `describe` names the state file in that message.
    """
    size = _length(items)
    if size is not None:
        if size < start:
            raise _shorter_input(describe, start, size)
        return _SequenceFeed(cast("Sequence[T]", items), start, size)
    source = iter(items)
    # islice(it, start - 1, start) discards start - 1 items and hands back the last done
    # one, so running out early is detected without counting in Python.
    if start and next(itertools.islice(source, start - 1, start), _MISSING) is _MISSING:
        raise _shorter_input(describe, start, None)
    return _IterableFeed(source)


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
        return len(cast(Any, items))
    except OverflowError:  # range(10**20): too long for len(); iterate it instead
        return None


def _shorter_input(describe: str, position: int, size: int | None) -> InputChangedError:
    has = f"has only {size} items" if size is not None else "ran out before that"
    return InputChangedError(
        f"{describe} says {position} items are done, but the input {has}. The input "
        "changed since the last run. Pass the same input as before, or start over with "
        "Resumable(..., restart=True)."
    )
