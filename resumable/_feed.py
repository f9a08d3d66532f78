"""Handing the loop its items at C speed, with a count that can be read and cut short.

The loop the user writes, ``for item in r.iterate(items)``, runs over
``itertools.chain.from_iterable`` of chunks. A chunk is a C iterator over the next few
items, so between chunk ends no Python code of this library runs at all. What makes that
safe is a *counter*: a C iterator whose remaining length (``__length_hint__``) tells how
many items the loop has taken, and whose position (``__setstate__``) can be moved to its
end, so that the loop stops after the current item. A signal handler uses that to stop
the loop; `Resumable.position` uses it to answer mid-chunk.

The items are always the ones ``for item in items`` would get: those of ``iter(items)``.
Only an iterator known to read its input by index is moved to the saved position; any
other has its done prefix read and discarded.

- A list, tuple, range, str, bytes or bytearray (exactly these types) is iterated by its
  own iterator, which jumps to the position and is its own counter.
- An iterator that reads by index (Python's sequence iterator, which numpy arrays and
  classes with ``__getitem__`` but no ``__iter__`` get; that of ``array.array``, of a
  subclass of the types above, or the one standing in for a `collections.abc.Sequence`
  that keeps its inherited ``__iter__``) is moved to the position, then pulled as below.
- Any other iterator is pulled by ``map(next, counter)``, where the counter is a list
  iterator over the source repeated: each item costs one C call of ``next(source)`` (for
  a generator, ``map(generator.send, counter)`` over Nones: the same pull, cheaper). The
  counter moves before the source is asked, so a pull that raises or finds the source
  ended is counted too, and moving the counter to its end stops the loop before the
  source is touched again.
"""

from __future__ import annotations

import array
import itertools
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, Protocol, TypeVar, cast

from resumable._errors import InputChangedError
from resumable._text import counted

T = TypeVar("T")
D = TypeVar("D")

MAX_CHUNK = 1024
_MISSING = object()


class _ByIndex:
    """`sequence` read as `collections.abc.Sequence.__iter__` reads it: ``sequence[0]``,
    ``sequence[1]``, ... until IndexError. Having ``__getitem__`` and no ``__iter__``, it
    gets Python's own sequence iterator, which can jump to an index. ``__getitem__`` is a
    slot holding the sequence's bound method, so reading an item runs no code of ours."""

    __slots__ = ("__getitem__",)

    def __init__(self, sequence: Sequence[object]) -> None:
        self.__getitem__ = sequence.__getitem__


# The built-in sequences whose own iterator is the feed's counter: it jumps to an index and
# tells what is left, and these types' len() is their iterator's length.
_EMPTY: tuple[Sequence[object], ...] = ([], (), range(0), "", b"", bytearray())
_COUNTING_TYPES = frozenset(type(empty) for empty in _EMPTY)
_COUNTING_ITERATORS = frozenset(type(iter(empty)) for empty in _EMPTY)
# Iterators that read their input by index and can be moved to one (``__setstate__``).
_JUMPING_ITERATORS = _COUNTING_ITERATORS | {
    type(iter(cast(Any, empty))) for empty in (range(2**64), array.array("b"), _ByIndex(()))
}


class _Counter(Protocol):
    """A built-in iterator that reports what is left and can be moved to its end."""

    def __length_hint__(self) -> int: ...
    def __setstate__(self, state: int) -> None: ...
    def __reduce__(self) -> str | tuple[Any, ...]: ...


class Feed(Generic[T]):
    """The remaining items of one input, handed out in chunks.

    `cut` runs inside a signal handler, which Python may run between any two bytecodes of
    the other methods. So the methods read the counter's remaining length *before* they
    look at what a cut noted: a cut that lands in between is then seen, and one that lands
    after found the counter as it was. And a chunk's counter and bookkeeping are replaced in
    one assignment, never half.
    """

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
        """Asked once a chunk is used up: whether the input ran out.

        After `cut`, false, unless the pull under way when the cut came found the end.
        """
        raise NotImplementedError

    def cut(self) -> None:
        """Hand out no further item; the current chunk ends after the item in flight."""
        raise NotImplementedError


class _SequenceFeed(Feed[T]):
    def __init__(self, items: Sequence[T], source: Iterator[T], start: int) -> None:
        self._cut_at: int | None = None  # items taken when a cut came
        source.__setstate__(start)  # type: ignore[attr-defined]
        self._counter = cast(_Counter, source)
        self._source: Iterator[T] = source
        # A list may grow while it is looped over; its iterator follows, and so do we.
        self._total: Callable[[], int] = lambda: len(items) - start

    def chunk(self, size: int) -> Iterator[T]:
        # To the list's length as it is: pulling past its end would stop its iterator for
        # good, and items appended later (by the body) would never be read.
        return itertools.islice(self._source, min(size, self._counter.__length_hint__()))

    def taken(self) -> int:
        left = self._counter.__length_hint__()
        cut_at = self._cut_at
        return self._total() - left if cut_at is None else cut_at

    def exhausted(self) -> bool:
        left = self._counter.__length_hint__()
        return left == 0 and self._cut_at is None

    def cut(self) -> None:
        self._cut_at = self.taken()
        self._counter.__setstate__(sys.maxsize)  # built-in iterators clamp to their end
        # Pulling past the end retires a list iterator for good, so that items the body
        # appends to the list now are not handed out after all.
        next(cast(Iterator[T], self._counter), None)


class _IterableFeed(Feed[T]):
    def __init__(self, source: Iterator[T]) -> None:
        # Each item is one C call, pull(argument). generator.send(None) is next(generator)
        # without the checks the builtin next() makes first, about 5 ns less per item.
        self._pull: Callable[[Any], T] = next
        argument: object = source
        if isinstance(source, types.GeneratorType):
            self._pull, argument = source.send, None
        # The counters of all chunks run over this one list of arguments: a chunk of n
        # items is an iterator over its last n entries, so no chunk allocates per item.
        self._arguments = [argument] * MAX_CHUNK
        # The current chunk: its counter, its size, and the items taken before it.
        self._chunk: tuple[_Counter, int, int] = (cast(_Counter, iter(())), 0, 0)
        # A cut moves the counter to its end, so it first notes what the counter had left.
        self._left_at_cut: tuple[_Counter, int] | None = None
        self._ended = False

    def chunk(self, size: int) -> Iterator[T]:
        before = self.taken()
        counter = cast(_Counter, iter(self._arguments))
        counter.__setstate__(MAX_CHUNK - size)
        self._chunk = (counter, size, before)
        if self._left_at_cut is not None:  # cut before this chunk was in place: it is empty
            self._left_at_cut = (counter, size)
            counter.__setstate__(MAX_CHUNK)
        return map(self._pull, cast(Iterator[Any], counter))

    def taken(self) -> int:
        counter, size, before = self._chunk
        left = counter.__length_hint__()
        cut = self._left_at_cut
        if cut is not None and cut[0] is counter:
            left = cut[1]
        # The pull that found the source ended moved the counter but gave no item.
        return before + size - left - self._ended

    def exhausted(self) -> bool:
        # Asked once the chunk is used up. It ended either because its counter ran out (the
        # loop asked for one more item than the chunk had: the counter was pulled past its
        # end) or because the source did (the counter moved, then the source had no item).
        # Only a list iterator pulled past its end drops its list, and then pickles as an
        # iterator over an empty list: that tells the two apart even when the source ran
        # out on the counter's last entry, where both leave nothing to count.
        if not self._ended and len(self._chunk[0].__reduce__()) == 3:
            self._ended = True
        return self._ended

    def cut(self) -> None:
        counter = self._chunk[0]
        if self._left_at_cut is None:
            self._left_at_cut = (counter, counter.__length_hint__())
        counter.__setstate__(MAX_CHUNK)


def open_feed(items: Iterable[T], start: int, describe: str, skipped: int = 0) -> Feed[T]:
    """A feed of the items ``for item in items`` gets, after the first `start`.

    An input whose iterator `jumps` is entered at `start` directly; any other has its
    first `start` items consumed and discarded. An input shorter than `start` raises
    `InputChangedError`; `describe` names the state file in that message, and `skipped`
    counts the done items already taken from an iterator before it came here.
    """
    source = iterator_of(items)
    # A range too long for len() has an iterator of another type: it only jumps.
    if type(items) in _COUNTING_TYPES and type(source) in _COUNTING_ITERATORS:
        sequence = cast("Sequence[T]", items)
        if len(sequence) < start:
            raise shorter_input(describe, start, len(sequence))
        return _SequenceFeed(sequence, source, start)
    if jumps(items, source):
        # The last done item is read, to tell an input that ends there from a shorter one.
        if start and item_at(source, start - 1, _MISSING) is _MISSING:
            raise shorter_input(describe, skipped + start, None)
        return _IterableFeed(source)
    # islice(it, start - 1, start) discards start - 1 items and hands back the last done
    # one, so running out early is detected without counting in Python.
    if start and next(itertools.islice(source, start - 1, start), _MISSING) is _MISSING:
        raise shorter_input(describe, skipped + start, None)
    return _IterableFeed(source)


def iterator_of(items: Iterable[T]) -> Iterator[T]:
    """The iterator ``for item in items`` gets: ``iter(items)``, except that for a
    `collections.abc.Sequence` that keeps the ``__iter__`` it inherits, an iterator that
    reads the same items the same way and `jumps`."""
    if getattr(type(items), "__iter__", None) is Sequence.__iter__:
        return iter(cast(Any, _ByIndex(cast("Sequence[T]", items))))
    return iter(items)


def jumps(items: Iterable[object], source: Iterator[object]) -> bool:
    """Whether `source`, made by `iterator_of(items)`, reads `items` by index and can be
    moved to an index (`item_at`). An iterator passed in as the input never jumps: it may
    have been advanced already, and a for loop goes on from where it is."""
    return source is not items and type(source) in _JUMPING_ITERATORS


def item_at(source: Iterator[T], index: int, default: D) -> T | D:
    """Take the item at `index` (`default` past the end) from a *fresh* iterator that
    `jumps`. Fresh, because moving is not absolute everywhere: from Python 3.12 on, a
    range iterator's ``__setstate__`` moves it on from where it is."""
    source.__setstate__(index)  # type: ignore[attr-defined]
    return next(source, default)


def input_length(items: object) -> int | None:
    """``len(items)``, when it has one that works; compared between runs as the input's
    length. A ``__len__`` that raises means no length rather than a stopped loop."""
    if not isinstance(items, Sized):
        return None
    try:
        return len(items)
    except Exception:  # range(10**20): too long for len(); a broken __len__
        return None


def shorter_input(describe: str, position: int, size: int | None) -> InputChangedError:
    """The error for an input with fewer items than the job has done."""
    has = f"has only {counted(size, 'item')}" if size is not None else "ran out before that"
    are = "is" if position == 1 else "are"
    return InputChangedError(
        f"{describe} says {counted(position, 'item')} {are} done, but the input {has}. The input "
        "changed since the last run. Pass the same input as before, or start over with "
        "Resumable(..., restart=True)."
    )
