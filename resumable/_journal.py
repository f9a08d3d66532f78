"""The key journal: an append-only file of the keys of finished items, for keyed progress.

Keyed progress remembers the finished items by key, a str or an int. Rewriting all the
keys at every save would make a save cost time in proportion to every key ever finished;
instead each save appends the keys finished since the previous save, and the state file
records how many bytes of the journal that save commits to.

For a state file ``job.state``, the journal of generation *g* is ``job.state.keys-<g>``.
The state file names the generation and the committed length. Bytes past that length (a
record torn by kill -9, or appended by a save whose state file was never written) are
ignored when reading and cut off when the journal is next opened for appending, which the
caller does while holding the job's lock. `fold` writes all the keys into the file of a
new generation, so that a journal of many small records can be replaced by a compact one.

The file is a sequence of records, each a 9-byte header and then its payload::

    offset  size  field
    0       1     magic byte 0x4B ("K")
    1       4     payload length n, unsigned little-endian
    5       4     CRC-32 of bytes 0-4 and of the payload, unsigned little-endian
    9       n     payload: a JSON array of keys, written by orjson

A key is a JSON string or a JSON integer, so the key ``"1"`` and the key ``1`` stay
distinct. Two kinds of key that JSON (or orjson) cannot hold as such are stored as a
one-entry object, which no plain key can be confused with:

- an int beyond the 64 bits orjson writes (below -2**63 or above 2**64 - 1) as
  ``{"int": "<hex digits>"}``, hex because Python limits decimal conversion of huge ints;
- a str with a lone surrogate (e.g. a file name decoded with ``surrogateescape``), which
  is not valid UTF-8, as ``{"str": "<hex of its UTF-8 bytes, surrogates passed>"}``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeAlias

import orjson

from resumable._durable import fsync_directory, fsync_file, set_mode
from resumable._errors import StateFileError, StateWriteError, UsageError, describe_os_error

Key: TypeAlias = str | int

MAGIC = 0x4B
_PREFIX = struct.Struct("<BI")  # magic and payload length: the bytes the CRC covers first
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size
MAX_PAYLOAD = 0xFFFF_FFFF  # what the 4-byte length field can say
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
_STR_TAG = "str"
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_RESTORE = (
    "Restore the file from a backup, or pass restart=True to start the job over "
    "(every item runs again)."
)


@dataclass(frozen=True)
class JournalContents:
    """The keys in the committed part of a journal, and how many records held them."""

    keys: set[Key]
    records: int


def journal_path(state: Path, generation: int) -> Path:
    """The journal of `generation` for the state file `state`: ``<state>.keys-<generation>``."""
    if type(generation) is not int or generation < 0:
        raise ValueError(f"a journal generation is an int >= 0, got {generation!r}")
    return state.with_name(f"{state.name}.keys-{generation}")


def journal_generations(state: Path) -> dict[int, Path]:
    """The journal files beside `state` that exist now, by generation."""
    prefix = f"{state.name}.keys-"
    pattern = re.compile(rf"{re.escape(prefix)}(0|[1-9][0-9]*)")
    found: dict[int, Path] = {}
    try:
        with os.scandir(state.parent) as entries:
            for entry in entries:
                # A plain prefix test first: the directory may hold many other files.
                if entry.name.startswith(prefix) and (match := pattern.fullmatch(entry.name)):
                    found[int(match[1])] = Path(entry.path)
    except FileNotFoundError:
        pass
    return found


def next_generation(state: Path, *in_use: int) -> int:
    """A generation above those of every journal file beside `state` and of `in_use`."""
    return max([*journal_generations(state), *in_use], default=-1) + 1


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


def remove_stale_journals(state: Path, keep: Iterable[int]) -> list[Path]:
    """Delete the journals of `state` whose generation is not in `keep`; return them.

    Keep every generation a state file still names: that of ``job.state`` and that of
    ``job.state.bak``, which the job may have to resume from. Call it while holding the
    job's lock. A file that cannot be deleted is left (it is harmless: nothing reads a
    generation no state file names, and `next_generation` passes over it).
    """
    kept = set(keep)
    removed: list[Path] = []
    for generation, path in sorted(journal_generations(state).items()):
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


def _records(keys: list[Key], record_bytes: int, max_payload: int) -> Iterator[bytes]:
    for start in range(0, len(keys), RECORD_KEYS):
        yield from _split_records(keys[start : start + RECORD_KEYS], record_bytes, max_payload)


def _split_records(keys: list[Key], record_bytes: int, max_payload: int) -> Iterator[bytes]:
    payload = _payload(keys)
    if len(payload) > record_bytes and len(keys) > 1:
        middle = len(keys) // 2
        yield from _split_records(keys[:middle], record_bytes, max_payload)
        yield from _split_records(keys[middle:], record_bytes, max_payload)
        return
    if len(payload) > max_payload:
        raise UsageError(
            f"a key of {len(payload) - 2:,} bytes is too long to record (a record holds at "
            f"most {max_payload:,} bytes). Return a shorter key from the key function, "
            "e.g. a hash of the long value."
        )
    yield _record(payload)


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


def _record(payload: bytes) -> bytes:
    prefix = _PREFIX.pack(MAGIC, len(payload))
    return prefix + _CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))) + payload


# -- reading -------------------------------------------------------------------------------


class _DamageError(Exception):
    """A record that is not what the writer wrote; the message says what is wrong."""


def read_journal(path: Path, length: int) -> JournalContents:
    """The keys in the first `length` bytes of the journal at `path`.

    Every record in those bytes is checked (magic byte, length, CRC-32, the JSON and the
    key types). Bytes past `length` are never read. A journal shorter than `length`, or
    damaged anywhere before it, raises `StateFileError`: those bytes were committed by a
    save, so they are never silently dropped. A `length` of 0 needs no file at all.
    """
    _check_length(length)
    keys: set[Key] = set()
    if length == 0:
        return JournalContents(keys, 0)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except FileNotFoundError:
        raise StateFileError(
            f"the key journal {path} is missing, but the state file counts {length:,} bytes "
            f"of it as saved progress. {_RESTORE}"
        ) from None
    except OSError as error:
        raise StateFileError(f"the key journal {path} cannot be read: {error.strerror}") from None
    records = 0
    offset = 0
    with file:
        try:
            size = os.fstat(file.fileno()).st_size
            if size < length:
                raise StateFileError(
                    f"the key journal {path} holds {size:,} bytes, fewer than the {length:,} "
                    f"that the state file counts as saved progress: it was truncated or "
                    f"replaced. {_RESTORE}"
                )
            while offset < length:
                offset += _read_record(file, length - offset, keys)
                records += 1
        except _DamageError as damage:
            raise StateFileError(
                f"the key journal {path} is damaged at byte {offset:,}: {damage}. The state "
                f"file counts its first {length:,} bytes as saved progress. {_RESTORE}"
            ) from None
        except OSError as error:
            raise StateFileError(
                f"the key journal {path} cannot be read: {error.strerror}"
            ) from None
    return JournalContents(keys, records)


def _read_record(file: BinaryIO, left: int, keys: set[Key]) -> int:
    """Read the record at the file's position into `keys`; `left` committed bytes remain.

    Returns the record's size.
    """
    if left < HEADER_SIZE:
        raise _DamageError(f"the last {left} committed bytes are too few for a record header")
    header = file.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise _DamageError("the file ended inside a record header")
    magic: int
    size: int
    magic, size = _PREFIX.unpack_from(header)
    if magic != MAGIC:
        raise _DamageError(f"no record starts here (byte 0x{magic:02x}, not 0x{MAGIC:02x})")
    if size > left - HEADER_SIZE:
        raise _DamageError(
            f"the record claims {size:,} bytes, more than the {left - HEADER_SIZE:,} "
            "committed bytes after its header"
        )
    payload = file.read(size)
    if len(payload) < size:
        raise _DamageError("the file ended inside a record")
    (stored,) = _CRC.unpack_from(header, _PREFIX.size)
    actual = zlib.crc32(payload, zlib.crc32(header[: _PREFIX.size]))
    if stored != actual:
        raise _DamageError(f"its CRC-32 is {stored:08x}, its content gives {actual:08x}")
    keys.update(_decode_payload(payload))
    return HEADER_SIZE + size


def _decode_payload(payload: bytes) -> list[Key]:
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise _DamageError(f"its payload is not valid JSON ({error})") from None
    if type(decoded) is not list:
        raise _DamageError(f"its payload is a JSON {type(decoded).__name__}, not an array of keys")
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
        if type(digits) is str:
            try:
                if tag == _INT_TAG:
                    return int(digits, 16)
                if tag == _STR_TAG:
                    return bytes.fromhex(digits).decode("utf-8", "surrogatepass")
            except ValueError:  # UnicodeDecodeError is a ValueError
                pass
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ValueError(f"{shown}, which is not a key")


def _check_length(length: int) -> None:
    if type(length) is not int or length < 0:
        raise ValueError(f"a journal length is an int >= 0, got {length!r}")


# -- writing -------------------------------------------------------------------------------


class JournalWriter:
    """Appends records to one journal file and flushes each append to the disk.

    Open it with `JournalWriter.open` while holding the job's lock; only one writer may
    work on a journal at a time. After a failed append it refuses further appends.
    """

    def __init__(self, path: Path, fd: int, length: int, *, new_file: bool) -> None:
        """Use `JournalWriter.open`: it checks and positions the file."""
        self.path = path
        self._fd: int | None = fd
        self._length = length
        self._new_file = new_file  # its directory entry is not flushed yet
        self._failure: BaseException | None = None

    @classmethod
    def open(cls, path: Path, length: int, mode: int | None = None) -> JournalWriter:
        """Open the journal at `path` whose committed length is `length`, for appending.

        Bytes past `length` are cut off. A missing file is created when `length` is 0,
        with the permission bits `mode` when given;
        otherwise a missing or shorter file raises `StateFileError`, and a file that cannot
        be opened or cut raises `StateWriteError`.
        """
        _check_length(length)
        flags = os.O_WRONLY | _BINARY
        new_file = False
        try:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                if length:
                    raise StateFileError(
                        f"the key journal {path} is missing, but the state file counts "
                        f"{length:,} bytes of it as saved progress. {_RESTORE}"
                    ) from None
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                new_file = True
        except OSError as error:
            raise StateWriteError(
                f"cannot open the key journal {path} for writing: {describe_os_error(error)}. "
                "Check that this user may write to it and to its directory.",
                errno=error.errno,
            ) from error
        try:
            if new_file:
                set_mode(fd, mode)
            size = os.fstat(fd).st_size
            if size < length:
                raise StateFileError(
                    f"the key journal {path} holds {size:,} bytes, fewer than the {length:,} "
                    f"that the state file counts as saved progress: it was truncated or "
                    f"replaced. {_RESTORE}"
                )
            if size > length:
                os.ftruncate(fd, length)  # a torn record, or keys no state file committed
            os.lseek(fd, length, os.SEEK_SET)
        except OSError as error:
            os.close(fd)
            raise StateWriteError(
                f"cannot cut the key journal {path} back to its committed {length:,} bytes: "
                f"{describe_os_error(error)}",
                errno=error.errno,
            ) from error
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, length, new_file=new_file)

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
        fd = self._fd
        if fd is None:
            raise UsageError(f"the key journal {self.path} is closed: open it again to append")
        if self._failure is not None:
            raise StateWriteError(
                f"the key journal {self.path} takes no more keys after an earlier append "
                f"failed ({describe_os_error(self._failure)}): its bytes past the last commit "
                "cannot be trusted. Open it again at its committed length to go on.",
                errno=getattr(self._failure, "errno", None),
            )
        if not batch:
            return self._length
        data = encode_records(batch)
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
                    f"could not record {len(batch):,} finished keys in the key journal "
                    f"{self.path}: {describe_os_error(error)}. The keys of earlier saves are "
                    "intact.",
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


def fold(path: Path, keys: Iterable[Key], mode: int | None = None) -> int:
    """Write `keys` into a new journal file at `path`, flushed, and return its length.
    With `mode`, the file gets those permission bits.

    The file must not exist: a fold writes a new generation (see `next_generation`) and
    never touches the one in use. Once the state file names the new generation, the old
    one can go (`remove_stale_journals`). On any error the new file is removed again and
    `StateWriteError` is raised; the generation in use is unchanged.
    """
    batch = keys if type(keys) is list else list(keys)
    check_keys(batch)
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
            f"cannot write the folded key journal {path}: {reason}", errno=error.errno
        ) from error
    length = 0
    try:
        try:
            set_mode(fd, mode)
            # Record by record, so the whole journal never sits in memory as bytes.
            for record in _records(batch, RECORD_BYTES, MAX_PAYLOAD):
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
                f"could not write the folded key journal {path}: {describe_os_error(error)}. The "
                "journal in use is unchanged.",
                errno=error.errno,
            ) from error
        raise
    return length


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
