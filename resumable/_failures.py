"""Items that failed: what `iterate(on_error="record")` remembers, and retries next run.

A failure is recorded for the item in flight when an exception (an `Exception`, never
ctrl+c or SIGTERM) leaves a ``with r.attempt():`` block. The record is part of the
progress, so it is saved with it, atomically: a crash leaves the records of the last save.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from resumable._journal import key_from_tagged, tagged_key

MESSAGE_LIMIT = 500  # characters of an exception's message kept in the state file
ON_ERROR_CHOICES = ("raise", "record")


@dataclass(frozen=True)
class FailedItem:
    """One item whose body failed, as `Resumable.failed` and `inspect` report it.

    Attributes:
        key: the item's key (keyed progress), else None.
        position: the item's index in the input (positional progress), else None.
        error_type: the exception's class, e.g. ``"ConnectionError"`` or
            ``"urllib.error.HTTPError"``.
        message: the exception's message (its first 500 characters).
        attempts: how many times the item failed, over all runs.
        failed_at: when it last failed (aware datetime, UTC).
    """

    key: str | int | None
    position: int | None
    error_type: str
    message: str
    attempts: int
    failed_at: datetime

    @property
    def where(self) -> str | int:
        """The key or the position: what identifies the item."""
        where = self.key if self.key is not None else self.position
        assert where is not None  # `restore` and `Failures.record` set one of the two
        return where

    def snapshot(self) -> dict[str, Any]:
        # A key is written as the journal writes it: ints beyond 64 bits and strings with
        # lone surrogates (file names) as tagged objects, which orjson can write.
        where: dict[str, object] = (
            {"key": tagged_key(self.key)} if self.key is not None else {"position": self.position}
        )
        return {
            **where,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "failed_at": self.failed_at.isoformat(),
        }

    @classmethod
    def restore(cls, data: object) -> FailedItem:
        if not isinstance(data, Mapping):
            raise ValueError(f"a failed item must be an object, got {data!r}")
        key, position = data.get("key"), data.get("position")
        if (key is None) == (position is None):
            raise ValueError(f"a failed item has a key or a position, got {dict(data)!r}")
        if key is not None:
            try:
                key = key_from_tagged(key)
            except ValueError as error:
                raise ValueError(f"a failed item's key is {error}") from None
        if position is not None and (type(position) is not int or position < 0):
            raise ValueError(f"a failed item's position must be an int >= 0, got {position!r}")
        error_type, message = data.get("error_type"), data.get("message")
        attempts, failed_at = data.get("attempts"), data.get("failed_at")
        if not isinstance(error_type, str) or not isinstance(message, str):
            raise ValueError(f"a failed item needs error_type and message strings: {data!r}")
        if type(attempts) is not int or attempts < 1:
            raise ValueError(f"a failed item's attempts must be an int >= 1, got {attempts!r}")
        if not isinstance(failed_at, str):
            raise ValueError(f"a failed item's failed_at must be a string, got {failed_at!r}")
        return cls(key, position, error_type, message, attempts, datetime.fromisoformat(failed_at))


def _message_of(error: BaseException) -> str:
    """The exception's message as the state file can hold it, whatever its str() does."""
    try:
        message = str(error)
    except Exception as broken:  # a __str__ that raises must not end the loop
        message = f"<str() of the exception raised {type(broken).__name__}>"
    # Lone surrogates (file names decoded with surrogateescape) are no valid UTF-8, which
    # JSON needs: kept visible as backslash escapes.
    return message[:MESSAGE_LIMIT].encode("utf-8", "backslashreplace").decode("utf-8")


class Failures:
    """The failed items of a job, by key or position."""

    def __init__(self, items: Iterable[FailedItem] = ()) -> None:
        self.items: dict[str | int, FailedItem] = {item.where: item for item in items}

    def record(self, where: str | int, error: BaseException, keyed: bool) -> FailedItem:
        """Count one more failure of the item at `where`; return its record."""
        earlier = self.items.get(where)
        kind = type(error)
        module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        failed = FailedItem(
            key=where if keyed else None,
            position=None if keyed else int(where),
            error_type=f"{module}{kind.__qualname__}",
            message=_message_of(error),
            attempts=(earlier.attempts if earlier else 0) + 1,
            failed_at=datetime.now(timezone.utc),
        )
        self.items[where] = failed
        return failed

    def succeeded(self, where: str | int) -> None:
        """The item at `where` ran to its end: it is no longer failed."""
        self.items.pop(where, None)

    def given_up(self, max_attempts: int) -> list[FailedItem]:
        """The items that failed `max_attempts` times: left recorded, and skipped."""
        return [item for item in self.items.values() if item.attempts >= max_attempts]

    def to_retry(self, max_attempts: int) -> list[FailedItem]:
        """The other failed items: tried again."""
        return [item for item in self.items.values() if item.attempts < max_attempts]

    def snapshot(self) -> list[dict[str, Any]]:
        return [item.snapshot() for item in self.items.values()]

    @classmethod
    def restore(cls, data: object) -> Failures:
        """Rebuild from `snapshot` data (None when absent); ValueError when malformed."""
        if data is None:
            return cls()
        if not isinstance(data, list):
            raise ValueError(f"failed items must be a list, got {data!r}")
        return cls(FailedItem.restore(entry) for entry in data)

    def __len__(self) -> int:
        return len(self.items)
