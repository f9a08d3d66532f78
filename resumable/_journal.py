"""The key journal: an append-only file of the keys of finished items, for keyed progress.

Keyed progress remembers the finished items by key, a str or an int. Rewriting all the
keys at every save would make a save cost time in proportion to every key ever finished;
instead each save appends the keys finished since the previous save, and the state file
records how many bytes of the journal that save commits to.

For a state file ``job.state``, the journal of generation *g* is ``job.state.keys-<g>``
(0 <= g <= `MAX_GENERATION`; a file named with a larger number is no journal and is
left alone). The state file names the generation and the committed length. Bytes past
that length (a record torn by kill -9, or appended by a save whose state file was never
written) are ignored when reading and cut off when the journal is next opened for
appending, which the caller does while holding the job's lock. `fold` writes all the keys
into the file of a new generation, so that a journal of many small records can be
replaced by a compact one.

The file is a sequence of records, each a 9-byte header and then its payload::

    offset  size  field
    0       1     magic byte: 0x4B ("K") for keys, 0x4A ("J") for the job record
    1       4     payload length n, unsigned little-endian, at most MAX_PAYLOAD (16 MiB)
    5       4     CRC-32 of bytes 0-4 and of the payload, unsigned little-endian
    9       n     payload, written by orjson: a JSON array of keys, or for the job
                  record {"job_id": "<32 lowercase hex digits>"}

Another `Kind` of journal has the same files and records under another name and magic
byte: the failure journal (`FAILURES`, ``job.state.failed-<g>``, records 0x46 "F", see
`resumable._failures`), whose payloads are JSON arrays of objects, which its reader
checks (`read_entries`, `JournalWriter.append_entries`, `fold_entries`).

The job record ties a journal to its job: the job id is random, made when the job
starts, and kept in the state file beside the generation. Every generation written by
format version 2 starts with the job record, and only there; a reader given the state
file's job id refuses a journal whose first record is not the job record of that id. A
job saved by version 1 has no id, and its journal no job record; it gets both when its
next save writes a new generation.

A key is a JSON string or a JSON integer, so the key ``"1"`` and the key ``1`` stay
distinct. Two kinds of key that JSON (or orjson) cannot hold as such are stored as a
one-entry object, which no plain key can be confused with:

- an int beyond the 64 bits orjson writes (below -2**63 or above 2**64 - 1) as
  ``{"int": "<hex digits>"}``, hex because Python limits decimal conversion of huge ints;
- a str with a lone surrogate (e.g. a file name decoded with ``surrogateescape``), which
  is not valid UTF-8, as ``{"str": "<hex of its UTF-8 bytes, surrogates passed>"}``.

Bounds: a key whose record payload would be over `MAX_PAYLOAD` is refused when written,
and a record whose header claims more is damage, found before anything is read. A
payload over `RECORD_BYTES` is checked against its CRC piece by piece before it is held
in memory, so a damaged length field costs a bounded read, never a large allocation.

What a damaged state file may still need: when the job resumes from ``job.state.bak``
because ``job.state`` cannot be read, the damaged file (set aside as
``job.state.corrupt-<time>`` at the first save) may name the backup's generation at a
greater length, or any later generation. So that it can still be repaired by hand, none
of those files is deleted or cut: the run deletes no generation from the backup's up,
and its first save writes all the keys into a new generation, above every file there,
instead of appending to the backup's; that generation becomes the job's first, so the
older files are never deleted afterwards either (as an earlier job's files are not). A
crash at any point of this leaves the damaged file in place (it is set aside only by a
save that succeeds) and every file it may name; at worst a new generation that no state
file names is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import orjson

from resumable._errors import StateFileError, StateWriteError, UsageError, describe_os_error
from resumable._store.durable import fsync_directory, fsync_file, set_mode

Key: TypeAlias = str | int
logger = logging.getLogger("resumable")

MAGIC = 0x4B
JOB_MAGIC = 0x4A
_PREFIX = struct.Struct("<BI")  # magic and payload length: the bytes the CRC covers first
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size
# The largest payload a record may have, so the largest key is 16 MiB - 2 bytes as JSON: far
# beyond any identifier, and small enough that reading a record never needs much memory.
MAX_PAYLOAD = 16 << 20
# The largest generation: a fold or a new job adds one, so no job comes near it, and
# every number a state file holds stays far inside the 64 bits it can write.
MAX_GENERATION = 2**32 - 1
# Records hold at most RECORD_KEYS keys, and are split further while their payload is over
# RECORD_BYTES (a single longer key keeps a record of its own). Reading then holds one
# small record at a time: orjson's parser briefly needs about 8 bytes per byte of payload
# (measured: 924 bytes per key loading 65,536 URL keys at once), and more records cost
# little (a few microseconds each).
RECORD_KEYS = 4_096
RECORD_BYTES = 1 << 20
# `fold_is_due`: fold once there are more than this many records and more than one record
# per this many keys; see its docstring for the arithmetic.
FOLD_MIN_RECORDS = 1_000
FOLD_KEYS_PER_RECORD = 32
_KEY_TYPES = frozenset({str, int})
_INT_TAG = "int"
_JOB_KEY = "job_id"
_STR_TAG = "str"
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_RESTORE = (
    "Restore the file from a backup, or start the job over (every item runs again): "
    "restart=True in Python, or `resumable reset` with the state file at the shell."
)


@dataclass(frozen=True)
class Kind:
    """A kind of journal: what its files are called, and the magic byte of its records."""

    suffix: str  # the journal of generation g is <state file>.<suffix>-<g>
    magic: int
    name: str  # in messages


KEYS = Kind("keys", MAGIC, "key journal")
# The records of items that failed (`resumable._failures`): a payload is a JSON array of
# objects, each a failure record or a success that clears one.
FAILURES = Kind("failed", 0x46, "failure journal")  # 0x46: "F"


@dataclass(frozen=True)
class JournalEntries:
    """The entries in the committed part of a journal of objects, in order."""

    entries: list[Any]
    records: int


@dataclass(frozen=True)
class JournalContents:
    """The keys in the committed part of a journal, and how many records held them."""

    keys: set[Key]
    records: int


def journal_path(state: Path, generation: int, kind: Kind = KEYS) -> Path:
    """The journal of `generation` for the state file `state`: ``<state>.keys-<generation>``
    (``.failed-`` for the failure journal)."""
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION:
        raise ValueError(
            f"a journal generation is an int >= 0 and <= {MAX_GENERATION}, got {generation!r}"
        )
    return state.with_name(f"{state.name}.{kind.suffix}-{generation}")


def journal_generations(state: Path, kind: Kind = KEYS) -> dict[int, Path]:
    """The journal files beside `state` that exist now, by generation.

    A name with a generation above `MAX_GENERATION` is no journal: it is left out (see
    `next_generation`), and nothing deletes it.
    """
    return _scan_generations(state, kind)[0]


def _scan_generations(state: Path, kind: Kind) -> tuple[dict[int, Path], list[Path]]:
    """The journal files beside `state` by generation, and the names beyond the bound."""
    prefix = f"{state.name}.{kind.suffix}-"
    pattern = re.compile(rf"{re.escape(prefix)}(0|[1-9][0-9]*)")
    found: dict[int, Path] = {}
    beyond: list[Path] = []
    try:
        with os.scandir(state.parent) as entries:
            for entry in entries:
                # A plain prefix test first: the directory may hold many other files.
                if entry.name.startswith(prefix) and (match := pattern.fullmatch(entry.name)):
                    # Compared as digits: Python refuses int() of more than 4,300 of them.
                    digits = match[1]
                    if len(digits) > len(str(MAX_GENERATION)) or int(digits) > MAX_GENERATION:
                        beyond.append(Path(entry.path))
                    else:
                        found[int(digits)] = Path(entry.path)
    except FileNotFoundError:
        pass
    return found, beyond


def next_generation(state: Path, *in_use: int, kind: Kind = KEYS) -> int:
    """A generation above those of every journal file beside `state` and of `in_use`.

    Files named beyond `MAX_GENERATION` are passed over, with a warning: no job writes
    them. `StateFileError` when the next generation would be beyond it.
    """
    found, beyond = _scan_generations(state, kind)
    for path in beyond:
        logger.warning(
            "%s: ignoring %s: its number is above %d, the largest journal generation, so "
            "no job wrote it. Move it away if it is not yours.",
            state,
            path.name,
            MAX_GENERATION,
        )
    highest = max([*found, *in_use], default=-1)
    if highest >= MAX_GENERATION:
        taken = found.get(highest, journal_path(state, highest, kind))
        raise StateFileError(
            f"no new {kind.name} generation is left for {state}: {taken.name} has the "
            f"largest one, {MAX_GENERATION:,}, which no job reaches by counting. Move that "
            "file away if the state file does not name it; otherwise start the job over "
            "with restart=True."
        )
    return highest + 1


def fold_is_due(records: int, keys: int) -> bool:
    """Whether a journal of `records` records holding `keys` keys is worth folding.

    Reading costs 5 to 10 us per record on top of its cost per key (0.2 to 1.5 us), and a
    fold rewrites every key once (1 to 4 us a key, fsync included; benchmarks/
    bench_journal.py). Folding once
    there are more than one record per `FOLD_KEYS_PER_RECORD` keys keeps the records'
    share of a read small, and since one save adds about one record, a fold comes at most
    once per keys / 32 saves: its cost spread over those saves is about 32 keys' worth
    each, not growing with the keys done. Below `FOLD_MIN_RECORDS` records (a few ms of
    reading) folding is never worth it.
    """
    return records > max(FOLD_MIN_RECORDS, keys // FOLD_KEYS_PER_RECORD)


def remove_stale_journals(state: Path, keep: Iterable[int], kind: Kind = KEYS) -> list[Path]:
    """Delete the journals of `state` whose generation is not in `keep`; return them.

    Keep every generation a state file still names: that of ``job.state`` and that of
    ``job.state.bak``, which the job may have to resume from. Call it while holding the
    job's lock. A file that cannot be deleted is left (it is harmless: nothing reads a
    generation no state file names, and `next_generation` passes over it).
    """
    kept = set(keep)
    removed: list[Path] = []
    for generation, path in sorted(journal_generations(state, kind).items()):
        if generation in kept:
            continue
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


# -- encoding ------------------------------------------------------------------------------


def check_keys(keys: list[Any]) -> None:
    """Raise `UsageError` unless every key is exactly a str or an int."""
    # One pass in C over the types; the loop below runs only to name the culprit.
    if set(map(type, keys)) <= _KEY_TYPES:
        return
    for key in keys:
        if type(key) not in _KEY_TYPES:
            raise UsageError(_bad_key_message(key))


def _bad_key_message(key: object) -> str:
    kind = type(key).__name__
    try:
        shown = repr(key)
    except Exception:  # a broken __repr__ must not hide the real problem
        shown = object.__repr__(key)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    message = (
        f"a key must be a str or an int, but the key function returned a {kind}: {shown}. "
        "Return a str or an int from the key function"
    )
    if isinstance(key, bool):
        return f"{message} (True would be the same key as 1, and False as 0)."
    if isinstance(key, (str, int)):
        return (
            f"{message}, e.g. str(key) or int(key): {kind} is a subclass of "
            f"{'str' if isinstance(key, str) else 'int'}, and it would come back from the "
            "journal as a plain value, which may not compare or hash like it."
        )
    return f"{message}, e.g. str(key)."


def encode_records(
    keys: Iterable[Key], record_bytes: int = RECORD_BYTES, max_payload: int = MAX_PAYLOAD
) -> bytes:
    """The records that hold `keys`: at most `RECORD_KEYS` keys each, split further while
    a payload is over `record_bytes`. `UsageError` if a key is not a str or an int, or if
    one key alone needs more than `max_payload` bytes."""
    batch = keys if type(keys) is list else list(keys)
    check_keys(batch)
    return b"".join(_records(batch, record_bytes, max_payload))


def encode_entries(entries: list[Any], kind: Kind) -> bytes:
    """The records of a journal of `kind` that hold `entries`, JSON-ready objects, split
    as keys are."""
    return b"".join(_records(entries, RECORD_BYTES, MAX_PAYLOAD, orjson.dumps, kind.magic))


def _records(
    keys: list[Any],
    record_bytes: int,
    max_payload: int,
    encode: Callable[[list[Any]], bytes] | None = None,
    magic: int = MAGIC,
) -> Iterator[bytes]:
    for start in range(0, len(keys), RECORD_KEYS):
        batch = keys[start : start + RECORD_KEYS]
        yield from _split_records(batch, record_bytes, max_payload, encode or _payload, magic)


def _split_records(
    keys: list[Any],
    record_bytes: int,
    max_payload: int,
    encode: Callable[[list[Any]], bytes],
    magic: int,
) -> Iterator[bytes]:
    payload = encode(keys)
    if len(payload) > record_bytes and len(keys) > 1:
        middle = len(keys) // 2
        yield from _split_records(keys[:middle], record_bytes, max_payload, encode, magic)
        yield from _split_records(keys[middle:], record_bytes, max_payload, encode, magic)
        return
    if len(payload) > max_payload:
        raise UsageError(
            f"a key of {len(payload) - 2:,} bytes is too long to record (a record holds at "
            f"most {max_payload:,} bytes). Return a shorter key from the key function, "
            "e.g. a hash of the long value."
        )
    yield _record(payload, magic)


def _payload(keys: list[Key]) -> bytes:
    try:
        return orjson.dumps(keys)
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, or a surrogate
        return orjson.dumps([tagged_key(key) for key in keys])


def tagged_key(key: Key) -> Key | dict[str, str]:
    """`key`, or the tagged object that stands for it when orjson cannot write it."""
    if isinstance(key, int):  # the keys were checked: no bool, no subclass
        if _INT64_MIN <= key <= _UINT64_MAX:
            return key
        return {_INT_TAG: format(key, "x")}
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return {_STR_TAG: key.encode("utf-8", "surrogatepass").hex()}
    return key


def _record(payload: bytes, magic: int = MAGIC) -> bytes:
    prefix = _PREFIX.pack(magic, len(payload))
    return prefix + _CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))) + payload


def new_job_id() -> str:
    """A random job id: 32 lowercase hex digits, as the job record holds it."""
    return secrets.token_hex(16)


def check_job_id(job_id: object) -> str:
    """`job_id` if it is a job id as `new_job_id` makes them; ValueError otherwise."""
    if type(job_id) is not str or not _JOB_ID.fullmatch(job_id):
        shown = repr(job_id)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"a job id is 32 lowercase hex digits, got {shown}")
    return job_id


def job_record(job_id: str) -> bytes:
    """The record that starts every generation of the journal of the job `job_id`."""
    return _record(orjson.dumps({_JOB_KEY: check_job_id(job_id)}), JOB_MAGIC)


# -- reading -------------------------------------------------------------------------------


class _DamageError(Exception):
    """A record that is not what the writer wrote; the message says what is wrong."""


def read_journal(path: Path, length: int, job_id: str | None = None) -> JournalContents:
    """The keys in the first `length` bytes of the journal at `path`.

    Every record in those bytes is checked (magic byte, length, CRC-32, the JSON and the
    key types). Bytes past `length` are never read. A journal shorter than `length`, or
    damaged anywhere before it, raises `StateFileError`: those bytes were committed by a
    save, so they are never silently dropped. A `length` of 0 needs no file at all.
    With the state file's `job_id`, the journal must start with the job record of that
    id; without one (a job saved by format version 1), it must hold no job record.
    """
    keys: set[Key] = set()
    records = _read_records(
        path, length, job_id, KEYS, lambda payload: keys.update(_decode_payload(payload))
    )
    return JournalContents(keys, records)


def read_entries(path: Path, length: int, job_id: str | None, kind: Kind) -> JournalEntries:
    """The entries in the first `length` bytes of the journal of objects at `path`, in
    order; checked and refused as `read_journal` does, but for the types of the entries,
    which the caller checks."""
    entries: list[Any] = []
    records = _read_records(
        path, length, job_id, kind, lambda payload: entries.extend(_decode_entries(payload))
    )
    return JournalEntries(entries, records)


def _read_records(
    path: Path, length: int, job_id: str | None, kind: Kind, take: Callable[[bytes], None]
) -> int:
    """Hand each payload in the first `length` bytes of the journal at `path` to `take`,
    once its record is checked; return how many there were (the job record aside)."""
    _check_length(length)
    if length == 0:
        return 0
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except FileNotFoundError:
        raise StateFileError(
            f"the {kind.name} {path} is missing, but the state file counts {length:,} bytes "
            f"of it as saved progress. {_RESTORE}"
        ) from None
    except OSError as error:
        raise StateFileError(f"the {kind.name} {path} cannot be read: {error.strerror}") from None
    records = 0
    offset = 0
    with file:
        try:
            size = os.fstat(file.fileno()).st_size
            if size < length:
                raise StateFileError(
                    f"the {kind.name} {path} holds {size:,} bytes, fewer than the {length:,} "
                    f"that the state file counts as saved progress: it was truncated or "
                    f"replaced. {_RESTORE}"
                )
            while offset < length:
                magic, payload = _read_record(file, length - offset, kind.magic)
                if magic == JOB_MAGIC:
                    _check_job(path, offset, _decode_job(payload), job_id, kind)
                else:
                    if offset == 0 and job_id is not None:
                        raise _foreign(path, job_id, None, kind)
                    take(payload)
                    records += 1
                offset += HEADER_SIZE + len(payload)
        except _DamageError as damage:
            raise StateFileError(
                f"the {kind.name} {path} is damaged at byte {offset:,}: {damage}. The state "
                f"file counts its first {length:,} bytes as saved progress. {_RESTORE}"
            ) from None
        except OSError as error:
            raise StateFileError(
                f"the {kind.name} {path} cannot be read: {error.strerror}"
            ) from None
    return records


def _check_job(path: Path, offset: int, found: str, job_id: str | None, kind: Kind) -> None:
    """The job record `found` at `offset`: only the first record, and of the state's job."""
    if offset:
        raise _DamageError("a job record stands here, and one may only start the journal")
    if found != job_id:
        raise _foreign(path, job_id, found, kind)


def _foreign(path: Path, expected: str | None, found: str | None, kind: Kind) -> StateFileError:
    """The journal at `path` is tied to job `found`, not to the state file's `expected`."""
    state = path.with_name(path.name.rpartition(f".{kind.suffix}-")[0])
    journal_says = f"its job id is {found}" if found else "it names no job"
    state_says = f"job id {expected}" if expected else "no job id (format version 1)"
    return StateFileError(
        f"the {kind.name} {path} is not the journal of the state file {state}: "
        f"{journal_says}, and the state file has {state_says}. It was copied or moved here "
        f"from another job. {_RESTORE}"
    )


def _read_record(file: io.BufferedReader, left: int, expected: int = MAGIC) -> tuple[int, bytes]:
    """The magic byte and payload of the record at the file's position, CRC checked;
    `left` committed bytes remain, and `expected` is the magic byte of the journal's own
    records (the job record's may stand there too)."""
    if left < HEADER_SIZE:
        raise _DamageError(f"the last {left} committed bytes are too few for a record header")
    header = file.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise _DamageError("the file ended inside a record header")
    magic: int
    size: int
    magic, size = _PREFIX.unpack_from(header)
    if magic != expected and magic != JOB_MAGIC:
        raise _DamageError(
            f"no record starts here (byte 0x{magic:02x}, not 0x{expected:02x} or 0x{JOB_MAGIC:02x})"
        )
    # Both checked before a byte of the payload is read, so a damaged length field never
    # makes the reader take more memory than the largest record needs.
    if size > MAX_PAYLOAD:
        raise _DamageError(
            f"the record claims {size:,} bytes, more than the {MAX_PAYLOAD:,} a record holds"
        )
    if size > left - HEADER_SIZE:
        raise _DamageError(
            f"the record claims {size:,} bytes, more than the {left - HEADER_SIZE:,} "
            "committed bytes after its header"
        )
    (stored,) = _CRC.unpack_from(header, _PREFIX.size)
    start = zlib.crc32(header[: _PREFIX.size])
    if size > RECORD_BYTES:
        # Only a single long key makes such a record: check its CRC a piece at a time
        # first, so a damaged one is never held in memory whole.
        _check_crc_in_pieces(file, size, start, stored)
    payload = file.read(size)
    if len(payload) < size:
        raise _DamageError("the file ended inside a record")
    actual = zlib.crc32(payload, start)
    if stored != actual:
        raise _DamageError(f"its CRC-32 is {stored:08x}, its content gives {actual:08x}")
    return magic, payload


def _check_crc_in_pieces(file: io.BufferedReader, size: int, crc: int, stored: int) -> None:
    """Read `size` bytes into one buffer of at most `RECORD_BYTES`, a piece at a time, and
    check them against the CRC `stored`; leave the file where it was."""
    position = file.tell()
    buffer = memoryview(bytearray(min(size, RECORD_BYTES)))
    left = size
    while left:
        read = file.readinto(buffer[: min(left, len(buffer))])
        if not read:
            raise _DamageError("the file ended inside a record")
        crc = zlib.crc32(buffer[:read], crc)
        left -= read
    if stored != crc:
        raise _DamageError(f"its CRC-32 is {stored:08x}, its content gives {crc:08x}")
    file.seek(position)


def _decode_job(payload: bytes) -> str:
    """The job id in a job record's payload."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise _DamageError(f"its job record is not valid JSON ({error})") from None
    if type(decoded) is not dict or decoded.keys() != {_JOB_KEY}:
        raise _DamageError(f'its job record is not an object of one key, "{_JOB_KEY}"')
    try:
        return check_job_id(decoded[_JOB_KEY])
    except ValueError as error:
        raise _DamageError(f"its job record holds no job id: {error}") from None


def _decode_entries(payload: bytes, expected: str = "an array") -> list[Any]:
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise _DamageError(f"its payload is not valid JSON ({error})") from None
    if type(decoded) is not list:
        raise _DamageError(f"its payload is a JSON {type(decoded).__name__}, not {expected}")
    return decoded


def _decode_payload(payload: bytes) -> list[Key]:
    decoded = _decode_entries(payload, "an array of keys")
    try:
        # Joining checks in C that every element is a str, the common case, several times
        # faster than collecting the types; the joined string is shorter than the payload.
        "".join(decoded)
    except TypeError:
        if not set(map(type, decoded)) <= _KEY_TYPES:
            return [_decode_key(value) for value in decoded]
    return decoded


def _decode_key(value: object) -> Key:
    try:
        return key_from_tagged(value)
    except ValueError as error:
        raise _DamageError(f"its payload holds {error}") from None


def key_from_tagged(value: object) -> Key:
    """The key that `value`, as `tagged_key` wrote it, stands for; ValueError if none."""
    if type(value) is str or type(value) is int:
        return value
    if type(value) is dict and len(value) == 1:
        tag, digits = next(iter(value.items()))
        key: Key | None = None
        if type(digits) is str:
            try:
                if tag == _INT_TAG:
                    key = int(digits, 16)
                elif tag == _STR_TAG:
                    key = bytes.fromhex(digits).decode("utf-8", "surrogatepass")
            except ValueError:  # UnicodeDecodeError is a ValueError
                pass
        # Only the form tagged_key writes: a tag around a key JSON holds as it is
        # ({"str": ""}, {"int": "5"}) was written by no save, so it is damage.
        if key is not None and tagged_key(key) == value:
            return key
    raise ValueError(f"{shown(value)}, which is not a key")


def _check_length(length: int) -> None:
    if type(length) is not int or length < 0:
        raise ValueError(f"a journal length is an int >= 0, got {length!r}")


# -- writing -------------------------------------------------------------------------------


class JournalWriter:
    """Appends records to one journal file and flushes each append to the disk.

    Open it with `JournalWriter.open` while holding the job's lock; only one writer may
    work on a journal at a time. After a failed append it refuses further appends.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        length: int,
        *,
        new_file: bool,
        job_id: str | None = None,
        kind: Kind = KEYS,
    ) -> None:
        """Use `JournalWriter.open`: it checks and positions the file."""
        self.path = path
        self.kind = kind
        self._fd: int | None = fd
        self._length = length
        self._job_id = job_id
        self._new_file = new_file  # its directory entry is not flushed yet
        self._failure: BaseException | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        length: int,
        mode: int | None = None,
        job_id: str | None = None,
        kind: Kind = KEYS,
    ) -> JournalWriter:
        """Open the journal at `path` whose committed length is `length`, for appending.

        Bytes past `length` are cut off. A missing file is created when `length` is 0,
        with the permission bits `mode` when given;
        otherwise a missing or shorter file raises `StateFileError`, and a file that cannot
        be opened or cut raises `StateWriteError`. With `job_id`, an append to an empty
        journal writes the job record first.
        """
        _check_length(length)
        if job_id is not None:
            check_job_id(job_id)
        flags = os.O_WRONLY | _BINARY
        new_file = False
        try:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                if length:
                    raise StateFileError(
                        f"the {kind.name} {path} is missing, but the state file counts "
                        f"{length:,} bytes of it as saved progress. {_RESTORE}"
                    ) from None
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                new_file = True
        except OSError as error:
            raise StateWriteError(
                f"cannot open the {kind.name} {path} for writing: {describe_os_error(error)}. "
                "Check that this user may write to it and to its directory.",
                errno=error.errno,
            ) from error
        try:
            if new_file:
                set_mode(fd, mode)
            size = os.fstat(fd).st_size
            if size < length:
                raise StateFileError(
                    f"the {kind.name} {path} holds {size:,} bytes, fewer than the {length:,} "
                    f"that the state file counts as saved progress: it was truncated or "
                    f"replaced. {_RESTORE}"
                )
            if size > length:
                os.ftruncate(fd, length)  # a torn record, or keys no state file committed
            os.lseek(fd, length, os.SEEK_SET)
        except OSError as error:
            os.close(fd)
            raise StateWriteError(
                f"cannot cut the {kind.name} {path} back to its committed {length:,} bytes: "
                f"{describe_os_error(error)}",
                errno=error.errno,
            ) from error
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, length, new_file=new_file, job_id=job_id, kind=kind)

    @property
    def length(self) -> int:
        """The journal's length after the last successful append: what to commit."""
        return self._length

    def append(self, keys: Iterable[Key]) -> int:
        """Append `keys` as one record, flush it to the disk, and return the new length.

        (A batch of more than `RECORD_KEYS` keys takes several records, written and flushed
        together.) An empty batch writes nothing. A key that is not a str or an int raises
        `UsageError` before anything is written. A write or flush error raises
        `StateWriteError`, and so does every later append: after a failed fsync the kernel
        may have dropped the data it had accepted and forgotten the error, so a retried
        fsync could report success for bytes that never reached the disk ("fsyncgate").
        """
        batch = keys if type(keys) is list else list(keys)
        fd = self._writable("keys")
        if not batch:
            return self._length
        return self._append(fd, encode_records(batch), f"{len(batch):,} finished keys", "keys")

    def append_entries(self, entries: list[Any]) -> int:
        """Append `entries`, JSON-ready objects, as `append` appends keys, to a journal of
        objects (such as `FAILURES`); return the new length."""
        fd = self._writable("records")
        if not entries:
            return self._length
        data = encode_entries(entries, self.kind)
        return self._append(fd, data, f"{len(entries):,} entries", "records")

    def _writable(self, things: str) -> int:
        fd = self._fd
        if fd is None:
            raise UsageError(f"the {self.kind.name} {self.path} is closed: open it again to append")
        if self._failure is not None:
            raise StateWriteError(
                f"the {self.kind.name} {self.path} takes no more {things} after an earlier "
                f"append failed ({describe_os_error(self._failure)}): its bytes past the last "
                "commit cannot be trusted. Open it again at its committed length to go on.",
                errno=getattr(self._failure, "errno", None),
            )
        return fd

    def _append(self, fd: int, data: bytes, what: str, things: str) -> int:
        if self._length == 0 and self._job_id is not None:
            data = job_record(self._job_id) + data
        try:
            _write_all(fd, data)
            fsync_file(fd)
            if self._new_file:
                fsync_directory(self.path.parent)
                self._new_file = False
        except BaseException as error:
            self._failure = error
            if isinstance(error, OSError):
                raise StateWriteError(
                    f"could not record {what} in the {self.kind.name} {self.path}: "
                    f"{describe_os_error(error)}. The {things} of earlier saves are intact.",
                    errno=error.errno,
                ) from error
            raise
        self._length += len(data)
        return self._length

    def close(self) -> None:
        """Close the file; safe to call twice. Appends were flushed when they returned."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # Every append was fsynced already, so an error closing reports nothing new.
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def fold(
    path: Path, keys: Iterable[Key], mode: int | None = None, job_id: str | None = None
) -> int:
    """Write `keys` into a new journal file at `path`, flushed, and return its length.
    With `mode`, the file gets those permission bits; with `job_id`, the file starts with
    that job's record.

    The file must not exist: a fold writes a new generation (see `next_generation`) and
    never touches the one in use. Once the state file names the new generation, the old
    one can go (`remove_stale_journals`). On any error the new file is removed again and
    `StateWriteError` is raised; the generation in use is unchanged.
    """
    batch = keys if type(keys) is list else list(keys)
    check_keys(batch)
    return _fold_records(path, _records(batch, RECORD_BYTES, MAX_PAYLOAD), mode, job_id, KEYS)


def fold_entries(
    path: Path, entries: list[Any], mode: int | None, job_id: str | None, kind: Kind
) -> int:
    """Write `entries` into a new journal file of `kind` at `path`, as `fold` writes keys."""
    records = _records(entries, RECORD_BYTES, MAX_PAYLOAD, orjson.dumps, kind.magic)
    return _fold_records(path, records, mode, job_id, kind)


def _fold_records(
    path: Path, records: Iterator[bytes], mode: int | None, job_id: str | None, kind: Kind
) -> int:
    first = b"" if job_id is None else job_record(job_id)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
    except OSError as error:
        reason = (
            "the file exists already, and a fold only writes a new generation; choose one "
            "that no file has (next_generation)"
            if error.errno == errno.EEXIST
            else describe_os_error(error)
        )
        raise StateWriteError(
            f"cannot write the folded {kind.name} {path}: {reason}", errno=error.errno
        ) from error
    length = 0
    try:
        try:
            set_mode(fd, mode)
            _write_all(fd, first)
            length = len(first)
            # Record by record, so the whole journal never sits in memory as bytes.
            for record in records:
                _write_all(fd, record)
                length += len(record)
            fsync_file(fd)
        finally:
            os.close(fd)
        fsync_directory(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(error, OSError):
            raise StateWriteError(
                f"could not write the folded {kind.name} {path}: {describe_os_error(error)}. "
                "The journal in use is unchanged.",
                errno=error.errno,
            ) from error
        raise
    return length


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def generation_field(data: Mapping[str, Any], name: str, owner: str) -> int:
    """``data[name]`` as a journal generation (0 to `MAX_GENERATION`), or a ValueError
    naming the field as ``f"{owner} {name}"``."""
    value = count_field(data, name, owner)
    if value > MAX_GENERATION:
        raise ValueError(
            f"{owner} {name} must be at most {MAX_GENERATION}, the largest journal "
            f"generation, got {shown(value)}"
        )
    return value


def count_field(data: Mapping[str, Any], name: str, owner: str) -> int:
    """``data[name]`` as a whole number >= 0, or a ValueError naming the field."""
    value = data.get(name)
    if type(value) is not int or value < 0:
        raise ValueError(f"{owner} {name} must be a whole number >= 0, got {shown(value)}")
    return value


def shown(value: object) -> str:
    """`value` for a message: an int too long to print (Python refuses str() of more than
    4,300 digits) by its size, anything else cut to 60 characters."""
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
