"""The journal files of a job: their names and generations, and reading, appending and folding.

Keyed progress remembers the finished items by key, a str or an int. Rewriting all the
keys at every save would make a save cost time in proportion to every key ever finished;
instead each save appends the keys finished since the previous save, and the state file
records how many bytes of the journal that save commits to. The failure records
(`resumable._failures`) are kept the same way. The bytes of a journal are records
(`resumable._store.journal_codec`).

For a state file ``job.state``, the journal of generation *g* is ``job.state.keys-<g>``
(``job.state.failed-<g>`` for the failure journal; 0 <= g <= `MAX_GENERATION`; a file
named with a larger number is no journal and is left alone). The state file names the
generation and the committed length. Bytes past that length (a record torn by kill -9, or
appended by a save whose state file was never written) are ignored when reading and cut
off when the journal is next opened for appending, which the caller does while holding
the job's lock. `fold` writes all the keys into the file of a new generation, so that a
journal of many small records can be replaced by a compact one.

The job record ties a journal to its job: the job id is random, made when the job
starts, and kept in the state file beside the generation. Every generation written by
format version 2 starts with the job record, and only there; a reader given the state
file's job id refuses a journal whose first record is not the job record of that id. A
job saved by version 1 has no id, and its journal no job record; it gets both when its
next save writes a new generation.

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
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from resumable._errors import (
    StateFileError,
    StateWriteError,
    UsageError,
    describe_os_error,
    read_fix,
)
from resumable._keys import Key, check_keys
from resumable._store.durable import fsync_directory, fsync_file, set_mode, write_all
from resumable._store.journal_api import MAX_GENERATION
from resumable._store.journal_codec import (
    HEADER_SIZE,
    JOB_MAGIC,
    KEYS,
    MAX_PAYLOAD,
    RECORD_BYTES,
    DamageError,
    Kind,
    check_job_id,
    decode_entries,
    decode_job,
    decode_keys,
    encode_entries,
    encode_records,
    iter_records,
    job_record,
    read_record,
)

logger = logging.getLogger("resumable")
# `fold_is_due`: fold once there are more than this many records and more than one record
# per this many keys; see its docstring for the arithmetic.
# FOLD_MIN_RECORDS is also the seam for tests (docs/architecture.md, "Seams for tests"):
# a test lowers it to see a fold after a few saves instead of a thousand, in its own
# process (monkeypatch) or in a job it starts (tests/jobs/keyed_save_job.py --fold-after).
# So `fold_is_due` reads it at each call: never bind it at import (a default argument,
# `from ... import`), or setting it would change nothing.
FOLD_MIN_RECORDS = 1_000
FOLD_KEYS_PER_RECORD = 32
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_RESTORE = (
    "Restore the file from a backup, or start the job over (every item runs again): "
    "restart=True in Python, or `resumable reset` with the state file at the shell."
)


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


# -- reading ---------------------------------------------------------------------------


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
        path, length, job_id, KEYS, lambda payload: keys.update(decode_keys(payload))
    )
    return JournalContents(keys, records)


def read_entries(path: Path, length: int, job_id: str | None, kind: Kind) -> JournalEntries:
    """The entries in the first `length` bytes of the journal of objects at `path`, in
    order; checked and refused as `read_journal` does, but for the types of the entries,
    which the caller checks."""
    entries: list[Any] = []
    records = _read_records(
        path, length, job_id, kind, lambda payload: entries.extend(decode_entries(payload))
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
        raise _unreadable(path, kind, error) from None
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
                magic, payload = read_record(file, length - offset, kind.magic)
                if magic == JOB_MAGIC:
                    _check_job(path, offset, decode_job(payload), job_id, kind)
                else:
                    if offset == 0 and job_id is not None:
                        raise _foreign(path, job_id, None, kind)
                    take(payload)
                    records += 1
                offset += HEADER_SIZE + len(payload)
        except DamageError as damage:
            raise StateFileError(
                f"the {kind.name} {path} is damaged at byte {offset:,}: {damage}. The state "
                f"file counts its first {length:,} bytes as saved progress. {_RESTORE}"
            ) from None
        except OSError as error:
            raise _unreadable(path, kind, error) from None
    return records


def _unreadable(path: Path, kind: Kind, error: OSError) -> StateFileError:
    """The journal at `path` cannot be opened or read for `error` (not for its content)."""
    return StateFileError(
        f"the {kind.name} {path} cannot be read: {describe_os_error(error)}. That says "
        f"nothing about its content: nothing was changed. {read_fix(error)}, then run again."
    )


def _check_job(path: Path, offset: int, found: str, job_id: str | None, kind: Kind) -> None:
    """The job record `found` at `offset`: only the first record, and of the state's job."""
    if offset:
        raise DamageError("a job record stands here, and one may only start the journal")
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


def _check_length(length: int) -> None:
    if type(length) is not int or length < 0:
        raise ValueError(f"a journal length is an int >= 0, got {length!r}")


# -- writing ---------------------------------------------------------------------------


def _close_refused(fd: int, path: Path, new_file: bool) -> None:
    """Close a journal `JournalWriter.open` could not make ready; one it had just created
    goes too: it may lack the state file's permission bits, and a later open of an
    existing file would not set them."""
    os.close(fd)
    if new_file:
        with contextlib.suppress(OSError):
            os.unlink(path)


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
        doing = f"give the new {kind.name} {path} the state file's permission bits"
        try:
            if new_file:
                set_mode(fd, mode)
            doing = f"read the size of the {kind.name} {path}"
            size = os.fstat(fd).st_size
            if size < length:
                raise StateFileError(
                    f"the {kind.name} {path} holds {size:,} bytes, fewer than the {length:,} "
                    f"that the state file counts as saved progress: it was truncated or "
                    f"replaced. {_RESTORE}"
                )
            doing = f"cut the {kind.name} {path} back to its committed {length:,} bytes"
            if size > length:
                os.ftruncate(fd, length)  # a torn record, or keys no state file committed
            os.lseek(fd, length, os.SEEK_SET)
        except OSError as error:
            _close_refused(fd, path, new_file)
            raise StateWriteError(
                f"cannot {doing}: {describe_os_error(error)}. The state file and the "
                f"{kind.name}'s committed bytes are as they were.",
                errno=error.errno,
            ) from error
        except BaseException:
            _close_refused(fd, path, new_file)
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
            write_all(fd, data)
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

    def __exit__(self, *exc_info: object) -> None:
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
    return _fold_records(path, iter_records(batch, RECORD_BYTES, MAX_PAYLOAD), mode, job_id, KEYS)


def fold_entries(
    path: Path, entries: list[Any], mode: int | None, job_id: str | None, kind: Kind
) -> int:
    """Write `entries` into a new journal file of `kind` at `path`, as `fold` writes keys."""
    records = iter_records(entries, RECORD_BYTES, MAX_PAYLOAD, orjson.dumps, kind.magic)
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
            write_all(fd, first)
            length = len(first)
            # Record by record, so the whole journal never sits in memory as bytes.
            for record in records:
                write_all(fd, record)
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
