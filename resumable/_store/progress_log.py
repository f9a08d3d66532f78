"""The progress log: a save of progress alone is one record appended to ``job.state.log``.

The state file stays the compacted document; the log beside it holds the progress saved
since that document was written. A compaction (today's atomic rewrite of the state file)
gives the document a new random ``log`` id, and every record names the id of the document
it extends, so the records of an older document (a log a compaction has not cut yet) are
never read as this one's.

A record has the journals' framing, 9 bytes of header then the payload; integers are
unsigned little-endian::

    offset  size  field
    0       1     magic byte 0x53 ("S", a save)
    1       4     payload length n, at most MAX_RECORD_BYTES
    5       4     CRC-32 of bytes 0-4 and of the payload
    9       n     payload, written by orjson: {"base": "<the document's log id>",
                  "seq": 1, 2, ..., "progress": {...}, "saved_at": "...", "sinks": {...},
                  "keys": [...], "failed": [...]}

``keys`` and ``failed`` (each only when not empty) ride the record in place of the
journals: the keys finished and the failure entries changed since the previous save
(`Progress.riding`). The journals are written only by a compaction, which appends what
every record since the previous one carried before the state file commits it.

What a reader does with the log of a document whose ``log`` id is ``X``:

- no log, an empty one, or a first record naming another id: the document as it is
  (a stale log);
- records naming ``X``, ``seq`` 1, 2, 3, ...: the last one's progress, ``saved_at`` and
  ``sinks``, and the ``keys`` and ``failed`` of them all, in order (`LoggedEntries`),
  which the progress adds to what its journals commit;
- a record cut short, a CRC that does not match, a wrong magic byte: the records before
  it stand, and it and all after it are ignored (a torn tail);
- a record whose CRC matches but that does not follow (another id after ``X``'s, a
  ``seq`` out of turn, a payload no save writes): damage, `LogDamageError` naming the log.

A writer appends only to a log it started itself after its own compaction: a run's first
save compacts, so a run never appends after another's records or a torn tail. The log is
bounded (`MAX_RECORDS` records, `MAX_LOG_BYTES` bytes): the save that would pass either
compacts instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import struct
import sys
import zlib
from datetime import datetime
from typing import Any

import orjson

from resumable._errors import StateFileError, StateWriteError, describe_os_error
from resumable._keys import KEY_TYPES, Key, key_from_tagged, tagged_key
from resumable._store import durable
from resumable._store.document import (
    NotDamagedError,
    SinkRecord,
    StateDocument,
    check_sinks,
    iso,
)
from resumable._store.journal_api import NOTHING_LOGGED, LoggedEntries

MAGIC = 0x53  # "S"
_PREFIX = struct.Struct("<BI")  # magic and payload length: what the CRC covers first
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size
# A record is small (a positional save is about 150 bytes); one over this is no progress
# worth a log record (a long list of items done out of order): the save compacts instead.
MAX_RECORD_BYTES = 64 << 10
# The bounds of a log: past either, the save compacts. A reader parses every record, about
# a microsecond each, so a job loads in a few milliseconds at most; a compaction (one
# atomic rewrite) every 4,096 saves costs a tenth of a microsecond per save.
MAX_RECORDS = 4_096
MAX_LOG_BYTES = 4 << 20
_READ_LIMIT = MAX_LOG_BYTES + MAX_RECORD_BYTES + HEADER_SIZE


# fdatasync flushes the size an append changes too; macOS needs F_FULLFSYNC and Windows
# has no fdatasync: there the state file's flush (durable.fsync_file).
_FDATASYNC = sys.platform != "darwin" and hasattr(os, "fdatasync")


def _flush(fd: int) -> None:
    """Flush the log's new record to the disk."""
    if _FDATASYNC:
        os.fdatasync(fd)  # looked up at call time: a test's spy sees it
    else:  # pragma: no cover
        durable.fsync_file(fd)


class LogDamageError(StateFileError):
    """A record of the progress log checks (its CRC matches) but is none a save writes."""


def log_path(state: str) -> str:
    """The progress log of state file `state`: ``<state>.log``."""
    return state + ".log"


def new_log_id() -> str:
    """A fresh id for a compacted document: 16 random hex digits."""
    return secrets.token_hex(8)


def journal_generations(progress: dict[str, Any]) -> tuple[object, object]:
    """The journal generations a progress snapshot names (keys, failures): a save that
    changes one compacts, so that the state file and its backup name every generation a
    later run must keep."""
    journal, failed = progress.get("journal"), progress.get("failed")
    return (
        journal.get("generation") if isinstance(journal, dict) else None,
        failed.get("generation") if isinstance(failed, dict) else None,
    )


# -- reading -------------------------------------------------------------------------------


def apply_log(document: StateDocument, state: str) -> StateDocument:
    """`document`, read from state file `state`, with the progress of its log's last good
    record. Raises `LogDamageError` for a record that checks but does not follow, and
    `NotDamagedError` when the log cannot be read (an error of the system says nothing
    about its bytes)."""
    if document.log is None:
        return document
    path = log_path(state)
    try:
        with open(path, "rb") as file:
            data = file.read(_READ_LIMIT)  # one read: a log is bounded, and read whole
    except FileNotFoundError:
        return document
    except OSError as error:
        raise NotDamagedError(
            f"{path} cannot be read: {error.strerror}. That says nothing about its content, "
            "so it is not taken for damage: nothing was changed. Fix the permissions or "
            "the disk, then run again."
        ) from error
    records = good_records(data, document.log, path)
    if not records:
        return document
    last = records[-1]
    keys = [key for record in records for key in record.get("keys", ())]
    failed = [entry for record in records for entry in record.get("failed", ())]
    return dataclasses.replace(
        document,
        progress=last["progress"],
        saved_at=last["saved_at"],
        sinks=last["sinks"],
        logged=LoggedEntries(keys, failed) if keys or failed else NOTHING_LOGGED,
    )


def good_records(data: bytes, log_id: str, where: str) -> list[dict[str, Any]]:
    """The payloads of the good records of `data` that extend document `log_id`, in
    order; none for an empty or stale log."""
    records: list[dict[str, Any]] = []
    offset, size = 0, len(data)
    while offset + HEADER_SIZE <= size:
        payload = _checked(data, offset)
        if payload is None:
            # Only the last record can be torn (each one was on the disk before the next
            # was written): one that fails with a whole, checked record after it is damage.
            later = next((at for at in range(offset + 1, size) if _checked(data, at)), None)
            if later is not None:
                raise LogDamageError(
                    f"{where} is damaged: the record at byte {offset} fails its check, and "
                    f"a whole record follows it at byte {later}"
                )
            break  # a torn or damaged tail: the records before it stand
        end = offset + HEADER_SIZE + len(payload)
        record = _payload(payload, where)
        if not records and record["base"] != log_id:
            return records  # the log of an earlier document: a compaction made it stale
        expected = len(records) + 1
        if record["base"] != log_id or record["seq"] != expected:
            raise LogDamageError(
                f"{where} is damaged: a record at byte {offset} checks but does not follow "
                f"(log {record['base']}, save {record['seq']}; expected log {log_id}, "
                f"save {expected})"
            )
        records.append(record)
        offset = end
    return records


def _checked(data: bytes, offset: int) -> bytes | None:
    """The payload of the record at `offset` of `data`, if one is there whole and checks."""
    if offset + HEADER_SIZE > len(data):
        return None
    magic, length = _PREFIX.unpack_from(data, offset)
    end = offset + HEADER_SIZE + length
    if magic != MAGIC or length > MAX_RECORD_BYTES or end > len(data):
        return None
    (crc,) = _CRC.unpack_from(data, offset + _PREFIX.size)
    payload = data[offset + HEADER_SIZE : end]
    if zlib.crc32(payload, zlib.crc32(data[offset : offset + _PREFIX.size])) != crc:
        return None
    return payload


def _payload(payload: bytes, where: str) -> dict[str, Any]:
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError:
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("base"), str)
        or type(record.get("seq")) is not int
        or not isinstance(record.get("progress"), dict)
        or not isinstance(record.get("saved_at"), str)
    ):
        raise LogDamageError(f"{where} is damaged: a record checks but holds no save's progress")
    try:
        datetime.fromisoformat(record["saved_at"])
    except ValueError:
        raise LogDamageError(f"{where} is damaged: a saved_at is no ISO 8601 time") from None
    record["sinks"] = check_sinks(record.get("sinks", {}), where)
    if "keys" in record:
        record["keys"] = _keys_of(record["keys"], where)
    failed = record.get("failed", [])
    if type(failed) is not list or not all(type(entry) is dict for entry in failed):
        # The entries' fields are checked as the failure journal's, as they are replayed.
        raise LogDamageError(f"{where} is damaged: a record's failed is no list of entries")
    return record


def _keys_of(keys: object, where: str) -> list[Key]:
    """The keys a record holds, untagged (`resumable._keys`), or `LogDamageError`."""
    if type(keys) is not list:
        raise LogDamageError(f"{where} is damaged: a record's keys are no list")
    if set(map(type, keys)) <= KEY_TYPES:  # one pass in C: the keys as they are
        return keys
    try:
        return [key_from_tagged(key) for key in keys]
    except ValueError as error:
        raise LogDamageError(f"{where} is damaged: a record holds {error}") from None


def _encoded(fields: dict[str, object]) -> bytes:
    """The payload of a record of `fields`; a key orjson cannot write (an int beyond 64
    bits, a str with a lone surrogate) goes in the tagged form of `resumable._keys`."""
    try:
        return orjson.dumps(fields, default=iso)
    except TypeError:  # orjson.JSONEncodeError
        keys = fields.get("keys")
        if not isinstance(keys, list):
            raise
        return orjson.dumps({**fields, "keys": [tagged_key(key) for key in keys]}, default=iso)


def encode_record(payload: bytes) -> bytes:
    """`payload` framed as a record: header, CRC, payload."""
    prefix = _PREFIX.pack(MAGIC, len(payload))
    return prefix + _CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))) + payload


# -- writing -------------------------------------------------------------------------------


class ProgressLog:
    """The writer of a job's progress log; the file store holds one per run.

    `append` says False when the save must compact instead: before this run's first
    compaction, when `r.state` or a journal generation changed since the last, when the
    log is full, and after an append failed. `compacted` is told every compaction.
    """

    def __init__(self, state: str) -> None:
        self.path = log_path(state)
        self._directory = os.path.dirname(state) or os.curdir
        self._pid = os.getpid()
        self._fd: int | None = None
        self._base: str | None = None  # the log id of this run's last compaction
        self._state = b""  # r.state as that compaction wrote it
        self._generations: tuple[object, object] = (None, None)
        self._seq = 0
        self._size = 0
        self._mode: int | None = None  # the bits a log this run creates gets

    @property
    def state(self) -> bytes:
        """r.state as this run's last compaction wrote it (checked); empty before one."""
        return self._state

    @property
    def live(self) -> bool:
        """Whether the log holds records the state file does not (no compaction since)."""
        return self._seq > 0

    def compacted(self, log_id: str, state: bytes, progress: dict[str, Any]) -> None:
        """The state file now holds document `log_id`: the records so far are stale."""
        self._base, self._state = None, state
        self._generations = journal_generations(progress)
        self._seq = self._size = 0
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                return  # stale records stay in front: no record may follow them
        self._base = log_id

    def forget(self) -> None:
        """A compaction failed: whatever the state file now holds, no record may follow
        until the next compaction succeeds."""
        self._base = None

    def append(
        self,
        state: bytes,
        progress: bytes,
        snapshot: dict[str, Any],
        saved_at: datetime,
        sinks: dict[str, SinkRecord],
        riding: dict[str, list[Any]] | None = None,
    ) -> bool:
        """Append a record of the progress `snapshot` (`progress`: it as JSON) and flush
        it; False (nothing written) when the save must compact instead. `riding` holds the
        journals' entries since the last save (``keys``, ``failed``), which the record
        carries until the next compaction. A failure of the system raises
        `StateWriteError`, and leaves the log as it was as far as the system lets; the next
        save compacts."""
        base = self._base
        if (
            base is None
            or state != self._state
            or self._seq >= MAX_RECORDS
            or journal_generations(snapshot) != self._generations
        ):
            return False
        fields: dict[str, object] = {"base": base, "seq": self._seq + 1, "saved_at": saved_at}
        if sinks:
            fields["sinks"] = sinks
        if riding:
            fields.update(riding)
        # The progress is serialised once, for the fingerprint and here: spliced in as the
        # last member of the object.
        payload = b"".join((_encoded(fields)[:-1], b',"progress":', progress, b"}"))
        if len(payload) > MAX_RECORD_BYTES or self._size + len(payload) > MAX_LOG_BYTES:
            return False
        record = encode_record(payload)
        try:
            fd = self._fd if self._fd is not None else self._open()
            written = os.write(fd, record)
            if written < len(record):  # os.write may write less than it is given
                durable.write_all(fd, record[written:])
            _flush(fd)
        except BaseException as error:
            # After a failed flush the kernel may have dropped the pages: the record is
            # cut off (best effort), never flushed again, and the next save compacts.
            self._base = None
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            if isinstance(error, OSError):
                raise StateWriteError(
                    f"could not save progress to {self.path}: {describe_os_error(error)}. "
                    "The previous save is intact; items finished since it will run again "
                    "next time, unless a later save succeeds.",
                    errno=error.errno,
                ) from error
            raise
        self._seq += 1
        self._size += len(record)
        return True

    def _open(self) -> int:
        """Open the log for appending, emptied, its name flushed into the directory."""
        fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o666
        )
        try:
            os.ftruncate(fd, 0)  # a stale log: this run's compaction came after it
            durable.set_mode(fd, self._mode)
            durable.fsync_directory(self._directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def set_mode(self, mode: int | None) -> None:
        """The permission bits the log gets when this run creates it (the state file's)."""
        self._mode = mode

    def close(self) -> None:
        """Close the log; delete it when the state file holds all it holds. Safe to call
        twice; in a forked child it only closes its descriptor."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        # A log is stale once this run compacted, if no record followed (a crashed run's
        # log, or this run's own): a job at rest is one state file. A look first: most
        # runs have no log to delete.
        stale = os.getpid() == self._pid and not self.live and self._base is not None
        if stale and (fd is not None or os.path.lexists(self.path)):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._base = None
