"""The record format of a journal, over bytes: what a save appends and a reader checks.

A journal is a sequence of records, each a 9-byte header and then its payload::

    offset  size  field
    0       1     magic byte: 0x4B ("K") for keys, 0x4A ("J") for the job record
    1       4     payload length n, unsigned little-endian, at most MAX_PAYLOAD (16 MiB)
    5       4     CRC-32 of bytes 0-4 and of the payload, unsigned little-endian
    9       n     payload, written by orjson: a JSON array of keys, or for the job
                  record {"job_id": "<32 lowercase hex digits>"}

Another `Kind` of journal has the same records under another name and magic byte: the
failure journal (`FAILURES`, records 0x46 "F", see `resumable._failures`), whose payloads
are JSON arrays of objects, which its reader checks. Keys are written as `resumable._keys`
says.

The job record ties a journal to its job: the job id is random, made when the job starts,
and kept in the state file beside the generation (`resumable._store.journal_files`).

Bounds: a key whose record payload would be over `MAX_PAYLOAD` is refused when written,
and a record whose header claims more is damage, found before anything is read. A
payload over `RECORD_BYTES` is checked against its CRC piece by piece before it is held
in memory, so a damaged length field costs a bounded read, never a large allocation.

This module makes no system call: it encodes to bytes and decodes from a binary stream
(an open file, or an `io.BytesIO`).
"""

from __future__ import annotations

import io
import re
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from resumable._errors import UsageError
from resumable._keys import KEY_TYPES, Key, check_keys, key_from_tagged, tagged_key

MAGIC = 0x4B
JOB_MAGIC = 0x4A
_PREFIX = struct.Struct("<BI")  # magic and payload length: the bytes the CRC covers first
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size
# The largest payload a record may have, so the largest key is 16 MiB - 2 bytes as JSON: far
# beyond any identifier, and small enough that reading a record never needs much memory.
MAX_PAYLOAD = 16 << 20
# Records hold at most RECORD_KEYS keys, and are split further while their payload is over
# RECORD_BYTES (a single longer key keeps a record of its own). Reading then holds one
# small record at a time: orjson's parser briefly needs about 8 bytes per byte of payload
# (measured: 924 bytes per key loading 65,536 URL keys at once), and more records cost
# little (a few microseconds each).
RECORD_KEYS = 4_096
RECORD_BYTES = 1 << 20
_JOB_KEY = "job_id"
_JOB_ID = re.compile(r"[0-9a-f]{32}")


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


# -- encoding ------------------------------------------------------------------------------


def encode_records(
    keys: Iterable[Key], record_bytes: int = RECORD_BYTES, max_payload: int = MAX_PAYLOAD
) -> bytes:
    """The records that hold `keys`: at most `RECORD_KEYS` keys each, split further while
    a payload is over `record_bytes`. `UsageError` if a key is not a str or an int, or if
    one key alone needs more than `max_payload` bytes."""
    batch = keys if type(keys) is list else list(keys)
    check_keys(batch)
    return b"".join(iter_records(batch, record_bytes, max_payload))


def encode_entries(entries: list[Any], kind: Kind) -> bytes:
    """The records of a journal of `kind` that hold `entries`, JSON-ready objects, split
    as keys are."""
    return b"".join(iter_records(entries, RECORD_BYTES, MAX_PAYLOAD, orjson.dumps, kind.magic))


def iter_records(
    keys: list[Any],
    record_bytes: int,
    max_payload: int,
    encode: Callable[[list[Any]], bytes] | None = None,
    magic: int = MAGIC,
) -> Iterator[bytes]:
    """The records that hold `keys` (or entries, with their `encode` and `magic`), one at a
    time, as `encode_records` joins them; a fold writes them so."""
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
            f"a key of {len(payload) - 2:,} bytes as JSON is too long to record (a record "
            f"holds at most {max_payload:,} bytes). Return a shorter key from the key "
            "function, e.g. a hash of the long value."
        )
    yield _record(payload, magic)


def _payload(keys: list[Key]) -> bytes:
    try:
        return orjson.dumps(keys)
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, or a surrogate
        return orjson.dumps([tagged_key(key) for key in keys])


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


# -- decoding ------------------------------------------------------------------------------


class DamageError(Exception):
    """A record that is not what the writer wrote; the message says what is wrong."""


def read_record(file: io.BufferedIOBase, left: int, expected: int = MAGIC) -> tuple[int, bytes]:
    """The magic byte and payload of the record at the stream's position, CRC checked;
    `left` committed bytes remain, and `expected` is the magic byte of the journal's own
    records (the job record's may stand there too)."""
    if left < HEADER_SIZE:
        raise DamageError(f"the last {left} committed bytes are too few for a record header")
    header = file.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise DamageError("the file ended inside a record header")
    magic: int
    size: int
    magic, size = _PREFIX.unpack_from(header)
    if magic != expected and magic != JOB_MAGIC:
        raise DamageError(
            f"no record starts here (byte 0x{magic:02x}, not 0x{expected:02x} or 0x{JOB_MAGIC:02x})"
        )
    # Both checked before a byte of the payload is read, so a damaged length field never
    # makes the reader take more memory than the largest record needs.
    if size > MAX_PAYLOAD:
        raise DamageError(
            f"the record claims {size:,} bytes, more than the {MAX_PAYLOAD:,} a record holds"
        )
    if size > left - HEADER_SIZE:
        raise DamageError(
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
        raise DamageError("the file ended inside a record")
    actual = zlib.crc32(payload, start)
    if stored != actual:
        raise DamageError(f"its CRC-32 is {stored:08x}, its content gives {actual:08x}")
    return magic, payload


def _check_crc_in_pieces(file: io.BufferedIOBase, size: int, crc: int, stored: int) -> None:
    """Read `size` bytes into one buffer of at most `RECORD_BYTES`, a piece at a time, and
    check them against the CRC `stored`; leave the file where it was."""
    position = file.tell()
    buffer = memoryview(bytearray(min(size, RECORD_BYTES)))
    left = size
    while left:
        read = file.readinto(buffer[: min(left, len(buffer))])
        if not read:
            raise DamageError("the file ended inside a record")
        crc = zlib.crc32(buffer[:read], crc)
        left -= read
    if stored != crc:
        raise DamageError(f"its CRC-32 is {stored:08x}, its content gives {crc:08x}")
    file.seek(position)


def decode_job(payload: bytes) -> str:
    """The job id in a job record's payload."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise DamageError(f"its job record is not valid JSON ({error})") from None
    if type(decoded) is not dict or decoded.keys() != {_JOB_KEY}:
        raise DamageError(f'its job record is not an object of one key, "{_JOB_KEY}"')
    try:
        return check_job_id(decoded[_JOB_KEY])
    except ValueError as error:
        raise DamageError(f"its job record holds no job id: {error}") from None


def decode_entries(payload: bytes, expected: str = "an array") -> list[Any]:
    """The JSON array in a record's payload; `DamageError` names what it is instead."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise DamageError(f"its payload is not valid JSON ({error})") from None
    if type(decoded) is not list:
        raise DamageError(f"its payload is a JSON {type(decoded).__name__}, not {expected}")
    return decoded


def decode_keys(payload: bytes) -> list[Key]:
    """The keys in a key record's payload, tagged keys untagged (`resumable._keys`)."""
    decoded = decode_entries(payload, "an array of keys")
    try:
        # Joining checks in C that every element is a str, the common case, several times
        # faster than collecting the types; the joined string is shorter than the payload.
        "".join(decoded)
    except TypeError:
        if not set(map(type, decoded)) <= KEY_TYPES:
            return [_decode_key(value) for value in decoded]
    return decoded


def _decode_key(value: object) -> Key:
    try:
        return key_from_tagged(value)
    except ValueError as error:
        raise DamageError(f"its payload holds {error}") from None
