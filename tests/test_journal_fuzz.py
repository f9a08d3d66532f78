"""A fuzzer over key journal files: whatever the bytes, a clean load or a StateFileError.

Each example builds a keyed job by hand, a state file and its journal as
docs/state-file.md describes them (with a job id, format 2, or without, format 1), makes
one change, and opens the job through the public API. The change is a truncation, a bit
flip, a record with a valid CRC and bad contents, a record with good keys, a length field
that claims what is not there (over a sparse stretch of zeros too), another committed
length, or another job id in the state file; and the test knows what it must give:
damage inside the committed bytes is a `StateFileError`, and a load is clean with exactly
the keys the committed records hold.

Never allowed: any other exception, a hang (an alarm fails the example), more memory
than reading one bounded piece of a record needs (tracemalloc), or a changed file after a
refusal. A few hundred examples run by default, thousands under the ``slow`` marker
(``nox -s torture``); every truncation and every bit flip of one journal run always.
"""

from __future__ import annotations

import signal
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Resumable, StateFileError

from jobs.documents import (
    JOB,
    JOB_ID,
    KEYS,
    MAX_PAYLOAD,
    OTHER_JOB_ID,
    checksummed,
    files_in,
    frame,
    job_frame,
    keyed,
)

Key = str | int
# Reading holds a record of at most 16 MiB, but checks the CRC of one over 1 MiB a MiB at
# a time first: the fuzzed records with a valid CRC are small, so no example may need
# more than that piece and a little besides.
MEMORY_BOUND = 2 << 20
SECONDS_BEFORE_A_HANG = 30
SPARSE_SIZE = 24 << 20  # beyond the 1 MiB piece, within the 16 MiB bound and past it

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_KEYS = st.lists(st.one_of(_TEXT, _INT), min_size=1, max_size=6)


@dataclass
class Case:
    """A job's files and what opening it must give: its keys, or None for a refusal."""

    job_id: str | None  # the state file's
    journal: bytes
    committed: int
    expected: frozenset[Key] | None
    sparse: bool = False  # the journal continues with zeros up to SPARSE_SIZE
    state_job_id: object = field(default=None)


@dataclass
class Journal:
    """A well-formed journal: its records and the keys each holds."""

    job_id: str | None
    records: list[bytes]
    keys: list[list[Key]]

    @property
    def head(self) -> int:
        """How many of `records` come before the key records (the job record, if any)."""
        return 0 if self.job_id is None else 1

    def boundaries(self) -> list[int]:
        """The offset of each record's start, then the end."""
        offsets = [0]
        for record in self.records:
            offsets.append(offsets[-1] + len(record))
        return offsets

    def keys_before(self, offset: int) -> frozenset[Key]:
        """The keys of the records that end at or before `offset`."""
        ends = self.boundaries()[1:]
        batches = self.keys[: sum(1 for end in ends[self.head :] if end <= offset)]
        return frozenset(key for batch in batches for key in batch)

    def data(self) -> bytes:
        return b"".join(self.records)


def build(job_id: str | None, batches: Sequence[Sequence[Key]]) -> Journal:
    records = [] if job_id is None else [job_frame(job_id)]
    records += [frame(orjson.dumps(list(batch))) for batch in batches]
    return Journal(job_id, records, [list(batch) for batch in batches])


def tagged(key: Key) -> object:
    """`key` as the journal writes it (docs/state-file.md: ints beyond 64 bits and strs
    that are not UTF-8 as one-entry objects)."""
    if isinstance(key, int) and not -(2**63) <= key <= 2**64 - 1:
        return {"int": format(key, "x")}
    if isinstance(key, str):
        try:
            key.encode()
        except UnicodeEncodeError:
            return {"str": key.encode("utf-8", "surrogatepass").hex()}
    return key


# -- the changes ---------------------------------------------------------------------------

_BAD_ELEMENTS = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    # Within orjson's 64 bits: a bigger int could not be written into the record at all.
    st.lists(st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=2),
    st.dictionaries(st.sampled_from(["int", "str", "x"]), st.one_of(_TEXT, _INT), max_size=3),
)
_NOT_A_KEY_LIST = st.one_of(
    st.builds(
        lambda keys, bad: orjson.dumps([*keys, bad]), st.lists(_TEXT, max_size=2), _BAD_ELEMENTS
    ),
    st.builds(orjson.dumps, st.one_of(_TEXT, _INT, st.dictionaries(_TEXT, _INT, max_size=2))),
    st.sampled_from(
        [b"[18446744073709551616]", b'[{"int":"zz"}]', b'[{"str":"d800"}]', b'["a"', b"", b"[1]]"]
    ),
    st.binary(max_size=12).map(lambda junk: b"\xff" + junk),  # never UTF-8, so never JSON
)
_NOT_A_JOB_RECORD = st.one_of(
    _NOT_A_KEY_LIST,
    st.builds(
        lambda value: orjson.dumps({"job_id": value}),
        st.one_of(_TEXT, _INT, st.just(JOB_ID.upper())),
    ),
    st.builds(
        lambda name: orjson.dumps({name: JOB_ID}), _TEXT.filter(lambda name: name != "job_id")
    ),
    st.just(orjson.dumps({"job_id": JOB_ID, "more": 1})),
    st.just(orjson.dumps([JOB_ID])),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    job_id = draw(st.sampled_from([JOB_ID, None]))
    journal = build(job_id, draw(st.lists(_KEYS, max_size=4)))
    data, committed = journal.data(), len(journal.data())
    everything = journal.keys_before(committed)
    tail = draw(st.binary(max_size=12))  # past the committed length: never read
    starts = journal.boundaries()
    change = draw(
        st.sampled_from(
            [
                "none",
                "truncate",
                "flip",
                "bad record",
                "misplaced job record",
                "good record",
                "length field",
                "committed length",
                "state job id",
            ]
        )
    )
    case = Case(job_id, data + tail, committed, everything, state_job_id=job_id)
    if change == "truncate":
        cut = draw(st.integers(0, len(case.journal)))
        case.journal = case.journal[:cut]
        case.expected = everything if cut >= committed else None
    elif change == "flip" and case.journal:
        at = draw(st.integers(0, len(case.journal) - 1))
        flipped = bytearray(case.journal)
        flipped[at] ^= 1 << draw(st.integers(0, 7))
        case.journal = bytes(flipped)
        case.expected = everything if at >= committed else None
    elif change == "bad record":
        index = draw(st.integers(journal.head, len(journal.records)))
        record = frame(draw(_NOT_A_KEY_LIST), KEYS)
        case.journal, case.committed = _insert(data, starts[index], record, tail)
        case.expected = None
    elif change == "misplaced job record":
        # Anywhere but first in a tied journal; anywhere at all in an untied one.
        index = draw(st.integers(journal.head, len(journal.records)))
        payload = draw(st.one_of(st.just(orjson.dumps({"job_id": JOB_ID})), _NOT_A_JOB_RECORD))
        case.journal, case.committed = _insert(data, starts[index], frame(payload, JOB), tail)
        case.expected = None
    elif change == "good record":
        index = draw(st.integers(0, len(journal.records)))
        keys = draw(
            st.lists(
                st.one_of(
                    _TEXT,
                    _INT,
                    st.integers(min_value=2**64, max_value=2**200),
                    st.integers(max_value=-(2**63) - 1, min_value=-(2**200)),
                    st.text(
                        st.characters(
                            min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[]
                        ),
                        min_size=1,
                        max_size=3,
                    ),
                ),
                max_size=5,
            )
        )
        record = frame(orjson.dumps([tagged(key) for key in keys]))
        case.journal, case.committed = _insert(data, starts[index], record, tail)
        # Before the job record of a tied journal, even good keys are not this job's.
        case.expected = None if index < journal.head else everything | frozenset(keys)
    elif change == "length field" and journal.records:
        index = draw(st.integers(0, len(journal.records) - 1))
        claimed = draw(
            st.one_of(
                st.integers(0, 2**32 - 1),
                st.sampled_from(
                    [0, 1, 1 << 20, (1 << 20) + 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**32 - 1]
                ),
            )
        )
        record, start = journal.records[index], starts[index]
        header = struct.pack("<BI", record[0], claimed) + record[5:9]
        if draw(st.booleans()) and start + 9 + claimed <= len(data):
            # A CRC that matches what the new length claims: the JSON is cut or overlong.
            prefix = header[:5]
            payload = data[start + 9 : start + 9 + claimed]
            header = prefix + struct.pack("<I", zlib.crc32(prefix + payload))
        case.journal = data[:start] + header + data[start + 9 :] + tail
        case.sparse = draw(st.booleans())
        if case.sparse:
            case.committed = SPARSE_SIZE
        case.expected = everything if claimed == len(record) - 9 and not case.sparse else None
    elif change == "committed length":
        case.committed = draw(st.integers(0, len(case.journal) + 16))
        # Nothing read, or whole records after the job record (if any): a clean load.
        whole = case.committed in {0, *starts[journal.head :]}
        case.expected = journal.keys_before(case.committed) if whole else None
    elif change == "state job id":
        case.state_job_id = draw(
            st.one_of(
                st.sampled_from([None, JOB_ID, OTHER_JOB_ID]), _TEXT, _INT, st.just(JOB_ID.upper())
            )
        )
        if case.state_job_id not in (None, JOB_ID, OTHER_JOB_ID):
            case.expected = None  # not a job id at all: the state file is refused
        elif committed == 0 or case.state_job_id == job_id:
            case.expected = everything
        else:
            case.expected = None
    return case


def _insert(data: bytes, at: int, record: bytes, tail: bytes) -> tuple[bytes, int]:
    """`record` inserted into the committed `data` at `at`; the new file and length."""
    changed = data[:at] + record + data[at:]
    return changed + tail, len(changed)


# -- the check -----------------------------------------------------------------------------


class HangError(Exception):
    pass


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Raise `HangError` in the main thread after `seconds`."""

    def ring(signum: int, frame: FrameType | None) -> None:
        raise HangError(f"no outcome after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_and_check(directory: Path, case: Case) -> None:
    state = directory / "job.state"
    journal = directory / "job.state.keys-0"
    journal.write_bytes(case.journal)
    if case.sparse:
        with journal.open("r+b") as file:
            file.truncate(max(SPARSE_SIZE, len(case.journal)))
    document = keyed(0, case.committed, len(case.expected or ()), job_id=JOB_ID, finished=True)
    if case.state_job_id is None:
        del document["progress"]["journal"]["job_id"]
        document["format_version"] = 1
    else:
        document["progress"]["journal"]["job_id"] = case.state_job_id
    state.write_bytes(checksummed(document))
    before = files_in(directory)
    loaded: tuple[int, list[Key]] | None = None
    tracemalloc.start()
    try:
        with alarm(SECONDS_BEFORE_A_HANG):
            try:
                with Resumable(state, signals=()) as r:
                    keys = list(case.expected or ())
                    loaded = r.position, list(r.iterate(keys, key=lambda key: key))
            except StateFileError:
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak
    if case.expected is None:
        assert loaded is None, "damage was taken for keys"
        assert files_in(directory) == before, "a refusal changed a file"
    else:
        # Every expected key is done (none comes out of the loop), and no other is.
        assert loaded == (len(case.expected), [])


def check(tmp_path_factory: pytest.TempPathFactory, case: Case) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as directory:
        open_and_check(Path(directory), case)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_a_changed_journal_loads_its_committed_keys_exactly_or_is_refused_unchanged(
    tmp_path_factory: pytest.TempPathFactory, case: Case
) -> None:
    check(tmp_path_factory, case)


@pytest.mark.slow
@settings(max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_thousands_of_changed_journals_load_exactly_or_are_refused_unchanged(
    tmp_path_factory: pytest.TempPathFactory, case: Case
) -> None:
    check(tmp_path_factory, case)


def every_cut_and_flip(
    tmp_path_factory: pytest.TempPathFactory, job_id: str | None, bits: range | None
) -> None:
    """Each cut of a journal with a torn last record, and each flip of `bits` of each
    byte (None: one bit per byte, a different one each time): inside the committed
    bytes a refusal, past them the keys as committed."""
    journal = build(job_id, [["a", 1, "1"], [2**63 - 1, "ü€😀"], ["c", -(2**63)]])
    data = journal.data()
    whole = data + frame(b'["torn"]')[:7]
    everything = journal.keys_before(len(data))
    for cut in range(len(whole) + 1):
        expected = everything if cut >= len(data) else None
        check(tmp_path_factory, Case(job_id, whole[:cut], len(data), expected, state_job_id=job_id))
    for at in range(len(whole)):
        for bit in range(at % 8, at % 8 + 1) if bits is None else bits:
            flipped = bytearray(whole)
            flipped[at] ^= 1 << bit
            expected = everything if at >= len(data) else None
            check(
                tmp_path_factory,
                Case(job_id, bytes(flipped), len(data), expected, state_job_id=job_id),
            )


@pytest.mark.parametrize("job_id", [JOB_ID, None], ids=["format-2", "format-1"])
def test_every_truncation_and_a_bit_flip_in_every_byte_of_a_journal_is_found(
    tmp_path_factory: pytest.TempPathFactory, job_id: str | None
) -> None:
    every_cut_and_flip(tmp_path_factory, job_id, None)


@pytest.mark.slow
@pytest.mark.parametrize("job_id", [JOB_ID, None], ids=["format-2", "format-1"])
def test_every_truncation_and_every_bit_flip_of_a_journal_is_found(
    tmp_path_factory: pytest.TempPathFactory, job_id: str | None
) -> None:
    every_cut_and_flip(tmp_path_factory, job_id, range(8))
