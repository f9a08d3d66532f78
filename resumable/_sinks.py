"""Output files in step with progress: `Sink` (what `Resumable.sink` returns) and `Sinks`
(the job's set of them, which the session holds and every save records).

- ``r.sink(path)``: opened to append, and cut back to the length the state file records.
  A new sink (the state file records none at this path) starts empty, and a save records
  it at 0 bytes at once.
- The body writes: into a buffer in memory, counted.
- An item boundary: the length is *marked*; every byte so far belongs to items done. A
  job with sinks has a boundary after every item (every batch, every result of ``r.map``).
- A save: every sink is flushed and fsynced, then the state file records the marked
  lengths beside the progress. Output reaches the disk before the state that counts it.
- The end of the run: closed.

Before the loop starts and once it has finished, no item is in flight: a save marks every
sink first, so a header or a footer written then counts at once. Inside the loop a save
(``r.save()`` in the body, the exit after an exception or a second ctrl+c) records the
lengths of the last boundary, so the output of the item in flight is cut off on the next
run, which runs that item again.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import stat
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from resumable._errors import (
    StateFileError,
    StateWriteError,
    UsageError,
    describe_os_error,
    warn,
)
from resumable._store import durable
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

    def __init__(self, path: Path, file: BinaryIO, length: int, mode: SinkMode, encoding: str):
        self.path = path
        self.mode = mode
        self.encoding = encoding
        self._file = file
        self._length = length  # bytes in the file and in the buffer
        self.marked = length  # the length at the last moment no item was in flight
        self.synced = length  # the length the last save flushed to the disk and recorded
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
            self._file.flush()
            durable.fsync_file(self._file.fileno())
        except OSError as error:
            self._failed = error
            raise _write_error(self.path, error) from error

    def _close(self) -> None:
        # Closing flushes what the buffer holds; a failure there loses nothing the state
        # file counts (the last save fsynced all of that).
        with contextlib.suppress(OSError, ValueError):
            self._file.close()


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
    """A job's sinks: the lengths its state file records, and those this run opened."""

    def __init__(self, state_path: Path, *, restart: bool) -> None:
        self._state_path = state_path
        self._restart = restart
        # As the state file has it: the path relative to the state file's folder -> length.
        self.recorded: dict[str, int] = {}
        self.by_path: dict[str, Sink] = {}  # opened by this run
        self._opened_here: set[str] = set()  # and first recorded by this run, too

    def open(self, path: str | os.PathLike[str], mode: str, encoding: str) -> tuple[Sink, bool]:
        """Open the sink at `path`, cut back to its recorded length; and whether it is new
        (the state file records none there: a save must record it before it is used)."""
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
        sink = _open_cut(target, recorded, state, self._restart, text_or_bytes, encoding)
        self.by_path[key] = sink
        self._opened_here.add(key)
        return sink, recorded is None

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
                other = os.fstat(sink._file.fileno())
                if (other.st_dev, other.st_ino) == (found.st_dev, found.st_ino):
                    raise UsageError(
                        f"{target} is the same file as {sink.path}, already a sink of this "
                        "job (a hard link to it): open each output file once"
                    )

    def mark(self) -> None:
        """An item boundary: every byte written so far belongs to items done."""
        for sink in self.by_path.values():
            sink.marked = sink._length

    def sync(self, mark: bool) -> dict[str, int]:
        """Before a save: flush and fsync every sink (after marking it, if `mark`: no item
        is in flight); return the lengths the state file is to record."""
        if mark:
            self.mark()
        lengths = dict(self.recorded)
        for key, sink in self.by_path.items():
            sink._sync()
            lengths[key] = sink.marked
        return lengths

    def saved(self, lengths: dict[str, int]) -> None:
        """The state file now records `lengths`."""
        self.recorded = lengths
        for key, sink in self.by_path.items():
            sink.synced = lengths[key]

    def changed(self, mark: bool) -> bool:
        """Whether a save would record other lengths than the state file has."""
        return any(
            (sink._length if mark else sink.marked) != self.recorded.get(key)
            for key, sink in self.by_path.items()
        )

    def close(self) -> None:
        """The run ends: close every sink (idempotent)."""
        for sink in self.by_path.values():
            sink._close()


_UTF8_NAMES = frozenset({"utf-8"})  # codecs.lookup's name for every spelling of UTF-8


def _open_cut(
    target: Path, recorded: int | None, state: Path, restart: bool, mode: SinkMode, encoding: str
) -> Sink:
    """Open `target` to append, cut back to `recorded` bytes (None: a new sink, empty)."""
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    if not recorded:
        flags |= os.O_CREAT  # a file the state file counts output in is never made up
    fd: int | None = None
    with contextlib.suppress(OSError):  # a FIFO's open would wait for a reader: not opened
        if not stat.S_ISREG(os.stat(target).st_mode):
            raise _not_regular(target)
    try:
        fd = os.open(target, flags, 0o666)
    except FileNotFoundError:
        if not recorded:
            raise  # its folder is missing: the OS error names the path
        raise _shorter(target, None, recorded, state) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(target)
        if not try_lock(fd):
            raise UsageError(
                f"sink {target} is open in another run, as a sink of another job: a sink "
                "belongs to one job, whose next run cuts off what others appended. Give "
                "each job its own output file."
            )
        size = info.st_size
        if recorded is None and size and restart:
            # restart=True starts the output over too, keeping the old one under a new name.
            fd = durable.close_fd(fd)
            os.replace(target, aside_path(target, "reset"))
            fd = os.open(target, flags | os.O_CREAT, 0o666)
            try_lock(fd)  # a new file: nobody else has it open as a sink
            size = 0
        elif recorded is None and size:
            raise UsageError(
                f"sink {target} holds {size:,} bytes this job did not write: {state} records "
                "no sink at this path. Move the file aside or delete it, or start the job "
                "over with restart=True (which moves it aside)."
            )
        elif recorded is not None and size < recorded:
            raise _shorter(target, size, recorded, state)
        elif recorded is not None and size > recorded:
            os.ftruncate(fd, recorded)  # the output of items not done, to run again
        if recorded is None:
            durable.fsync_directory(target.parent)  # the new file survives a power cut
        file = os.fdopen(fd, "ab")
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return Sink(target, file, recorded or 0, mode, encoding)


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
                os.dup2(null, sink._file.fileno())
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
