"""Is this the same input as last time? Its length, and a fingerprint of its first items.

Position-based progress means "the first N items are done", which holds only if the
input is the same sequence on every run. The state records the input's length (when it
has one) and a hash of the fingerprints (`_item_fingerprint`) of its first `HEAD_ITEMS`
done items; a resume compares them with the input it is given. Only done items are
fingerprinted, so checking never looks past the saved position. An item that cannot be
fingerprinted leaves the input's first items unrecorded (its length is still compared).

The hash says how it was made: ``v2:blake2b:<hex>``. One without the ``v2:`` was written
before version 2 (``blake2b:<hex>``, a hash of the items' reprs, which changed between
interpreters for items holding sets): it cannot be compared, so such a record is compared
by its length only, and the next save records the input anew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from resumable._item_fingerprint import item_fingerprint
from resumable._text import counted

T = TypeVar("T")

HEAD_ITEMS = 16  # enough to tell a reordered or replaced input; cheap to fingerprint
HASH_PREFIX = "v2:blake2b:"  # how `head_hash` is made; other prefixes are not compared
ON_CHANGE_CHOICES = ("raise", "restart", "continue")


def check_on_change(on_change: object) -> None:
    """Raise a ValueError naming the choices unless `on_change` is one of them."""
    if on_change not in ON_CHANGE_CHOICES:
        raise ValueError(
            f"on_change must be one of {', '.join(map(repr, ON_CHANGE_CHOICES))}; got {on_change!r}"
        )


@dataclass(frozen=True)
class InputRecord:
    """What the state file says about the input: its length and its head's fingerprint."""

    length: int | None
    head_items: int  # how many first items `head_hash` covers
    head_hash: str | None  # None: not fingerprinted (an item could not be)

    def snapshot(self) -> dict[str, Any]:
        return {"length": self.length, "head_items": self.head_items, "head_hash": self.head_hash}

    @classmethod
    def restore(cls, data: object) -> InputRecord | None:
        """Rebuild from `snapshot` data (None when absent: files before input checks)."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ValueError(f"progress input must be an object, got {data!r}")
        length, items, digest = data.get("length"), data.get("head_items"), data.get("head_hash")
        if length is not None and not _is_count(length):
            raise ValueError(f"input length must be a whole number >= 0 or null, got {length!r}")
        if not isinstance(items, int) or not _is_count(items) or items > HEAD_ITEMS:
            raise ValueError(f"input head_items must be 0 to {HEAD_ITEMS}, got {items!r}")
        if digest is not None and not isinstance(digest, str):
            raise ValueError(f"input head_hash must be a string or null, got {digest!r}")
        return cls(length, items, digest)

    @property
    def head_from_before(self) -> bool:
        """Whether the first items' hash was made the way of an earlier version, which
        cannot be compared with this version's."""
        return self.head_hash is not None and not self.head_hash.startswith(HASH_PREFIX)


class InputHead:
    """The fingerprints of the input's first items, as this run sees them."""

    def __init__(self) -> None:
        self.fingerprints: list[bytes] = []
        self.stable = True  # false once an item could not be fingerprinted
        # Whether it needs no more items: an attribute, as the loop asks at every check.
        self.full = False
        self._digest: tuple[int, str] | None = None  # (items covered, their hash)
        self._record: InputRecord | None = None  # the last `record`, asked again each save

    def add(self, item: object) -> None:
        if self.full:
            return
        fingerprint = item_fingerprint(item)
        if fingerprint is None:  # unknown: the head is not recorded, and not compared
            self.stable = False
            self.full = True
            return
        self.fingerprints.append(fingerprint)
        self.full = len(self.fingerprints) >= HEAD_ITEMS

    def tap(self, chunk: Iterator[T]) -> Iterator[T]:
        """`chunk`, noting its items until the head is full (Python code for those only)."""
        if self.full:
            return chunk
        return self._tapped(chunk)

    def _tapped(self, chunk: Iterator[T]) -> Iterator[T]:
        for item in chunk:
            self.add(item)
            yield item

    def record(self, length: int | None, done: int) -> InputRecord:
        """The record to save once `done` items are done."""
        if not self.stable:
            return InputRecord(length, 0, None)
        covered = min(done, len(self.fingerprints))
        # Every save asks; once the head is complete the answer seldom changes.
        last = self._record
        if last is not None and last.head_items == covered and last.length == length:
            return last
        if self._digest is None or self._digest[0] != covered:
            self._digest = (covered, head_hash(self.fingerprints[:covered]))
        self._record = InputRecord(length, covered, self._digest[1])
        return self._record


def head_hash(fingerprints: Iterable[bytes]) -> str:
    """The hash of the first items' fingerprints, as recorded."""
    digest = hashlib.blake2b(digest_size=16)
    for fingerprint in fingerprints:
        digest.update(fingerprint)
    return HASH_PREFIX + digest.hexdigest()


def what_changed(recorded: InputRecord, length: int | None, head: InputHead) -> str | None:
    """How the input differs from the recorded one, in words; None when it matches."""
    if recorded.length is not None and length is not None and length != recorded.length:
        return f"it had {counted(recorded.length, 'item')} last time and has {length:,} now"
    if (
        recorded.head_hash is not None
        and not recorded.head_from_before
        and head.stable
        and recorded.head_items
    ):
        if len(head.fingerprints) < recorded.head_items:
            return f"it has fewer than the {counted(recorded.head_items, 'item')} it started with"
        if head_hash(head.fingerprints[: recorded.head_items]) != recorded.head_hash:
            first = (
                "its first item differs"
                if recorded.head_items == 1
                else f"its first {recorded.head_items:,} items differ"
            )
            return f"{first} from last time's (reordered, replaced or new items at the front)"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
