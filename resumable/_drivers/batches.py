"""Batches: `iterate(..., batch=n)` hands out lists of up to n items, done together."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from resumable._keys import Key, check_keys

T = TypeVar("T")


def check_batch(batch: object) -> int | None:
    """`iterate`'s ``batch=``: None, or a whole number of items >= 1."""
    if batch is None:
        return None
    if type(batch) is not int or batch < 1:
        raise ValueError(
            f"iterate(batch=...) takes a whole number of items >= 1, or None; got {batch!r}"
        )
    return batch


def grouped(pairs: Iterable[tuple[int, T]], size: int) -> Iterator[list[tuple[int, T]]]:
    """`pairs` in lists of up to `size`."""
    group: list[tuple[int, T]] = []
    for pair in pairs:
        group.append(pair)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def pending_batches(
    items: Iterable[T],
    key: Callable[[T], Key],
    skip: Callable[[Key], bool],
    size: int,
    stopping: Callable[[], bool],
) -> Iterator[tuple[list[Key], list[T]]]:
    """The items whose key `skip` does not rule out, in lists of up to `size`, with their
    keys; a key seen twice goes into the batch once.

    When `stopping()` turns true (a signal came), the batch so far is handed out at once,
    even an empty one: the caller then stops instead of reading the input on.
    """
    keys: list[Key] = []
    batch: list[T] = []
    taken: set[Key] = set()
    for item in items:
        item_key = key(item)
        if type(item_key) is not str and type(item_key) is not int:
            check_keys([item_key])  # raises UsageError, naming the bad key
        if item_key not in taken and not skip(item_key):
            keys.append(item_key)
            batch.append(item)
            taken.add(item_key)
        if len(keys) >= size or stopping():
            yield keys, batch
            keys, batch, taken = [], [], set()
    if keys:
        yield keys, batch
