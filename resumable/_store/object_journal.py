"""The journals of a job on object storage (done keys, failure records): chunk objects.

Objects have no append. A journal is kept as numbered chunks under a generation, each a
whole object of records in the journal format (`resumable._store.journal_codec`):

| object | what it holds |
| --- | --- |
| ``<key>.keys-<job id>-<generation>.<n>`` | chunk n of the key journal (1) |
| ``<key>.failed-<job id>-<generation>.<n>`` | chunk n of the failure journal (1) |

(1) Chunk 0 starts with the job record, which ties the journal to its job.

The state document's reference names the generation and how many chunks it commits
(`length` counts chunks here, not bytes). A save puts its chunk before the state object
that commits it; a chunk past `length` is one that no state committed, and the next write
replaces it.

Each run writes a generation of its own: its first write puts every entry into chunk 0
of a new, random generation (a fold). Two runs of one job (one of them paused past its
lease) therefore never write the same chunk, and the one fenced off at its save leaves
only chunks that no state names. A generation is folded again once it holds
`FOLD_CHUNKS` chunks, so a resume reads at most that many objects. The chunks of a
generation that a fold replaced are deleted once two saves have committed since (then
neither the state object nor its backup names them); after a resume from the backup,
never (the damaged state set aside may name them). A run killed between a fold and that
deletion leaves its chunks behind; they cost storage, not correctness.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass, replace
from typing import Any

from resumable._errors import StateFileError
from resumable._store import journal_codec
from resumable._store.journal_api import (
    MAX_GENERATION,
    JournalChange,
    JournalRead,
    JournalReference,
)
from resumable._store.journal_codec import JOB_MAGIC, KEYS, DamageError, Kind
from resumable._store.object_backend import Objects, TooLargeError

FOLD_CHUNKS = 32  # chunks of a generation before the next write folds them into one
# A failure journal is also folded once its entries are more than twice its records (and
# over this many): superseded entries are then half of it.
FOLD_MIN_ENTRIES = 1_000
_MAX_CHUNK_BYTES = 1 << 32  # a fold of millions of keys is one object: no real bound
_RESTORE = (
    "Restore the object, or start the job over (every item runs again): restart=True in "
    "Python, or `resumable reset` with the state object's URL at the shell."
)


@dataclass
class _Retired:
    """A generation a fold replaced: deleted once `saves` is two saves behind."""

    kind: Kind
    reference: JournalReference
    saves: int


class ObjectJournals:
    """The journals of the state object at `key` in `objects`, for `ObjectStore`."""

    def __init__(self, objects: Objects, key: str, url: str) -> None:
        self._objects = objects
        self._key = key
        self._url = url
        self._own: dict[Kind, int] = {}  # the generation this run writes, by kind
        self._retired: list[_Retired] = []
        self._saves = 0  # state saves this run committed
        self.from_backup = False  # the state was read from the backup: delete nothing

    def chunk_url(self, kind: Kind, reference: JournalReference, index: int) -> str:
        """The URL of chunk `index` of the journal `reference` names, for messages."""
        return self._url[: -len(self._key)] + self._chunk(kind, reference, index)

    def _chunk(self, kind: Kind, reference: JournalReference, index: int) -> str:
        return f"{self._key}.{kind.suffix}-{reference.job_id}-{reference.generation}.{index}"

    def new_journal(self, kind: Kind) -> JournalReference:
        """A new journal of `kind`, of a new job id; nothing is written yet."""
        generation = _new_generation()
        self._own[kind] = generation
        return JournalReference(generation, 0, generation, journal_codec.new_job_id())

    def read_journal(self, kind: Kind, reference: JournalReference) -> JournalRead:
        """The entries of the chunks `reference` commits; `StateFileError` when one is
        missing, damaged, or another job's."""
        if reference.job_id is None:
            raise StateFileError(
                f"the state object {self._url} names a {kind.name} without a job id, which "
                f"no store on object storage writes. {_RESTORE}"
            )
        keys: set[Any] = set()
        entries: list[Any] = []
        for index in range(reference.length):
            where = self.chunk_url(kind, reference, index)
            try:
                blob = self._objects.get(self._chunk(kind, reference, index), _MAX_CHUNK_BYTES)
            except TooLargeError:  # pragma: no cover - 4 GiB
                blob = None
            if blob is None:
                raise StateFileError(
                    f"the {kind.name} chunk {where} is missing, but the state object "
                    f"{self._url} counts it as saved progress. {_RESTORE}"
                )
            try:
                _decode(blob.data, kind, reference.job_id, index, keys, entries)
            except DamageError as damage:
                raise StateFileError(
                    f"the {kind.name} chunk {where} is damaged: {damage}. The state object "
                    f"{self._url} counts it as saved progress. {_RESTORE}"
                ) from None
        found: set[Any] | list[Any] = keys if kind is KEYS else entries
        return JournalRead(
            found,
            replace(reference, entries=len(found)),
            self.chunk_url(kind, reference, 0),
        )

    def write_journal(self, change: JournalChange) -> JournalReference:
        """Put `change` as the next chunk, or every entry into a new generation when this
        run has not written one yet, when asked, or when that is due; return the
        reference a state document commits."""
        kind, reference = change.kind, change.reference
        if not (change.appended or change.rewrite):
            return reference
        assert reference.job_id is not None  # read_journal refuses a journal without one
        if (
            change.rewrite
            or self._own.get(kind) != reference.generation
            or reference.length >= FOLD_CHUNKS
            or (
                kind is not KEYS
                and reference.entries + len(change.appended)
                > max(FOLD_MIN_ENTRIES, 2 * change.count)
            )
        ):
            return self._fold(kind, reference, change.everything())
        data = _encode(change.appended, kind)
        if reference.length == 0:
            data = journal_codec.job_record(reference.job_id) + data
        self._objects.put(self._chunk(kind, reference, reference.length), data)
        return replace(
            reference,
            length=reference.length + 1,
            entries=reference.entries + len(change.appended),
        )

    def _fold(self, kind: Kind, old: JournalReference, entries: list[Any]) -> JournalReference:
        assert old.job_id is not None
        generation = _new_generation()
        new = JournalReference(generation, 1, generation, old.job_id, len(entries))
        data = journal_codec.job_record(old.job_id) + _encode(entries, kind)
        self._objects.put(self._chunk(kind, new, 0), data)
        self._own[kind] = generation
        if old.length and not self.from_backup:
            self._retired.append(_Retired(kind, old, self._saves))
        return new

    def saved(self) -> None:
        """A state save committed: delete the generations no state names any more (two
        saves after the fold that replaced them: the backup names the one before)."""
        self._saves += 1
        due = [retired for retired in self._retired if self._saves >= retired.saves + 2]
        for retired in due:
            for index in range(retired.reference.length):
                self._objects.delete(self._chunk(retired.kind, retired.reference, index))
            self._retired.remove(retired)


def _new_generation() -> int:
    """A random generation: two runs of one job never write the same chunk names."""
    return 1 + secrets.randbelow(MAX_GENERATION)


def _encode(entries: Any, kind: Kind) -> bytes:
    if kind is KEYS:
        return journal_codec.encode_records(entries)
    return journal_codec.encode_entries(list(entries), kind)


def _decode(
    data: bytes, kind: Kind, job_id: str, index: int, keys: set[Any], entries: list[Any]
) -> None:
    """Check every record of a chunk and take its keys (or entries)."""
    stream = io.BytesIO(data)
    offset = 0
    while offset < len(data):
        magic, payload = journal_codec.read_record(stream, len(data) - offset, kind.magic)
        if magic == JOB_MAGIC:
            if offset or index:
                raise DamageError("a job record stands here, and one may only start chunk 0")
            found = journal_codec.decode_job(payload)
            if found != job_id:
                raise DamageError(f"its job id is {found}, the state object's is {job_id}")
        elif offset == 0 and index == 0:
            raise DamageError("chunk 0 does not start with the job record")
        elif kind is KEYS:
            keys.update(journal_codec.decode_keys(payload))
        else:
            entries.extend(journal_codec.decode_entries(payload))
        offset += journal_codec.HEADER_SIZE + len(payload)
