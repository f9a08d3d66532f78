"""What is done when items finish out of order: a watermark, and the items done above it.

``r.map(fn, items)`` runs many items at once, and they finish in any order. Every item
before the *watermark* is done (or failed and recorded, as `iterate` passes a failed
item); of the items at or after it, those in `done_above` are done. The driver never lets
more than its window of items run past the watermark, so `done_above` stays smaller than
the window: the state file is proportional to it, never to the number of items done.

The input is checked and opened at the watermark as position progress does it (the
watermark is a position: the same input record, the same failure records by position).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from resumable._failures import Failures
from resumable._feed import Feed
from resumable._progress.position import FailureJournalOnly, PositionProgress

T = TypeVar("T")


def _of_below(name: str, doc: str) -> Any:
    """An attribute of the position progress below, read and set through."""
    return property(
        lambda self: getattr(self.below, name),
        lambda self, value: setattr(self.below, name, value),
        doc=doc,
    )


class WatermarkProgress(FailureJournalOnly):
    """Items before `watermark` are done, and those in `done_above`; `finished` once the
    input ran out and nothing is left in flight."""

    kind: ClassVar[str] = "watermark"

    def __init__(self, below: PositionProgress | None = None, done_above: Iterable[int] = ()):
        # The prefix, as position progress keeps it: its position is the watermark (a
        # plain attribute: the loop's input reader looks at it per item).
        self.below = below if below is not None else PositionProgress()
        self.done_above: set[int] = set(done_above)

    @property
    def watermark(self) -> int:
        """Every item before this index is done."""
        return self.below.position

    @property
    def position(self) -> int:
        """How many items are done, counting earlier runs."""
        return self.below.position + len(self.done_above)

    # Kept by the position progress below, which writes them into the snapshot.
    finished: bool = _of_below("finished", "Whether the input ran out.")
    failures: Failures = _of_below("failures", "The failed items, by position.")

    def mark_done(self, index: int) -> bool:
        """The item at `index` is done (or passed: failed and recorded); False, and
        nothing marked, for one before the watermark (a failed item of an earlier run,
        retried: the watermark counts it already)."""
        below = self.below
        position = below.position
        if index != position:
            if index < position:
                return False
            self.done_above.add(index)
            return True
        watermark, above = index + 1, self.done_above
        while watermark in above:
            above.remove(watermark)
            watermark += 1
        below.position = watermark
        return True

    def copy(self) -> WatermarkProgress:
        """A copy of the progress as loaded, for one loop to work on."""
        return WatermarkProgress(self.below.copy(), self.done_above)

    @classmethod
    def from_position(cls, progress: PositionProgress) -> WatermarkProgress:
        """A new job's progress (nothing done yet, by position) as a watermark."""
        return cls(progress)

    def snapshot(self) -> dict[str, Any]:
        data = self.below.snapshot()
        data["kind"] = self.kind
        data["done_above"] = sorted(self.done_above)
        return data

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> WatermarkProgress:
        """Rebuild from `snapshot` data; ValueError says what is malformed."""
        if data.get("kind") != cls.kind:
            raise ValueError(f"progress kind is {data.get('kind')!r}, expected {cls.kind!r}")
        below = PositionProgress.restore({**data, "kind": PositionProgress.kind})
        above = data.get("done_above")
        if not isinstance(above, list) or not all(
            type(index) is int and index > below.position for index in above
        ):
            raise ValueError(
                "done_above must be a list of the indexes done above the watermark "
                f"(whole numbers > {below.position}), got {above!r:.200}"
            )
        if len(set(above)) != len(above):
            raise ValueError("done_above lists an index twice")
        return cls(below, above)

    @property
    def recorded_position(self) -> int:
        return self.position

    @property
    def input_length(self) -> int | None:
        return self.below.input_length

    def feed(
        self, items: Iterable[T], describe: str, on_change: str, retry: Iterable[int]
    ) -> tuple[Feed[T], list[tuple[int, T]]]:
        """The items from the watermark on (`PositionProgress.feed`), and the failed items
        below it to retry. A failed item above the watermark was passed, not done: it is
        run again when the input reaches it. A job started over by ``on_change="restart"``
        forgets what was done above the watermark too."""
        retry = list(retry)
        self.done_above.difference_update(retry)
        feed, retried = self.below.feed(items, describe, on_change, retry=retry)
        if self.below.started_over:
            self.done_above.clear()
        return feed, retried

    @property
    def started_over(self) -> bool:
        """Whether on_change="restart" dropped what was done."""
        return self.below.started_over

    def tap(self, chunk: Iterator[T]) -> Iterator[T]:
        return self.below.tap(chunk)
