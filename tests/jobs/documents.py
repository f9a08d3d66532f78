"""State files and key journals written by hand, as docs/state-file.md describes them.

Independent of the library's own writer, so that tests can build what a save never
writes (damage, strays, copies, counters at their limits) and check the reader against
the documented format.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

KEYS = 0x4B  # magic byte of a record of keys
JOB = 0x4A  # magic byte of the job record
MAX_PAYLOAD = 16 << 20  # the largest payload a record may claim
JOB_ID = "0123456789abcdef0123456789abcdef"
OTHER_JOB_ID = "fedcba9876543210fedcba9876543210"


def checksummed(document: dict[str, Any]) -> bytes:
    """`document` as a state file: orjson with sorted keys, then its CRC-32 checksum."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()


SAVE = 0x53  # magic byte of a record of the progress log


def saved_records(state: Path) -> list[dict[str, Any]]:
    """The records of the progress log (``<state>.log``) that extend the state file, read
    as docs/state-file.md says: in order, while each checks and its ``base`` is the
    document's ``log`` id and its ``seq`` the next."""
    document = orjson.loads(state.read_bytes())
    log = state.with_name(state.name + ".log")
    if "log" not in document or not log.exists():
        return []
    records: list[dict[str, Any]] = []
    data, offset = log.read_bytes(), 0
    while offset + 9 <= len(data):
        magic, length, crc = struct.unpack_from("<BII", data, offset)
        payload = data[offset + 9 : offset + 9 + length]
        checks = zlib.crc32(data[offset : offset + 5] + payload) == crc
        if magic != SAVE or len(payload) < length or not checks:
            break
        record = orjson.loads(payload)
        if record["base"] != document["log"] or record["seq"] != len(records) + 1:
            break
        records.append(record)
        offset += 9 + length
    return records


def saved_progress(state: Path) -> dict[str, Any]:
    """The progress a state file and its progress log hold together: the last record's
    that extends the document (`saved_records`), or the document's own."""
    records = saved_records(state)
    if records:
        progress: dict[str, Any] = records[-1]["progress"]
        return progress
    return orjson.loads(state.read_bytes())["progress"]  # type: ignore[no-any-return]


def logged_keys(state: Path) -> set[str | int]:
    """The keys the records of the progress log hold past the key journal's committed
    length (plain keys only, as `journal_keys`)."""
    return {key for record in saved_records(state) for key in record.get("keys", ())}


def saved_keys(state: Path) -> set[str | int]:
    """The keys a keyed job's state file commits: its key journal up to the committed
    length, and the keys of its progress log's records."""
    journal = saved_progress(state)["journal"]
    generation, length = journal["generation"], journal["length"]
    return journal_keys(journal_file(state, generation), length) | logged_keys(state)


def frame(payload: bytes, magic: int = KEYS, claimed: int | None = None) -> bytes:
    """A journal record: magic, payload length (or `claimed`), CRC-32, payload."""
    prefix = struct.pack("<BI", magic, len(payload) if claimed is None else claimed)
    return prefix + struct.pack("<I", zlib.crc32(prefix + payload)) + payload


def job_frame(job_id: str) -> bytes:
    """The job record that starts every generation of job `job_id`'s journal."""
    return frame(orjson.dumps({"job_id": job_id}), JOB)


def key_frames(batches: Sequence[Sequence[str | int]]) -> list[bytes]:
    """One record per batch (keys orjson writes as they are: str and 64-bit int)."""
    return [frame(orjson.dumps(list(batch))) for batch in batches]


def document(
    progress: dict[str, Any], *, runs: int = 1, version: int = 2, state: Any = None
) -> dict[str, Any]:
    """A state document holding `progress`."""
    return {
        "format_version": version,
        "progress": progress,
        "state": {} if state is None else state,
        "runs": runs,
        "created_at": "2026-11-26T09:12:01.512034+00:00",
        "saved_at": "2026-11-26T10:40:17.004211+00:00",
        "writer": "resumable-loop 0.1.0",
    }


def keyed(
    generation: int,
    length: int,
    done: int,
    *,
    job_id: str | None = JOB_ID,
    first_generation: int = 0,
    finished: bool = False,
) -> dict[str, Any]:
    """A state document of keyed progress; a job id makes it version 2, none version 1."""
    journal: dict[str, Any] = {
        "generation": generation,
        "length": length,
        "first_generation": first_generation,
    }
    if job_id is not None:
        journal["job_id"] = job_id
    progress = {"kind": "keys", "journal": journal, "done": done, "finished": finished}
    return document(progress, version=1 if job_id is None else 2)


def journal_file(state: Path, generation: int, kind: str = "keys") -> Path:
    """The journal file of `generation` beside the state file `state`:
    ``<name>.keys-<g>``, or ``<name>.failed-<g>`` for the failure journal."""
    return state.with_name(f"{state.name}.{kind}-{generation}")


def journal_generations(state: Path, kind: str = "keys") -> dict[int, Path]:
    """The journal files beside `state`, by generation."""
    name = re.compile(rf"{re.escape(state.name)}\.{kind}-(0|[1-9][0-9]*)")
    return {
        int(found[1]): path
        for path in state.parent.iterdir()
        if (found := name.fullmatch(path.name)) is not None
    }


def journal_keys(journal: Path, length: int) -> set[str | int]:
    """The keys of the records in the first `length` bytes of `journal`, read as the format
    says (plain keys only: no tagged ones, no checks of the CRC or the job record)."""
    data = journal.read_bytes()[:length]
    keys: set[str | int] = set()
    at = 0
    while at < len(data):
        magic, size = struct.unpack_from("<BI", data, at)
        if magic == KEYS:
            keys.update(orjson.loads(data[at + 9 : at + 9 + size]))
        at += 9 + size
    return keys


def files_in(directory: Path) -> dict[str, object]:
    """Every file in `directory` but the lock file (which a run leaves by design): its
    bytes, or for a file over 64 MiB (sparse, in tests) its size and change times."""
    found: dict[str, object] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.endswith(".lock"):
            status = path.stat()
            large = status.st_size > 64 << 20
            found[path.name] = (
                (status.st_size, status.st_mtime_ns, status.st_ctime_ns)
                if large
                else path.read_bytes()
            )
    return found


# The progress log's framing, as docs/state-file.md documents it: magic, payload length, CRC.
LOG_HEADER = struct.Struct("<BII")


def log_records(data: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each whole record of a progress log."""
    found, offset = [], 0
    while offset + LOG_HEADER.size <= len(data):
        _, length, _ = LOG_HEADER.unpack_from(data, offset)
        found.append((offset, offset + LOG_HEADER.size + length))
        offset += LOG_HEADER.size + length
    return found
