"""What is done: the `Progress` protocol, and the registry of its kinds.

A progress object answers one question, which items are already done, and turns itself
into plain data (`snapshot`) and back (`restore`), so that the state file never needs to
know what kind of progress it holds. The kinds:

- ``"position"`` (`PositionProgress`): the first `position` items of the input.
- ``"keys"`` (`KeyProgress`): the items whose key is done, wherever they are in the input.
- ``"watermark"`` (`WatermarkProgress`): items that finish out of order (``r.map``): every
  item before the watermark, and those done above it.

A new kind is a new module with a class that implements `Progress`, plus one line in
`KINDS`. The loops (`resumable._drivers`) mark items done through the kind's own
containers, on their per-item path; everything else goes through this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from resumable._errors import StateFileError
from resumable._failures import Failures
from resumable._progress.keys import KeyProgress
from resumable._progress.position import PositionProgress
from resumable._progress.watermark import WatermarkProgress
from resumable._store.journal_api import Journals, LoggedEntries

__all__ = [
    "KINDS",
    "KeyProgress",
    "PositionProgress",
    "Progress",
    "WatermarkProgress",
    "as_keyed",
    "as_positional",
    "as_watermark",
    "restore",
    "restore_progress",
]


class Progress(Protocol):
    """What every kind of progress offers the session, the checkpoint and `inspect`."""

    kind: ClassVar[str]  # the name the state file records
    finished: bool  # whether the input ran out
    failures: Failures  # the failed items, by the kind's place (position or key)

    @property
    def position(self) -> int:
        """How many items are done, counting earlier runs."""

    @property
    def recorded_position(self) -> int:
        """How many items are done as the state file records them, without reading more."""

    @property
    def input_length(self) -> int | None:
        """The input's length as the state file records it, when it does."""

    def snapshot(self) -> dict[str, Any]:
        """The progress as plain JSON-ready data; what the state file's "progress" holds."""

    def load(self, journals: Journals, describe: str, logged: LoggedEntries) -> None:
        """Read, through the store, the journals the restored progress names, and add what
        the progress log holds past them (`logged`); `StateFileError` if damaged.
        `describe` names the job in a warning."""

    def resumed_from_backup(self) -> None:
        """The progress came from the backup: the first save writes new generations."""

    @property
    def journal_pending(self) -> bool:
        """Whether the next save writes to a journal before it writes the state file."""

    def riding(self) -> dict[str, list[Any]] | None:
        """What a record of the progress log carries for a save of progress alone: the
        journals' entries since the last save (``keys``, ``failed``), so that the save is one
        flush; None when the save must rewrite the state file instead."""

    def rode(self) -> None:
        """The record of `riding` is on the disk: its entries wait for the next rewrite."""

    def save(self, journals: Journals) -> None:
        """Hand the store what the next rewrite commits to the journals (what rode the log
        since the last one, and what is new), and take back the references the state file
        records: written and flushed before the state file."""


KINDS: dict[str, type[PositionProgress] | type[KeyProgress] | type[WatermarkProgress]] = {
    PositionProgress.kind: PositionProgress,
    KeyProgress.kind: KeyProgress,
    WatermarkProgress.kind: WatermarkProgress,
}


def restore(data: Mapping[str, Any]) -> Progress:
    """The progress `data` (a state file's "progress") holds, of the kind it names, its
    journals not read yet; ValueError says what is malformed or unknown."""
    named = data.get("kind")
    kind = KINDS.get(named) if isinstance(named, str) else None  # a list is no dict key
    if kind is None:
        raise ValueError(f"unknown progress kind {data.get('kind')!r}")
    return kind.restore(data)


def restore_progress(
    data: Mapping[str, Any], journals: Journals, describe: str, logged: LoggedEntries
) -> Progress:
    """The progress a state file holds, of the kind it names, its journals read through
    the store (`journals`) and what its progress log holds past them (`logged`) added:
    ready to resume. `describe` names the state file in messages.

    Raises `StateFileError` when it is malformed, of an unknown kind, or when its key
    journal or failure journal is damaged.
    """
    try:
        progress = restore(data)
    except ValueError as error:
        raise StateFileError(
            f"{describe} holds progress this version cannot use: {error}"
        ) from None
    progress.load(journals, describe, logged)
    return progress


def as_positional(progress: Progress) -> PositionProgress:
    """`progress`, which the caller knows to be by position, typed as such."""
    assert isinstance(progress, PositionProgress)
    return progress


def as_watermark(progress: Progress) -> WatermarkProgress:
    """`progress`, which the caller knows to be a watermark, typed as such."""
    assert isinstance(progress, WatermarkProgress)
    return progress


def as_keyed(progress: Progress) -> KeyProgress:
    """`progress`, which the caller knows to be by key, typed as such."""
    assert isinstance(progress, KeyProgress)
    return progress
