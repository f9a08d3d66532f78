"""The state file format: a small JSON document with a version and a checksum.

Version 1 looks like this (one line on disk, shown indented)::

    {
      "format_version": 1,
      "progress": {"kind": "position", "position": 1200, "finished": false},
      "state": {"bytes": 52311},
      "runs": 3,
      "created_at": "2026-11-26T09:12:01.512034+00:00",
      "saved_at": "2026-11-26T10:40:17.004211+00:00",
      "writer": "resumable-loop 0.1.0",
      "checksum": "crc32:5f1c0a9e"
    }

The checksum is the CRC-32 of the document without its ``checksum`` key, serialised by
orjson with sorted keys. orjson writes every value it reads back byte for byte, so the
reader recomputes it from the parsed document.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from resumable._errors import StateFileError, StateNotSerializableError

FORMAT_VERSION = 1
_REQUIRED = {
    "format_version": int,
    "progress": dict,
    "state": dict,
    "runs": int,
    "created_at": str,
    "saved_at": str,
    "checksum": str,
}


@dataclass(frozen=True)
class StateDocument:
    """The parsed content of a state file."""

    progress: dict[str, Any]
    state: dict[str, Any]
    runs: int
    created_at: str
    saved_at: str
    format_version: int = FORMAT_VERSION


def encode(document: StateDocument, writer: str) -> bytes:
    """Serialise a document with its checksum; a bad user value raises with its key."""
    body = {
        "format_version": document.format_version,
        "progress": document.progress,
        "state": document.state,
        "runs": document.runs,
        "created_at": document.created_at,
        "saved_at": document.saved_at,
        "writer": writer,
    }
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as error:  # orjson.JSONEncodeError is a TypeError
        raise _unserialisable(document.state, error) from error
    if b"null" in canonical:  # NaN and infinity come out as null: look for them only then
        _reject_non_finite(document.state, "")
    checksum = f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()
    return canonical[:-1] + checksum


class NewerFormatError(StateFileError):
    """A state file written by a newer resumable-loop: not damaged, so no backup stands in."""


def decode(data: bytes, where: str) -> StateDocument:
    """Parse and verify a state file's bytes; `where` names the file in error messages."""
    if not data:
        raise StateFileError(f"{where} is empty")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise StateFileError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(parsed, dict):
        raise StateFileError(f"{where} holds JSON of the wrong shape: not an object")
    version = parsed.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise NewerFormatError(
            f"{where} has format version {version}, written by a newer version of "
            f"resumable-loop ({parsed.get('writer', 'unknown')}); this one reads up to "
            f"version {FORMAT_VERSION}. Upgrade resumable-loop to resume this job."
        )
    for key, kind in _REQUIRED.items():
        value = parsed.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StateFileError(
                f"{where} holds JSON of the wrong shape: {key!r} should be "
                f"{kind.__name__}, found {type(value).__name__}"
            )
    if version != FORMAT_VERSION:
        raise StateFileError(f"{where} has unknown format version {version}")
    stored = parsed.pop("checksum")
    expected = f"crc32:{zlib.crc32(orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)):08x}"
    if stored != expected:
        raise StateFileError(
            f"{where} is corrupt: its checksum is {stored}, its content gives {expected}"
        )
    return StateDocument(
        progress=parsed["progress"],
        state=parsed["state"],
        runs=parsed["runs"],
        created_at=parsed["created_at"],
        saved_at=parsed["saved_at"],
        format_version=version,
    )


def fingerprint(progress: dict[str, Any], state: dict[str, Any]) -> bytes | None:
    """Bytes that are equal exactly when two (progress, state) pairs save the same; None if
    the state cannot be serialised."""
    try:
        return orjson.dumps([progress, state], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


def now_iso() -> str:
    """The current wall-clock time as ISO 8601 in UTC (freezegun controls it in tests)."""
    return datetime.now(timezone.utc).isoformat()


def _unserialisable(state: dict[str, Any], error: TypeError) -> StateNotSerializableError:
    key, value = _find_unserialisable(state, "")
    return StateNotSerializableError(
        f"r.state{key} cannot be saved as JSON: {error}. Store JSON-ready values "
        f"(dict with str keys, list, str, int, float, bool, None); here a "
        f"{type(value).__name__}, which you could convert with str(), list() or int().",
        key=key,
    )


def _find_unserialisable(value: Any, path: str) -> tuple[str, Any]:
    """Return the path and value of the first part of `value` orjson rejects."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}] (a {type(key).__name__} key)", key
            try:
                orjson.dumps(item)
            except TypeError:
                return _find_unserialisable(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            try:
                orjson.dumps(item)
            except TypeError:
                return _find_unserialisable(item, f"{path}[{index}]")
    return path, value


def _reject_non_finite(value: Any, path: str) -> None:
    """orjson writes NaN and infinity as null; refuse them rather than lose them."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateNotSerializableError(
                f"r.state{path} is {value}, which JSON cannot hold (orjson would write "
                "null). Store it as a string, e.g. 'nan', or as None.",
                key=path,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{path}[{index}]")
