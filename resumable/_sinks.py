"""Output files in step with progress: `Sink` (what `Resumable.sink` returns) and `Sinks`
(the job's set of them, which the session holds and every save records).

- ``r.sink(path)``, a sink the state file records: opened to append; the CRC-32 of the
  last 4 KiB before the recorded length is checked (a file replaced or rewritten is
  refused, never cut), then the file is cut back to that length.
- ``r.sink(path)``, a new sink: the path must hold no file yet (one there is another
  job's output, perhaps: refused, empty or not). A save records it at 0 bytes, and only
  then is the file made, so that no run leaves a file its state does not count.
- The body writes: into a buffer in memory, counted.
- An item boundary: the length is *marked*; every byte so far belongs to items done. A
  job with sinks has a boundary after every item (every batch, every result of ``r.map``),
  at the start of the loop, and at its end.
- A save: every sink is flushed and fsynced, then the state file records the marked
  lengths, and the CRC of the bytes before them, beside the progress. Output reaches the
  disk before the state that counts it.
- The end of the run: closed.

Before the loop starts no item is in flight: a save marks every sink first, so a header
counts at once. Inside the loop, and after it until the with block leaves without an
error, a save records the lengths of the last boundary: the output of the item in flight,
or of the code after the loop (a footer) cut short by a stop, is cut off on the next run,
which runs it again. The exit of a finished job's run that leaves without an error records
where its footer starts (``footer_at``). A rerun of that job appends nothing: its writes
are compared with the bytes from there (`_Unchanged`; other bytes are dropped with a
warning); only an item taken again (a keyed input that grew, a failed item retried) makes
a sink append again.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import io
import os
import stat
import threading
import weakref
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import orjson

from resumable._errors import (
    StateFileError,
    StateWriteError,
    UsageError,
    describe_os_error,
    warn,
)
from resumable._store import durable
from resumable._store.document import SINK_TAIL_BYTES, SinkRecord
from resumable._store.file import aside_path, backup_path, lock_path, resolve
from resumable._store.flock import try_lock

SinkMode = Literal["t", "b"]


class Sink:
    """An output file in step with the job's progress: append only, with `write`,
    `write_json` and `csv`. Made by `Resumable.sink`; write to it in the loop body.

    Attributes:
        path: the file (absolute, symlinks followed).
        mode: ``"t"`` (`write` takes str, encoded with `encoding`) or ``"b"`` (bytes).
        encoding: the text encoding (``"t"``; ``"b"`` writes `write_json` and `csv` as UTF-8).
    """

    def __init__(
        self, path: Path, file: BinaryIO, record: SinkRecord, mode: SinkMode, encoding: str
    ) -> None:
        self.path = path
        self.mode = mode
        self.encoding = encoding
        length = record["length"]
        self._out = file
        # What `write` goes through: the file, or in a rerun of a finished job `_Unchanged`.
        self._file: _Writer = file
        self._length = length  # bytes in the file and in the buffer
        self.marked = length  # the length at the last moment no item was in flight
        self.synced = length  # the length the last save flushed to the disk and recorded
        self._tail = record.get("tail")  # the CRC of the bytes before `synced`
        # Where the output after the loop starts, once a finished job's exit recorded it.
        self.footer_at = record.get("footer_at")
        self._text = mode == "t"
        self._failed: OSError | None = None
        # Text in another encoding than UTF-8 goes through one incremental encoder, so that
        # a byte order mark (utf-16, utf-8-sig) is written once, at the start of the file:
        # after output of earlier runs, the encoder is told it was written already.
        self._encode = (
            str.encode
            if not self._text or encoding in _UTF8_NAMES
            else _encoder_after(length, encoding)
        )
        # Written in the thread that opened it (the loop's): a worker's output could be
        # counted for an item that is not done yet.
        self._thread = threading.get_ident()
        _open_sinks.add(self)

    @property
    def length(self) -> int:
        """Bytes written so far, output of earlier runs included (0: an empty file)."""
        return self._length

    def write(self, data: str | bytes | bytearray | memoryview) -> None:
        """Append `data`: a str to a text sink, bytes (or any bytes-like) to a binary one.

        It is buffered; each save flushes it to the disk before it records the length.
        """
        if self._text:
            if not isinstance(data, str):
                raise TypeError(
                    f"sink {self.path.name} was opened in text mode: write() takes str, got "
                    f"{type(data).__name__} (open it with mode='b' to write bytes)"
                )
            self._append(self._encode(data))
        else:
            if isinstance(data, str):
                raise TypeError(
                    f"sink {self.path.name} was opened in binary mode: write() takes bytes, "
                    "got str (encode it, or open the sink with mode='t')"
                )
            self._append(data)

    def write_json(self, value: Any) -> None:
        """Append `value` as one line of JSON (orjson: UTF-8, no spaces, then ``\\n``).

        A value orjson cannot write raises its `TypeError` before anything is appended.
        """
        line = orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
        if self._text and self.encoding not in _UTF8_NAMES:
            line = self._encode(line.decode())
        self._append(line)

    def csv(
        self, header: Sequence[str] | None = None, dialect: str = "excel", **options: Any
    ) -> CsvSink:
        """A CSV writer over this sink (`csv.writer`'s `dialect` and options).

        `header` is written only when the sink is empty, so a rerun that appends to the
        output of earlier runs does not write it a second time.
        """
        return CsvSink(self, header, dialect, **options)

    def __repr__(self) -> str:
        return f"Sink({str(self.path)!r}, length={self._length})"

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise _write_error(self.path, self._failed)
        if self._file.closed:
            raise UsageError(
                f"sink {self.path.name} is closed: a sink is written inside the with block of "
                "its job, which closes it on exit"
            )
        if threading.get_ident() != self._thread:
            raise UsageError(
                f"sink {self.path.name} is written in another thread than the loop's: write "
                "sinks in the loop body (with r.map, return the result from the worker and "
                "write it in the body), so that only done items' output is counted"
            )
        try:
            self._length += self._file.write(data)
        except OSError as error:
            # What reached the file is unknown now: no save may record this sink any more.
            self._failed = error
            raise _write_error(self.path, error) from error

    def _sync(self) -> None:
        """Flush the buffer and fsync: every byte of the marked length is on the disk."""
        if self._failed is not None:
            raise _write_error(self.path, self._failed)
        if self.marked == self.synced:
            return  # no output since the last save: nothing to wait for
        try:
            self._out.flush()
            durable.fsync_file(self._out.fileno())
        except OSError as error:
            self._failed = error
            raise _write_error(self.path, error) from error

    def _record(self) -> SinkRecord:
        """What a save records of this sink, once `_sync` flushed it."""
        length = self.marked
        record: SinkRecord = {"length": length}
        if length:
            if self._tail is None or length != self.synced:
                try:
                    self._tail = _tail(self._out.fileno(), length)
                except OSError as error:
                    self._failed = error
                    raise _write_error(self.path, error) from error
            record["tail"] = self._tail
        if self.footer_at is not None:
            record["footer_at"] = self.footer_at
        return record

    def _saved(self, record: SinkRecord) -> None:
        self.synced = record["length"]
        self._tail = record.get("tail")

    def _append_again(self) -> None:
        """A rerun of a finished job found a new item: its output is appended, after the
        earlier runs' (and their footer), and the job's next exit records a footer anew."""
        self._file = self._out
        self.footer_at = None

    def _close(self) -> None:
        # Closing flushes what the buffer holds; a failure there loses nothing the state
        # file counts (the last save fsynced all of that).
        with contextlib.suppress(OSError, ValueError):
            self._out.close()


class _Writer(Protocol):
    """What a `Sink` writes through: its file, or `_Unchanged`."""

    @property
    def closed(self) -> bool: ...

    def write(self, data: Any, /) -> int: ...


class _Unchanged:
    """A finished job's sink in a rerun: what the run writes (after the loop: a footer) is
    compared with the bytes the run that finished the job wrote there, from `footer_at`,
    and appended nowhere; other bytes get a `ResumableWarning`, once, and are dropped with
    the rest. It counts 0 bytes written. Once the job takes an item again (a keyed input
    that grew, ``on_change="continue"``, a failed item retried), the sink appends again."""

    def __init__(self, sink: Sink, rerun: Callable[[], bool]) -> None:
        self._sink = sink
        self._rerun = rerun
        self._at = sink.footer_at or 0
        self._differs = False  # this run wrote other bytes: warned, and dropped

    @property
    def closed(self) -> bool:
        return self._sink._out.closed

    def write(self, data: Any, /) -> int:
        sink = self._sink
        if not self._rerun():
            sink._append_again()
            return sink._out.write(data)
        if self._differs:
            return 0  # said once; the rest of this run's output after the loop goes too
        data = bytes(data)
        end = self._at + len(data)
        if end > sink.length or _read_at(sink._out.fileno(), len(data), self._at) != data:
            # Not an error: rerunning a finished job is harmless, and a footer that changes
            # from run to run (a time, a count of this run's items) is common.
            self._differs = True
            warn(
                f"sink {sink.path} holds the output of a job that finished in an earlier "
                f"run, and this run writes other bytes after the loop than that run did (at "
                f"byte {self._at:,}; that run wrote bytes {sink.footer_at or 0:,} to "
                f"{sink.length:,} after its loop). They were not written: a rerun of a "
                "finished job appends nothing, and the file keeps that run's output. To "
                "write the output anew, start the job over with restart=True (it moves the "
                "file aside)."
            )
            return 0
        self._at = end
        return 0


class CsvSink:
    """Rows of CSV appended to a `Sink` (made by `Sink.csv`)."""

    def __init__(
        self, sink: Sink, header: Sequence[str] | None, dialect: str, **options: Any
    ) -> None:
        self.sink = sink
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, dialect, **options)
        if header is not None and sink.length == 0:
            self.writerow(header)

    def writerow(self, row: Iterable[Any]) -> None:
        """Append one row."""
        self._writer.writerow(row)
        self._flush_rows()

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Append several rows."""
        self._writer.writerows(rows)
        self._flush_rows()

    def _flush_rows(self) -> None:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        sink = self.sink
        sink._append(sink._encode(text) if sink.mode == "t" else text.encode())


class Sinks:
    """A job's sinks: the records its state file holds, and the sinks this run opened."""

    def __init__(self, state_path: Path, *, restart: bool, rerun: Callable[[], bool]) -> None:
        self._state_path = state_path
        self._restart = restart
        self._rerun = rerun  # whether this is (still) a rerun of a finished job
        # As the state file has it: the path relative to the state file's folder -> record.
        self.recorded: dict[str, SinkRecord] = {}
        self.by_path: dict[str, Sink] = {}  # opened by this run
        self._opened_here: set[str] = set()  # and first recorded by this run, too
        # Set by the exit of a run whose loop finished and whose with block leaves without
        # an error: the output after the loop (a footer) counts now.
        self.finishing = False

    def open(
        self,
        path: str | os.PathLike[str],
        mode: str,
        encoding: str,
        record: Callable[[], None],
    ) -> Sink:
        """Open the sink at `path`: checked and cut back to its recorded length, or, new to
        the job, recorded at 0 bytes by `record` (a save) before its file is made."""
        if mode not in ("t", "b"):
            raise ValueError(f"sink mode must be 't' (text) or 'b' (bytes), got {mode!r}")
        try:
            info = codecs.lookup(encoding)
        except (LookupError, TypeError):
            raise ValueError(f"sink encoding: {encoding!r} is not a text encoding") from None
        if not getattr(info, "_is_text_encoding", True):  # hex, rot13, zlib: not str to bytes
            raise ValueError(f"sink encoding: {encoding!r} is not a text encoding")
        encoding = info.name
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"sink path takes a str or PathLike, got {type(path).__name__}")
        target = resolve(path)
        state = self._state_path
        # Relative to the state file's folder: a job moved or copied with its output stays
        # one job (a sink moved apart from it is a new sink, refused if it holds data).
        key = os.path.relpath(target, state.parent)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(
                f"sink {target!r}: its name is not valid UTF-8, and the state file records "
                "sink names as UTF-8. Rename the file (or pass another path)."
            ) from None
        if key in self.by_path:
            raise UsageError(
                f"{target} is already a sink of this job: open each output file once and "
                "keep the Sink that r.sink() returned"
            )
        if target in (state, backup_path(state), lock_path(state)):
            raise UsageError(f"{target} is one of the job's own files: pick another sink path")
        if target.is_dir():
            raise UsageError(f"sink {target} is a directory: pass the path of a file in it")
        self._refuse_a_second_name(target)
        recorded = self.recorded.get(key)
        # Sinks of earlier runs, not opened (yet) by this one.
        earlier = [name for name in self.recorded if name not in self._opened_here]
        if recorded is None and earlier:
            others = ", ".join(sorted(earlier))
            warn(
                f"sink {target} is new to this job, whose state file records the sinks "
                f"{others} (relative to {state.parent}): if it is one of those under another "
                "path (a run from another working directory), the output is now split "
                "between two files. Pass the same path each run (an absolute one)."
            )
        text_or_bytes: SinkMode = "t" if mode == "t" else "b"
        if recorded is None:
            file = self._open_new(target, key, record)
            recorded = self.recorded[key]
        else:
            file = _open_recorded(target, recorded, state)
        sink = Sink(target, file, recorded, text_or_bytes, encoding)
        if sink.footer_at is not None:  # the job finished: a rerun compares, appends nothing
            sink._file = _Unchanged(sink, self._rerun)
        self.by_path[key] = sink
        self._opened_here.add(key)
        return sink

    def _open_new(self, target: Path, key: str, record: Callable[[], None]) -> BinaryIO:
        """Open `target`, a sink new to this job, recorded at 0 bytes by `record`: a file
        made after that save, or (restart=True) the one there, moved aside if not empty."""
        existing = _open_existing(target)
        try:
            if existing is not None:
                size = os.fstat(existing).st_size
                if not self._restart:
                    raise _not_ours(target, size, self._state_path)
                if size:
                    # restart=True starts the output over too, keeping the old one under a
                    # new name (the old state was set aside first: `moves_aside`).
                    existing = durable.close_fd(existing)
                    os.replace(target, aside_path(target, "reset"))
            elif not target.parent.is_dir():
                raise FileNotFoundError(errno.ENOENT, "no such folder for the sink", str(target))
            # Counted as recorded for the save that records it (which may be the only
            # sink, and a save without open sinks writes `recorded` as it is).
            self.recorded[key] = {"length": 0}
            try:
                record()
            except BaseException:
                self.recorded.pop(key, None)
                raise
            if existing is None:
                try:
                    existing = os.open(target, _FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    # Made by someone else since the check: not ours, and not recorded.
                    del self.recorded[key]
                    record()
                    raise _not_ours(target, None, self._state_path) from None
                try_lock(existing)  # a new file: nobody else has it open as a sink
                durable.fsync_directory(target.parent)  # the new file survives a power cut
            return os.fdopen(existing, "ab")
        except BaseException:
            if existing is not None:
                os.close(existing)
            raise

    def moves_aside(self, path: str | os.PathLike[str]) -> bool:
        """Whether opening `path` moves an earlier output aside (restart=True, a non-empty
        file): the old state must be set aside first, or a run killed in between would
        leave a state that counts output in a file no longer there."""
        if not self._restart or not isinstance(path, (str, os.PathLike)):
            return False
        target = resolve(path)
        if os.path.relpath(target, self._state_path.parent) in self.recorded:
            return False
        try:
            info = os.stat(target)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size > 0

    def _refuse_a_second_name(self, target: Path) -> None:
        """Raise `UsageError` when `target` is a file this run opened as a sink under
        another name (a hard link to it)."""
        with contextlib.suppress(OSError):  # a new file: no other name
            found = os.stat(target)
            for sink in self.by_path.values():
                other = os.fstat(sink._out.fileno())
                if (other.st_dev, other.st_ino) == (found.st_dev, found.st_ino):
                    raise UsageError(
                        f"{target} is the same file as {sink.path}, already a sink of this "
                        "job (a hard link to it): open each output file once"
                    )

    def mark(self) -> None:
        """An item boundary: every byte written so far belongs to items done."""
        for sink in self.by_path.values():
            sink.marked = sink._length

    def sync(self, mark: bool) -> dict[str, SinkRecord]:
        """Before a save: flush and fsync every sink (after marking it, if `mark`: no item
        is in flight); return the records the state file is to hold."""
        if self.finishing:
            for sink in self.by_path.values():
                if sink.footer_at is None:  # the output after the loop starts there
                    sink.footer_at = sink.marked
        if mark:
            self.mark()
        records = dict(self.recorded)
        for key, sink in self.by_path.items():
            sink._sync()
            records[key] = sink._record()
        return records

    def saved(self, records: dict[str, SinkRecord]) -> None:
        """The state file now holds `records`."""
        self.recorded = records
        for key, sink in self.by_path.items():
            sink._saved(records[key])

    def changed(self, mark: bool) -> bool:
        """Whether a save would record other lengths than the state file has."""
        for key, sink in self.by_path.items():
            recorded = self.recorded.get(key)
            footer_at = sink.footer_at
            if self.finishing and footer_at is None:
                footer_at = sink.marked
            if (
                recorded is None
                or (sink._length if mark else sink.marked) != recorded["length"]
                or footer_at != recorded.get("footer_at")
            ):
                return True
        return False

    def close(self) -> None:
        """The run ends: close every sink (idempotent)."""
        for sink in self.by_path.values():
            sink._close()


_UTF8_NAMES = frozenset({"utf-8"})  # codecs.lookup's name for every spelling of UTF-8


# Read too: the tail's check. O_BINARY: on Windows a descriptor opened without it writes
# "\n" as "\r\n", and the lengths the state file records would not be the file's.
_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _open_existing(target: Path) -> int | None:
    """A descriptor of the regular file at `target`, locked as this job's sink; None when
    there is no file. `UsageError` for another kind of file, or one another run holds."""
    with contextlib.suppress(OSError):  # a FIFO's open would wait for a reader: not opened
        if not stat.S_ISREG(os.stat(target).st_mode):
            raise _not_regular(target)
    try:
        fd = os.open(target, _FLAGS)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(target)
        if not try_lock(fd):
            raise UsageError(
                f"sink {target} is open in another run, as a sink of another job: a sink "
                "belongs to one job, whose next run cuts off what others appended. Give "
                "each job its own output file."
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_recorded(target: Path, recorded: SinkRecord, state: Path) -> BinaryIO:
    """Open `target`, a sink the state file records: its bytes before the recorded length
    checked, and cut back to it."""
    length = recorded["length"]
    fd = _open_existing(target)
    if fd is None:
        if length:  # a file the state file counts output in is never made up
            raise _shorter(target, None, length, state)
        fd = os.open(target, _FLAGS | os.O_CREAT, 0o666)  # recorded empty: made again
        try_lock(fd)
    try:
        size = os.fstat(fd).st_size
        if size < length:
            raise _shorter(target, size, length, state)
        tail = recorded.get("tail")
        if tail is not None and _tail(fd, length) != tail:
            raise _replaced(target, length, state)
        if size > length:
            os.ftruncate(fd, length)  # the output of items not done, to run again
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def _tail(fd: int, length: int) -> str:
    """The CRC-32 of the last `SINK_TAIL_BYTES` bytes before `length` in file `fd`."""
    size = min(length, SINK_TAIL_BYTES)
    return f"crc32:{zlib.crc32(_read_at(fd, size, length - size)):08x}"


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """Up to `size` bytes of file `fd` from `offset` (fewer at its end)."""
    if not hasattr(os, "pread"):  # pragma: no cover (Windows: appends go to the end anyway)
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# The sinks open in this process, for `_silence_in_forked_child`.
_open_sinks: weakref.WeakSet[Sink] = weakref.WeakSet()


def _silence_in_forked_child() -> None:
    """Run in the child after ``os.fork()``: the sinks' descriptors now write to
    /dev/null. The child holds a copy of each sink's buffer, which it would flush into the
    file when it closes it or exits: the parent's output a second time."""
    if not _open_sinks:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for sink in list(_open_sinks):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(null, sink._out.fileno())
    finally:
        os.close(null)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_silence_in_forked_child)


def _encoder_after(length: int, encoding: str) -> Any:
    """An incremental encoder's `encode` for a file that holds `length` bytes already."""
    encoder = codecs.getincrementalencoder(encoding)()
    if length:
        encoder.encode("")  # the byte order mark, if the encoding has one, is in the file
    return encoder.encode


def _not_regular(target: Path) -> UsageError:
    return UsageError(f"sink {target} is not a regular file: pass the path of a file")


def _not_ours(target: Path, size: int | None, state: Path) -> UsageError:
    held = "an empty file" if not size else f"a file of {size:,} bytes"
    return UsageError(
        f"sink {target} is {held} this job did not make: {state} records no sink at this "
        "path, and a job records each sink it opens before it makes the file, so this one "
        "is another job's output file, or yours. Nothing was changed. Move it aside or "
        "delete it, pass another path, or start the job over with restart=True (which "
        "moves a file that holds data aside)."
    )


def _replaced(target: Path, length: int, state: Path) -> StateFileError:
    return StateFileError(
        f"sink {target} is not the file this job wrote: its last "
        f"{min(length, SINK_TAIL_BYTES):,} bytes before byte {length:,}, where {state} "
        "records the end of the job's output, differ from those the job wrote (the file "
        "was replaced or rewritten: another job's output, a regenerated or restored file). "
        "Nothing was changed, and nothing cut. Put the job's own file back, or start the "
        "job over with restart=True (which moves this file aside)."
    )


def _shorter(target: Path, size: int | None, recorded: int, state: Path) -> StateFileError:
    found = "is missing" if size is None else f"holds {size:,} bytes"
    return StateFileError(
        f"sink {target} {found}, but {state} records {recorded:,} bytes of output in it: it "
        "lost output of items done (deleted, cut, or restored from an older copy). Nothing "
        "was changed. Restore the file, or start the job over with restart=True."
    )


def _write_error(path: Path, error: OSError) -> StateWriteError:
    return StateWriteError(
        f"could not write to sink {path}: {describe_os_error(error)}. The state file is "
        "unchanged by it; the next run cuts the sink back to what the last save recorded.",
        errno=error.errno,
    )
