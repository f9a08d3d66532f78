"""The state file format: a small JSON document with a version and a checksum.

Version 2 looks like this (one line on disk, shown indented)::

    {
      "format_version": 2,
      "progress": {"kind": "position", "position": 1200, "finished": false},
      "state": {"bytes": 52311},
      "runs": 3,
      "created_at": "2026-11-26T09:12:01.512034+00:00",
      "saved_at": "2026-11-26T10:40:17.004211+00:00",
      "writer": "resumable-loop 0.1.0",
      "sinks": {"results.jsonl": {"length": 48213, "tail": "crc32:0b9d5e41"}},
      "checksum": "crc32:5f1c0a9e"
    }

The checksum is the CRC-32 of the document without its ``checksum`` key, serialised by
orjson with sorted keys. orjson writes every value it reads back byte for byte, so the
reader recomputes it from the parsed document.

Versions: a reader reads every version up to its own and refuses a newer one
(`NotDamagedError`), asking for an upgrade. Version 2 added the job id of keyed progress
(``progress.journal.job_id``) and the job record it puts at the start of the key journal,
which a version 1 reader would take for damage; version 1 files are read as before (their
keyed progress has no job id until its next save). Version 2 also keeps the records of
failed items in a journal beside the state file (`resumable._failures`), which the
progress names, ``"failed": {"generation": ...}``; version 1 kept them in the progress
itself, ``"failed": [{...}, ...]``, and its first save moves them into a journal.

``sinks`` (optional, since 0.2; absent when the job has no output file of `r.sink`) maps
each sink's path, relative to the state file's folder, to its record (`SinkRecord`): its
``length`` in bytes when the progress beside it was saved; ``tail``, the CRC-32 of the
last `SINK_TAIL_BYTES` bytes before that length (absent at length 0), which the next run
checks before it cuts the file back; and ``footer_at``, present once the run that finished
the job left its with block without an error: where the output written after the loop (a
footer) starts. Files of 0.2's first form, a bare length per sink, load as records without
``tail`` and ``footer_at``.
Files without it load as jobs without sinks; a reader that predates it ignores it (and its
next save drops it: the next run of this version then refuses the unrecorded, non-empty
output file rather than guess).

``log`` (optional, since 0.2; absent in files of earlier versions and of stores without a
progress log) is the id that the records of the progress log beside the file name
(`resumable._store.progress_log`): a reader applies the last good record that extends it.

Bounds: a state file holds at most `MAX_BYTES` bytes, and `r.state` nests at most
`MAX_STATE_DEPTH` levels. A save beyond either is refused, so every file a save writes is
one a reader accepts; a reader takes a larger or deeper file for damage.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from enum import Enum
from typing import Any, TypedDict
from uuid import UUID

import orjson

from resumable._errors import StateFileError, StateNotSerializableError
from resumable._store.journal_api import NOTHING_LOGGED, LoggedEntries
from resumable._text import shown

FORMAT_VERSION = 2  # what this version writes; it reads every version from 1 up to it
# The most bytes a state file may hold. Saves refuse to write more (each save rewrites all
# of it: a state this large costs seconds per save), and readers check a file's size
# before they read it, so a sparse file or a device never fills the memory.
MAX_BYTES = 256 * 2**20
# orjson writes 254 levels of nesting (and reads 1,024); the document holds `r.state` one
# level down, so `r.state` itself may nest 253 levels, counting its own.
MAX_STATE_DEPTH = 253
_LOG_ID = re.compile(r"[0-9a-f]{16}")
_REQUIRED = {
    "format_version": int,
    "progress": dict,
    "state": dict,
    "runs": int,
    "created_at": str,
    "saved_at": str,
    "checksum": str,
}


# How many bytes before a sink's recorded length its ``tail`` checksum covers.
SINK_TAIL_BYTES = 4096


class _SinkLength(TypedDict):
    length: int


class SinkRecord(_SinkLength, total=False):
    """What the state file records of one sink (``length``, ``tail``, ``footer_at``)."""

    tail: str
    footer_at: int


@dataclass(frozen=True)
class StateDocument:
    """The parsed content of a state file."""

    progress: dict[str, Any]
    state: dict[str, Any]
    runs: int
    created_at: str
    saved_at: str
    format_version: int = FORMAT_VERSION
    sinks: dict[str, SinkRecord] = dataclasses.field(default_factory=dict)
    # The id of the progress log records that extend this document (`progress_log`); None
    # in a document of an earlier version, or of a store without a log.
    log: str | None = None
    # The keys and failure entries that the log's records hold past the journals' committed
    # lengths (`progress_log.apply_log`); never written to the state file itself.
    logged: LoggedEntries = NOTHING_LOGGED


def encode(
    document: StateDocument, writer: str, where: str = "the state file", checked: bool = False
) -> bytes:
    """Serialise a document with its checksum; a bad user value raises with its key.

    A value of the library's own that cannot be written (a counter beyond 64 bits, which
    only a state file edited or damaged under a valid checksum holds) raises
    `StateFileError` naming its field; `where` names the file. `checked`: `check_state`
    passed on this state already (`state_bytes`), and is not run again.
    """
    if not checked:
        check_state(document.state)
    body = {
        "format_version": document.format_version,
        "progress": document.progress,
        "state": document.state,
        "runs": document.runs,
        "created_at": document.created_at,
        "saved_at": document.saved_at,
        "writer": writer,
    }
    if document.sinks:  # only then: a job without sinks writes the files it always wrote
        body["sinks"] = document.sinks
    if document.log is not None:
        body["log"] = document.log
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as error:  # orjson.JSONEncodeError is a TypeError
        # Depth first: r.state at the limit passes alone and fails inside the document.
        deep = _too_deep(document.state)
        if deep is not None:
            raise deep from error
        if _serialisable(document.state):
            raise _unsaveable_field(body, error, where) from error
        raise _unserialisable(document.state, error) from error
    if b"null" in canonical:  # NaN and infinity come out as null: look for them only then
        _reject_non_finite(document.state, "")
    if len(canonical) > MAX_BYTES - 64:  # room for the checksum
        raise _too_large(document.state, len(canonical))
    checksum = f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()
    return canonical[:-1] + checksum


@dataclass(frozen=True)
class Loaded:
    """A state document and where it came from: the state file, or its backup."""

    document: StateDocument
    from_backup: bool


class NotDamagedError(StateFileError):
    """A state file that cannot be used, though nothing shows it is damaged: a newer format
    version, a file this user may not read, a FIFO or a device. No backup stands in for it
    (the job would quietly go back to an older save, and the next save would set a good
    file aside as damaged), and nothing is changed."""


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
        raise NotDamagedError(
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
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise StateFileError(f"{where} has unknown format version {version}")
    stored = parsed.pop("checksum")
    try:
        canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    except TypeError as error:  # read, but not writable again: no save made this file
        raise StateFileError(
            f"{where} is damaged: it nests data deeper than any save writes ({error})"
        ) from None
    expected = f"crc32:{zlib.crc32(canonical):08x}"
    if stored != expected:
        raise StateFileError(
            f"{where} is corrupt: its checksum is {stored}, its content gives {expected}"
        )
    _check_values(parsed, where)
    sinks = check_sinks(parsed.get("sinks", {}), where)
    log = check_log_id(parsed.get("log"), where)
    return StateDocument(
        progress=parsed["progress"],
        state=parsed["state"],
        runs=parsed["runs"],
        created_at=parsed["created_at"],
        saved_at=parsed["saved_at"],
        format_version=version,
        sinks=sinks,
        log=log,
    )


def check_log_id(value: object, where: str) -> str | None:
    """The ``log`` field of a state document, or `StateFileError` for one no save writes."""
    if value is None:
        return None
    if not isinstance(value, str) or _LOG_ID.fullmatch(value) is None:
        raise StateFileError(
            f"{where} is damaged: its log id is {shown(value)}, not 16 lowercase hex digits"
        )
    return value


def check_sinks(sinks: object, where: str) -> dict[str, SinkRecord]:
    """The ``sinks`` field: relative paths to records (or, in 0.2's first form, to bare
    lengths), or `StateFileError`."""
    if not isinstance(sinks, dict):
        raise StateFileError(
            f"{where} holds JSON of the wrong shape: 'sinks' should be dict, found "
            f"{type(sinks).__name__}"
        )
    records: dict[str, SinkRecord] = {}
    for path, value in sinks.items():
        if not path or os.path.isabs(path):
            raise StateFileError(
                f"{where} is damaged: its sink {path[:80]!r} is no path relative to the "
                "state file's folder, which is what a save records"
            )
        record = _sink_record(value)
        if record is None:
            raise StateFileError(
                f"{where} is damaged: its sink {path[:80]!r} has the record {shown(value)}; "
                "a save records a length of 0 bytes or more, the CRC-32 of the bytes "
                "before it, and where a footer starts (at most the length)"
            )
        records[path] = record
    return records


def _sink_record(value: object) -> SinkRecord | None:
    """`value` as a sink's record; None when no save writes it."""
    if type(value) is int:  # 0.2's first form: the length alone
        return {"length": value} if value >= 0 else None
    if not isinstance(value, dict) or not value.keys() <= {"length", "tail", "footer_at"}:
        return None
    length, tail, footer_at = value.get("length"), value.get("tail"), value.get("footer_at")
    if type(length) is not int or length < 0:
        return None
    record: SinkRecord = {"length": length}
    if tail is not None:
        if not isinstance(tail, str) or re.fullmatch(r"crc32:[0-9a-f]{8}", tail) is None:
            return None
        record["tail"] = tail
    elif length:
        return None  # every save records the tail of a sink that holds output
    if footer_at is not None:
        if type(footer_at) is not int or not 0 <= footer_at <= length:
            return None
        record["footer_at"] = footer_at
    return record


def _check_values(parsed: dict[str, Any], where: str) -> None:
    """Refuse values of the right type that no save writes: every reader checks them here,
    so `Resumable`, `inspect` and ``resumable status`` accept the same files."""
    if parsed["runs"] < 1:
        raise StateFileError(f"{where} is damaged: runs is {parsed['runs']}, below 1")
    for key in ("created_at", "saved_at"):
        try:
            datetime.fromisoformat(parsed[key])
        except ValueError:
            raise StateFileError(
                f"{where} is damaged: {key} is {parsed[key][:40]!r}, not an ISO 8601 time"
            ) from None


def fingerprint(progress: dict[str, Any], state: dict[str, Any]) -> bytes | None:
    """Bytes that are equal exactly when two (progress, state) pairs save the same; None if
    the state cannot be serialised."""
    try:
        return fingerprint_of(progress_bytes(progress), orjson.dumps(state, option=_SORTED))
    except TypeError:
        return None


def fingerprint_of(progress: bytes, state: bytes) -> bytes:
    """`fingerprint` from what a save serialised already: `progress_bytes` of the progress
    and `state_bytes` of the state."""
    return progress + b"\n" + state


def progress_bytes(progress: dict[str, Any]) -> bytes:
    """A progress snapshot as JSON, keys sorted (its fingerprint's half)."""
    return orjson.dumps(progress, option=_SORTED)


_SORTED = orjson.OPT_SORT_KEYS


def state_bytes(state: dict[str, Any], checked: bytes = b"") -> bytes | None:
    """`state` as a save writes it, keys sorted, checked as `encode` checks it (a tuple, a
    NaN would write as a list, a null: `StateNotSerializableError`); None if orjson cannot
    write it, which `encode` then explains.

    `checked`: the bytes of a state that passed the check. A state that writes exactly
    those bytes is not walked again (the walk is most of a save's Python on a small
    state); a value that writes as a checked one but would load as another type (a tuple
    where a list was) is then refused at the next rewrite, which walks it (`encode`).
    """
    try:
        data = orjson.dumps(state, option=_SORTED)
    except TypeError:
        check_state(state)  # the specific refusal, where it has one
        return None
    if data == checked:
        return data
    check_state(state)
    if b"null" in data:  # NaN and infinity come out as null: look for them only then
        _reject_non_finite(state, "")
    return data


def now_iso() -> str:
    """The current wall-clock time as ISO 8601 in UTC (freezegun controls it in tests)."""
    return datetime.now(timezone.utc).isoformat()


def now() -> datetime:
    """The current wall-clock time in UTC, for a save's ``saved_at`` (freezegun controls
    it in tests); `iso` writes it, as orjson would."""
    return datetime.now(timezone.utc)


def iso(moment: object) -> str:
    """`moment` (a datetime) as ISO 8601: orjson's `default` for the datetime subclass
    freezegun returns, which orjson does not write itself; raises TypeError otherwise."""
    if isinstance(moment, datetime):
        return moment.isoformat()
    raise TypeError


def _unserialisable(state: dict[str, Any], error: TypeError) -> StateNotSerializableError:
    key, value = _find_unserialisable(state, "")
    advice = (
        "Store JSON-ready values (dict with str keys, list, str, int, float, bool, None); "
        f"here {_a(type(value).__name__)}, which you could convert with str(), list() or int()."
    )
    return _refusal(key, f"cannot be saved as JSON: {error}", advice)


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _unsaveable_field(body: dict[str, Any], error: TypeError, where: str) -> StateFileError:
    """The library's own field of `body` that orjson refused, named with its value."""
    name = next(name for name, value in body.items() if not _serialisable(value))
    field, value = _find_unserialisable(body[name], name)
    return StateFileError(
        f"cannot save {where}: its field {field} is {shown(value)}, which the state file "
        f"cannot hold ({error}). No save writes such a value: it came from the state file "
        "this run resumed from, which was edited or damaged. Restore it from a backup, or "
        "start the job over with restart=True."
    )


def _too_deep(state: dict[str, Any]) -> StateNotSerializableError | None:
    """The error for a `state` that nests deeper than `MAX_STATE_DEPTH` levels or contains
    itself, naming its top-level key; None when it does neither. Walks without recursion."""
    # A stack of (container, depth, top-level key); `open_` holds the containers on the
    # current path, to tell a cycle from a deep tree.
    stack: list[tuple[Any, int, str]] = [(state, 1, "")]
    open_: dict[int, int] = {}  # id of a container on the path -> its depth
    path: list[int] = []
    while stack:
        value, depth, top = stack.pop()
        while path and open_[path[-1]] >= depth:  # left that container's subtree
            del open_[path.pop()]
        if id(value) in open_:
            return StateNotSerializableError(
                f"r.state{top} contains itself (a reference cycle), which JSON cannot hold. "
                "Store a copy, or the name of what it refers to.",
                key=top,
            )
        if depth > MAX_STATE_DEPTH:
            return StateNotSerializableError(
                f"r.state{top} nests deeper than the {MAX_STATE_DEPTH} levels a state file "
                "holds (counting r.state itself). Flatten it, e.g. store a path as a list "
                "of its keys, or keep it in a file of your own.",
                key=top,
            )
        open_[id(value)] = depth
        path.append(id(value))
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for name, child in reversed(list(children)):
            if isinstance(child, (dict, list, tuple)):
                where = top or f"[{name!r}]"
                stack.append((child, depth + 1, where))
    return None


def _too_large(state: dict[str, Any], size: int) -> StateNotSerializableError:
    state_size = len(orjson.dumps(state))
    return StateNotSerializableError(
        f"the state file would be {size / 2**20:.1f} MiB, more than the "
        f"{MAX_BYTES // 2**20} MiB a state file may hold; r.state makes "
        f"{state_size / 2**20:.1f} MiB of it. Keep bulky data in files of your own and "
        "put their names in r.state.",
        key="",
    )


def _find_unserialisable(value: Any, path: str) -> tuple[str, Any]:
    """Return the path and value of the first part of `value` orjson rejects."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}] ({_a(type(key).__name__)} key)", key
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


# -- what comes back as it went in ----------------------------------------------------------

# Exactly these types: orjson also writes dataclasses, datetimes, UUIDs, enums, tuples and
# subclasses of str, int, dict and list, which come back as other types (or not at all).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})
_STR_ONLY = frozenset({str})


def check_state(state: dict[str, Any]) -> None:
    """Refuse a value in `state` that a load would not give back as it is, naming where.

    JSON has dicts with str keys, lists, str, int, float, bool and None; orjson writes
    more (a datetime as a str, a tuple as a list, an enum as its value, a dataclass as an
    object), and they would come back as those. Non-finite floats and ints beyond 64 bits
    are left to `encode`, which finds them in orjson's output. The walk keeps its own stack,
    so a deep state is no RecursionError here, and stops at `MAX_STATE_DEPTH`, where a
    cycle or a deep tree gets its own error from `_too_deep`; a container whose
    values are all plain is checked in C (`issuperset` over `map(type, ...)`).
    """
    if type(state) is not dict:  # r.state = OrderedDict(...) would load as a dict
        raise _would_change("", state)
    # Each entry: a container, and its path as its parent's path and its own key or index,
    # joined only when needed (most containers turn out plain).
    # And its depth: the walk stops below MAX_STATE_DEPTH, where a cycle would never end.
    pending: list[tuple[dict[Any, Any] | list[Any], str, object, int]] = [(state, "", _TOP, 1)]
    while pending:
        container, parent, at, depth = pending.pop()
        if depth > MAX_STATE_DEPTH:
            raise _too_deep(state) or _would_change(_join(parent, at), container)
        if type(container) is dict:
            if not _STR_ONLY.issuperset(map(type, container)):
                key = next(k for k in container if type(k) is not str)
                raise _not_str_key(_join(parent, at), key)
            children: Iterable[Any] = container.values()
            entries: Iterable[tuple[object, Any]] = container.items()
        else:
            children, entries = container, enumerate(container)
        kinds = set(map(type, children))
        if kinds <= _PLAIN or (kinds == _DICT_ONLY and _plain_dicts(children)):
            continue
        path = _join(parent, at)
        for where, value in entries:
            kind = type(value)
            if kind in _PLAIN:
                continue
            if kind not in _CONTAINERS:
                raise _would_change(_join(path, where), value)
            pending.append((value, path, where, depth + 1))


_TOP = object()  # where r.state itself is: its path is ""
_DICT_ONLY = frozenset({dict})


def _plain_dicts(dicts: Iterable[dict[Any, Any]]) -> bool:
    """Whether all these dicts have str keys and plain values: rows of records checked in
    C at once, rather than a pass of the loop each."""
    keys = itertools.chain.from_iterable(dicts)
    values = itertools.chain.from_iterable(map(dict.values, dicts))
    return _STR_ONLY.issuperset(map(type, keys)) and _PLAIN.issuperset(map(type, values))


def _join(path: str, where: object) -> str:
    """The path of the value at key or index `where` inside the value at `path`."""
    return path if where is _TOP else f"{path}[{where!r}]"


def _a(noun: str) -> str:
    """`noun` with its indefinite article: "an int", "a str"."""
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _not_str_key(path: str, key: object) -> StateNotSerializableError:
    kind = type(key).__name__
    return StateNotSerializableError(
        f"r.state{path} has the key {key!r}, {_a(kind)}: JSON objects have str keys only, so "
        f"it would not come back as {_a(kind)}. Use str keys (e.g. str(key)), or store the "
        "pairs as a list of [key, value] lists.",
        key=f"{path}[{key!r}]",
    )


def _would_change(path: str, value: object) -> StateNotSerializableError:
    kind = type(value)
    own = kind.__module__ in ("builtins", "__main__")
    name = kind.__qualname__ if own else f"{kind.__module__}.{kind.__qualname__}"
    problem = (
        f"is {_a(name)}, which would not come back as one from the state file (JSON has "
        "dict with str keys, list, str, int, float, bool and None)"
    )
    return _refusal(path, problem, _how_to_convert(value))


def _refusal(path: str, problem: str, advice: str) -> StateNotSerializableError:
    """The error for the value at `path` in r.state: what is wrong with it, what to do."""
    return StateNotSerializableError(f"r.state{path} {problem}. {advice}", key=path)


def _how_to_convert(value: object) -> str:
    """Advice for storing `value` as plain JSON, by what it is."""
    if isinstance(value, tuple):
        return "Store a list instead: list(value), and tuple(...) when you read it back."
    if isinstance(value, Enum):
        return (
            "Store its value or name: value.value (or value.name), and rebuild the member "
            f"with {type(value).__name__}(...) when you read it back."
        )
    if isinstance(value, (datetime, date, time)):
        return (
            "Store value.isoformat(), and use "
            f"{type(value).__name__}.fromisoformat() when you read it back."
        )
    if isinstance(value, UUID):
        return "Store str(value), and uuid.UUID(...) when you read it back."
    if dataclasses.is_dataclass(value):
        return (
            "Store dataclasses.asdict(value), and rebuild it with "
            f"{type(value).__name__}(**data) when you read it back."
        )
    if isinstance(value, (set, frozenset)):
        return "Store a list instead: sorted(value) or list(value)."
    if isinstance(value, Mapping):
        return "Store a plain dict: dict(value)."
    for plain in (bool, int, float, str, list):
        if isinstance(value, plain):  # a subclass of a plain type
            return f"Store a plain {plain.__name__}: {plain.__name__}(value)."
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return "Convert it with value.tolist() (value.item() for a numpy scalar)."
    return "Convert it to one of those, e.g. with str() or int()."
