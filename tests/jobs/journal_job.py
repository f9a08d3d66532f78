"""A child that appends batches of keys to a key journal, for kill -9 and fault tests.

    python journal_job.py JOURNAL append --start LENGTH --first BATCH --batches N --size M
                                         [--fsize-limit BYTES]
    python journal_job.py JOURNAL fold --batches N --size M

``append`` opens the journal at its committed length LENGTH (cutting off anything past
it), prints ``opened <size>`` with the file's size after the open, then appends the
batches ``batch_keys(BATCH)``, ``batch_keys(BATCH + 1)``, ... ``N`` of them, and prints
``committed <batch> <length>`` after each append has returned (the record is flushed).
When an append raises `StateWriteError` it prints ``error <json>`` (``message`` and the
``errno`` name), tries one more append of the same batch, prints the outcome as
``again <json>`` or ``again committed <length>``, and exits. ``--fsize-limit`` lowers
``RLIMIT_FSIZE`` to BYTES after the first append, with ``SIGXFSZ`` ignored, so a write
past the limit stops short and the next write fails with ``EFBIG``.

``fold`` folds the keys of batches 0 to N - 1 into a new journal at JOURNAL and prints
``folded <length>``, or ``error <json>``.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import signal
from pathlib import Path

from resumable import StateWriteError
from resumable._store.journal_files import JournalWriter, fold

Key = str | int  # what a key function returns (docs/state-file.md, Key journal)


def batch_keys(batch: int, size: int) -> list[Key]:
    """The keys of batch number `batch`: ints, the same numbers as str, URLs, big ints."""
    keys: list[Key] = []
    for index in range(size):
        number = batch * size + index
        kind = index % 4
        if kind == 0:
            keys.append(number)
        elif kind == 1:
            keys.append(str(number - 1))  # the str twin of the int key just before
        elif kind == 2:
            keys.append(f"https://example.org/catalogue/é/{number}?page={batch}")
        else:
            keys.append(2**70 + number)  # beyond the 64 bits orjson writes
    return keys


def say(line: str) -> None:
    """Print one line and flush it at once."""
    print(line, flush=True)


def report(error: StateWriteError) -> str:
    """The message and errno name of a `StateWriteError`, as JSON."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return json.dumps({"message": str(error), "errno": name})


def append(journal: Path, start: int, first: int, batches: int, size: int, limit: int) -> None:
    """Append the batches and report each committed length."""
    with JournalWriter.open(journal, start) as writer:
        say(f"opened {journal.stat().st_size}")
        for batch in range(first, first + batches):
            try:
                length = writer.append(batch_keys(batch, size))
            except StateWriteError as error:
                say(f"error {report(error)}")
                try:
                    length = writer.append(batch_keys(batch, size))
                except StateWriteError as again:
                    say(f"again {report(again)}")
                else:
                    say(f"again committed {length}")
                return
            say(f"committed {batch} {length}")
            if limit and batch == first:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


def main() -> None:
    """Run the command."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("journal", type=Path)
    parser.add_argument("command", choices=["append", "fold"])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--fsize-limit", type=int, default=0)
    parsed = parser.parse_args()
    journal = Path(parsed.journal)
    batches, size = int(parsed.batches), int(parsed.size)
    if parsed.command == "append":
        start, first, limit = int(parsed.start), int(parsed.first), int(parsed.fsize_limit)
        append(journal, start, first, batches, size, limit)
        return
    keys = [key for batch in range(batches) for key in batch_keys(batch, size)]
    try:
        length = fold(journal, keys)
    except StateWriteError as error:
        say(f"error {report(error)}")
        return
    say(f"folded {length}")


if __name__ == "__main__":
    main()
