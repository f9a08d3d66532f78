"""What is done: progress measured as a position in the input.

A progress object answers one question, which items are already done, and turns itself
into plain data (`snapshot`) and back (`restore`) so the store never needs to know what
kind of progress it is writing. Position-based progress assumes the input is the same
sequence on every run; the first `position` items are done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from resumable._feed import Feed, open_feed

T = TypeVar("T")


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

    def feed(self, items: Iterable[T], describe: str) -> Feed[T]:
        """The items of `items` not done yet; see `open_feed`."""
        return open_feed(items, self.position, describe)
