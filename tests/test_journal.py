"""The key journal: records round-trip, damage is detected, only committed bytes count.

Everything runs on real files with real fsync. The kill -9 and I/O-error tests run
tests/jobs/journal_job.py as a child process; the I/O errors are injected with strace
(see tests/test_faults_strace.py for how strace's fault injection behaves) or come from a
real ``RLIMIT_FSIZE``.
"""

from __future__ import annotations

import enum
import json
import os
import random
import re
import signal
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import StateFileError, StateWriteError, UsageError
from resumable._store.journal_codec import HEADER_SIZE, RECORD_KEYS, encode_records
from resumable._store.journal_files import (
    JournalWriter,
    fold,
    fold_is_due,
    journal_generations,
    journal_path,
    next_generation,
    read_journal,
    remove_stale_journals,
)

from jobs.harness import Child, Traced, campaign_seed, run_script
from jobs.journal_job import Key, batch_keys

needs_strace = pytest.mark.strace  # skipped without strace, failed under CI=true

# Three batches of a journal, as three records: the torn-tail and bit-flip tests work on it.
BATCHES: list[list[Key]] = [["a", 1, "1"], [2, "b", "ü€😀"], ["c", 3, 2**70, -(2**64)]]


def frame(payload: bytes, magic: int = 0x4B) -> bytes:
    """A record framed as docs/state-file.md describes it, written independently here."""
    prefix = struct.pack("<BI", magic, len(payload))
    return prefix + struct.pack("<I", zlib.crc32(prefix + payload)) + payload


def union(batches: Sequence[Sequence[Key]]) -> set[Key]:
    """All keys of `batches`."""
    return {key for batch in batches for key in batch}


def write_batches(path: Path, batches: Sequence[Sequence[Key]]) -> list[int]:
    """Append each batch to a new journal; return the lengths: 0, then after each append."""
    lengths = [0]
    with JournalWriter.open(path, 0) as writer:
        lengths.extend(writer.append(batch) for batch in batches)
    return lengths


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """The path of generation 0's journal of ``job.state`` (the file does not exist yet)."""
    return journal_path(tmp_path / "job.state", 0)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batches",
    [
        [["https://example.org/a", "b"], ["c"]],
        [[0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1]],
        [["1", 1, "01", "-1", -1, "", " 1"]],
        [["ü", "€", "😀", "\x00", "line\nbreak", '"quoted"', "\\"]],
        [[], ["a"], [], [1]],
    ],
    ids=["str", "int", "mixed", "unicode", "empty-batches"],
)
def test_appended_batches_read_back_as_exactly_their_keys(
    journal: Path, batches: list[list[Key]]
) -> None:
    """Every key comes back with its type: the str "1" and the int 1 are two keys."""
    lengths = write_batches(journal, batches)
    contents = read_journal(journal, lengths[-1])
    assert contents.keys == union(batches)
    assert {(type(key), key) for key in contents.keys} == {
        (type(key), key) for batch in batches for key in batch
    }
    assert contents.records == sum(1 for batch in batches if batch)
    assert journal.stat().st_size == lengths[-1]


def test_an_empty_batch_writes_nothing(journal: Path) -> None:
    """Appending no keys returns the same length and leaves the file as it was."""
    with JournalWriter.open(journal, 0) as writer:
        length = writer.append(["a"])
        before = journal.read_bytes()
        assert writer.append([]) == length
        assert writer.append(iter(())) == length
    assert journal.read_bytes() == before


def test_a_record_is_framed_as_documented(journal: Path) -> None:
    """Magic 0x4B, the payload length, the CRC-32 of both and of the payload, then the
    orjson array, all little-endian: the bytes on disk are exactly that."""
    write_batches(journal, [["a", 1]])
    assert journal.read_bytes() == frame(b'["a",1]')
    assert len(frame(b"")) == HEADER_SIZE


def test_keys_within_64_bits_stay_plain_in_a_record_that_tags_others(journal: Path) -> None:
    """A record with a key beyond 64 bits is written key by key: the edges of the 64-bit
    range beside it stay plain JSON integers, only the keys beyond them are tagged."""
    keys: list[Key] = [2**64, 2**64 - 1, -(2**63), -(2**63) - 1, -(2**10)]
    write_batches(journal, [keys])
    assert journal.read_bytes()[HEADER_SIZE:] == (
        b'[{"int":"10000000000000000"},18446744073709551615,-9223372036854775808,'
        b'{"int":"-8000000000000001"},-1024]'
    )
    assert read_journal(journal, journal.stat().st_size).keys == set(keys)


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        (2**64 - 1, b"18446744073709551615"),
        (-(2**63), b"-9223372036854775808"),
        (2**64, b'{"int":"10000000000000000"}'),
        (-(2**63) - 1, b'{"int":"-8000000000000001"}'),
        ("\udcff", b'{"str":"edb3bf"}'),
    ],
    ids=["uint64-max", "int64-min", "above-64-bits", "below-64-bits", "lone-surrogate"],
)
def test_keys_orjson_cannot_write_are_tagged_and_come_back_exactly(
    journal: Path, key: Key, stored: bytes
) -> None:
    """Ints beyond 64 bits (orjson refuses them, and reads them back as floats) and strs
    that are not valid UTF-8 are stored as one-entry objects and read back exactly."""
    write_batches(journal, [[key, "int", "str", 5]])
    assert journal.read_bytes()[HEADER_SIZE:] == b"[" + stored + b',"int","str",5]'
    keys = read_journal(journal, journal.stat().st_size).keys
    assert keys == {key, "int", "str", 5}
    assert {type(k) for k in keys} == {type(key), str, int}


def test_an_int_too_long_for_decimal_conversion_round_trips(journal: Path) -> None:
    """An int of 10,000 digits (beyond Python's default limit of 4300 for str(int))."""
    huge = 7**11_840
    assert huge > 10**10_000
    lengths = write_batches(journal, [[huge, -huge]])
    assert read_journal(journal, lengths[-1]).keys == {huge, -huge}


_KEYS = st.lists(
    st.one_of(
        st.integers(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.text(
            alphabet=st.characters()
            | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[])
        ),
    ),
    max_size=20,
)


@settings(max_examples=50, deadline=None)
@given(batches=st.lists(_KEYS, max_size=5))
def test_any_str_and_int_keys_round_trip(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[Key]]
) -> None:
    """Arbitrary str (surrogates included) and int keys of any size, in any batches.

    The records are written as `JournalWriter.append` writes them, without its fsync."""
    path = tmp_path_factory.mktemp("journal") / "job.state.keys-0"
    path.write_bytes(b"".join(encode_records(batch) for batch in batches))
    keys = read_journal(path, path.stat().st_size).keys
    assert {(type(key), key) for key in keys} == {
        (type(key), key) for batch in batches for key in batch
    }


def test_a_batch_beyond_the_keys_per_record_is_split_into_records(journal: Path) -> None:
    """More than RECORD_KEYS keys in one append take several records, all committed by
    the one length it returns."""
    keys = list(range(RECORD_KEYS * 2 + 5))
    lengths = write_batches(journal, [keys])
    contents = read_journal(journal, lengths[-1])
    assert contents.keys == set(keys)
    assert contents.records == 3


def test_records_are_split_to_fit_the_record_size(journal: Path) -> None:
    """A payload over the record size is halved until each fits or holds a single key; a
    single key over the payload limit of the format is refused, naming the fix."""
    keys: list[Key] = [f"key-{index:04d}" for index in range(50)]
    data = encode_records(keys, record_bytes=64)
    journal.write_bytes(data)
    contents = read_journal(journal, len(data))
    assert contents.keys == set(keys)
    assert contents.records > len(data) // (64 + HEADER_SIZE)
    long_key = "x" * 100
    data = encode_records(["a", long_key, "b"], record_bytes=64)
    assert data == frame(b'["a"]') + frame(f'["{long_key}"]'.encode()) + frame(b'["b"]')
    # Its JSON, "xxx...x" with the quotes, is 102 bytes.
    refused = r"a key of 102 bytes as JSON is too long to record .* a hash of the long value"
    with pytest.raises(UsageError, match=refused):
        encode_records(["a", long_key], record_bytes=64, max_payload=64)


# -- key types -----------------------------------------------------------------------------


class Colour(enum.IntEnum):
    """An int subclass a key function might return by mistake."""

    RED = 1


class Name(str):
    """A str subclass a key function might return by mistake."""

    __slots__ = ()


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (True, "bool"),
        (False, "bool"),
        (1.0, "float"),
        (None, "NoneType"),
        (b"url", "bytes"),
        (("a", 1), "tuple"),
        (Colour.RED, "Colour"),
        (Name("a"), "Name"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_key_that_is_not_a_str_or_an_int_is_refused_before_anything_is_written(
    journal: Path, key: object, kind: str
) -> None:
    """UsageError names the type and the fix; nothing is written, the writer goes on, and a
    fold refuses it before creating its file."""
    with JournalWriter.open(journal, 0) as writer:
        length = writer.append(["before"])
        with pytest.raises(UsageError, match=rf"returned a {kind}: .*Return a str or an int"):
            writer.append(["fine", key])  # type: ignore[list-item]
        assert journal.stat().st_size == length
        assert writer.append(["after"]) > length
    assert read_journal(journal, journal.stat().st_size).keys == {"before", "after"}
    folded = journal_path(journal.with_name("job.state"), 1)
    with pytest.raises(UsageError, match=kind):
        fold(folded, ["fine", key])  # type: ignore[list-item]
    assert not folded.exists()


def test_the_bool_message_says_why(journal: Path) -> None:
    """A bool would be the same key as 1 or 0: the message says so."""
    with JournalWriter.open(journal, 0) as writer, pytest.raises(UsageError, match="same key as 1"):
        writer.append([True])


# -- torn tails and committed lengths ------------------------------------------------------


def test_a_torn_last_record_is_ignored_outside_the_committed_length_and_an_error_inside(
    journal: Path,
) -> None:
    """The file cut at every byte offset of its last record: reading up to the length
    committed before that record gives the first batches; reading up to the end is a
    StateFileError; opening at the committed length cuts the torn bytes off and appends
    after them."""
    lengths = write_batches(journal, BATCHES)
    whole = journal.read_bytes()
    start = lengths[-2]
    for cut in range(start, len(whole)):
        journal.write_bytes(whole[:cut])
        assert read_journal(journal, start).keys == union(BATCHES[:-1]), cut
        with pytest.raises(StateFileError, match=rf"holds {cut:,} bytes, fewer than the"):
            read_journal(journal, len(whole))
        with JournalWriter.open(journal, start) as writer:
            assert journal.stat().st_size == start
            length = writer.append(["next"])
        assert read_journal(journal, length).keys == union(BATCHES[:-1]) | {"next"}


def test_a_committed_length_inside_a_record_is_an_error(journal: Path) -> None:
    """A committed length that ends in the middle of a record (the file intact) is never
    read as the records before it: the record at that boundary is reported damaged."""
    lengths = write_batches(journal, BATCHES)
    start = lengths[-2]
    for length in range(start + 1, lengths[-1]):
        with pytest.raises(StateFileError, match=rf"damaged at byte {start:,}"):
            read_journal(journal, length)


def test_bytes_past_the_committed_length_are_never_read_and_cut_off_at_open(
    journal: Path,
) -> None:
    """Garbage, and even a well-formed record, past the committed length are ignored by
    reading and removed by the next open for appending."""
    lengths = write_batches(journal, BATCHES)
    with journal.open("ab") as file:
        file.write(frame(b'["uncommitted"]') + b"\x00\xff garbage")
    assert read_journal(journal, lengths[-1]).keys == union(BATCHES)
    with JournalWriter.open(journal, lengths[-1]) as writer:
        assert writer.length == lengths[-1]
    assert journal.stat().st_size == lengths[-1]


def test_every_single_bit_flip_in_committed_data_is_detected(journal: Path) -> None:
    """Each of the 8 bits of each committed byte, flipped alone: StateFileError naming the
    file and the record's offset, every time."""
    lengths = write_batches(journal, BATCHES)
    whole = journal.read_bytes()
    fd = os.open(journal, os.O_RDWR)
    try:
        for position in range(len(whole)):
            record_start = max(length for length in lengths if length <= position)
            for bit in range(8):
                os.pwrite(fd, bytes([whole[position] ^ 1 << bit]), position)
                with pytest.raises(StateFileError) as caught:
                    read_journal(journal, len(whole))
                message = str(caught.value)
                assert str(journal) in message, (position, bit)
                assert f"damaged at byte {record_start:,}" in message, (position, bit, message)
            os.pwrite(fd, whole[position : position + 1], position)
    finally:
        os.close(fd)
    assert read_journal(journal, len(whole)).keys == union(BATCHES)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"[1.5]", "1.5, which is not a key"),
        (b'["a",true]', "True, which is not a key"),
        (b"[null]", "None, which is not a key"),
        (b"[18446744073709551616]", "which is not a key"),  # orjson reads it as a float
        (b'[{"int":"zz"}]', "which is not a key"),
        (b'[{"int":"1","str":"2"}]', "which is not a key"),
        # Tags around keys JSON holds as they are: no save writes them (found by the fuzzer).
        (b'[{"str":""}]', "which is not a key"),
        (b'[{"str":"41"}]', "which is not a key"),
        (b'[{"int":"5"}]', "which is not a key"),
        (b"[[1]]", "which is not a key"),
        (b'{"a":1}', "a JSON dict, not an array of keys"),
        (b"[1,", "not valid JSON"),
    ],
)
def test_a_record_with_a_good_crc_but_no_keys_is_an_error(
    journal: Path, payload: bytes, problem: str
) -> None:
    """A payload that this module never writes is not taken for keys, checksum or not."""
    data = frame(b'["fine"]') + frame(payload)
    journal.write_bytes(data)
    start = len(frame(b'["fine"]'))
    with pytest.raises(StateFileError, match=rf"damaged at byte {start}: .*{re.escape(problem)}"):
        read_journal(journal, len(data))


def test_a_wrong_magic_byte_is_an_error(journal: Path) -> None:
    """A record with a different magic byte (a future format, or a stray file)."""
    journal.write_bytes(frame(b'["a"]', magic=0x4C))
    with pytest.raises(StateFileError, match=r"no record starts here \(byte 0x4c"):
        read_journal(journal, journal.stat().st_size)


def test_a_missing_or_short_journal_is_an_error_and_is_left_alone(journal: Path) -> None:
    """Committed bytes that are not there: StateFileError from reading and from opening,
    which neither creates nor changes the file. A committed length of 0 needs no file."""
    assert read_journal(journal, 0).keys == set()
    with pytest.raises(StateFileError, match=r"is missing, .* restart=True"):
        read_journal(journal, 10)
    with pytest.raises(StateFileError, match=r"is missing"):
        JournalWriter.open(journal, 10)
    assert not journal.exists()
    journal.write_bytes(frame(b'["a"]'))
    size = journal.stat().st_size
    with pytest.raises(StateFileError, match=rf"holds {size} bytes, fewer than the {size + 1}"):
        JournalWriter.open(journal, size + 1)
    assert journal.read_bytes() == frame(b'["a"]')


def test_lengths_and_generations_must_be_ints_from_zero(journal: Path) -> None:
    """Negative, bool or float lengths and generations are programming errors."""
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="an int >= 0"):
            read_journal(journal, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="an int >= 0"):
            JournalWriter.open(journal, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="an int >= 0"):
            journal_path(journal, bad)  # type: ignore[arg-type]


def test_a_closed_writer_refuses_appends_and_closes_twice(journal: Path) -> None:
    """close() is idempotent; an append after it is a UsageError."""
    writer = JournalWriter.open(journal, 0)
    writer.close()
    writer.close()
    with pytest.raises(UsageError, match="is closed"):
        writer.append(["a"])


# -- generations and folding ---------------------------------------------------------------


def test_generations_are_found_by_exact_name(tmp_path: Path) -> None:
    """Only ``<state name>.keys-<int>`` counts: not other jobs, leading zeros, temp files."""
    state = tmp_path / "job.state"
    names = [
        "job.state.keys-0",
        "job.state.keys-7",
        "job.state.keys-12",
        "job.state.keys-007",
        "job.state.keys-x",
        "job.state.keys-1.tmp",
        ".job.state.keys-3",
        "other.state.keys-4",
        "job.stateXkeys-5",
        "job.state",
        "job.state.bak",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert journal_path(state, 12) == tmp_path / "job.state.keys-12"
    assert journal_generations(state) == {
        0: tmp_path / "job.state.keys-0",
        7: tmp_path / "job.state.keys-7",
        12: tmp_path / "job.state.keys-12",
    }
    assert next_generation(state) == 13
    assert next_generation(state, 20) == 21
    assert next_generation(tmp_path / "fresh.state") == 0
    assert journal_generations(tmp_path / "missing" / "job.state") == {}


def test_stale_generations_are_removed_and_kept_ones_stay(tmp_path: Path) -> None:
    """remove_stale_journals deletes every generation not kept, and only journals."""
    state = tmp_path / "job.state"
    for generation in (0, 1, 2, 5):
        journal_path(state, generation).write_bytes(b"")
    other = tmp_path / "other.state.keys-1"
    other.write_bytes(b"")
    removed = remove_stale_journals(state, keep=[2, 1])
    assert removed == [journal_path(state, 0), journal_path(state, 5)]
    assert sorted(journal_generations(state)) == [1, 2]
    assert other.exists()
    assert remove_stale_journals(state, keep=[1, 2]) == []


def test_fold_writes_a_new_generation_that_reads_as_all_the_keys(tmp_path: Path) -> None:
    """Many small records folded into a new generation: the same keys in few records; the
    state switch and the cleanup then leave only the new generation."""
    state = tmp_path / "job.state"
    old = journal_path(state, 0)
    batches: list[list[Key]] = [[index, str(index)] for index in range(40)]
    lengths = write_batches(old, batches)
    done = read_journal(old, lengths[-1])
    assert done.records == 40
    generation = next_generation(state, 0)
    new = journal_path(state, generation)
    length = fold(new, done.keys)
    assert length == new.stat().st_size
    folded = read_journal(new, length)
    assert folded.keys == done.keys
    assert folded.records == 1
    assert remove_stale_journals(state, keep=[generation]) == [old]


def test_a_fold_is_due_past_a_thousand_records_and_one_record_per_32_keys() -> None:
    """fold_is_due: never for a few records; for many, once they pass one per 32 keys."""
    assert not fold_is_due(records=1_000, keys=10)
    assert fold_is_due(records=1_001, keys=10)
    assert not fold_is_due(records=3_200, keys=102_400)
    assert fold_is_due(records=3_201, keys=102_400)
    assert not fold_is_due(records=-(-1_000_000 // RECORD_KEYS), keys=1_000_000)  # folded


def test_fold_never_writes_over_an_existing_file(journal: Path) -> None:
    """A fold to a path that exists (the generation in use, by mistake) fails with EEXIST
    and leaves that file byte for byte as it was."""
    lengths = write_batches(journal, BATCHES)
    before = journal.read_bytes()
    with pytest.raises(StateWriteError, match=r"exists already.*next_generation") as caught:
        fold(journal, ["x"])
    assert caught.value.errno is not None
    assert journal.read_bytes() == before
    assert read_journal(journal, lengths[-1]).keys == union(BATCHES)


def test_fold_of_many_keys_takes_several_records(journal: Path) -> None:
    """A fold of more than RECORD_KEYS keys (records of bounded size) reads back whole."""
    keys: set[Key] = set(range(RECORD_KEYS + 10)) | {f"k{index}" for index in range(100)}
    length = fold(journal, keys)
    contents = read_journal(journal, length)
    assert contents.keys == keys
    assert contents.records == 2


# -- kill -9 ----------------------------------------------------------------------------------

_COMMITTED = re.compile(r"committed (\d+) (\d+)")


def kill9_campaign(tmp_path: Path, kills: int, seed: int) -> None:
    """Run journal_job.py `kills` times, each killed with SIGKILL after a random number of
    its ``committed`` lines, each resuming at the last reported length."""
    rng = random.Random(seed)
    journal = journal_path(tmp_path / "job.state", 0)
    committed, batch, size = 0, 0, 32
    history: list[tuple[int, set[Key]]] = [(0, set())]
    expected: set[Key] = set()
    for kill in range(kills):
        context = f"kill {kill + 1} (seed {seed})"
        with Child(
            "journal_job.py",
            journal,
            "append",
            "--start",
            str(committed),
            "--first",
            str(batch),
            "--batches",
            "1000000",
            "--size",
            str(size),
        ) as child:
            child.expect(f"opened {committed}")  # the bytes past the last commit are gone
            for _ in range(rng.randint(1, 12)):
                child.read_line()
            finished = child.kill9()
        assert finished.returncode == -signal.SIGKILL, child.describe(context)
        for line in child.seen[1:]:  # every line, those read by finish() included
            match = _COMMITTED.fullmatch(line)
            assert match is not None, child.describe(f"{context}: unexpected line {line!r}")
            assert int(match[1]) == batch, child.describe(f"{context}: batches out of order")
            expected |= set(batch_keys(batch, size))
            committed = int(match[2])
            history.append((committed, set(expected)))
            batch += 1
        assert journal.stat().st_size >= committed, context
        assert read_journal(journal, committed).keys == expected, context
    # Appending never changes committed bytes: every earlier length still reads the same.
    for length, keys in rng.sample(history, min(10, len(history))):
        contents = read_journal(journal, length)
        assert contents.keys == keys, f"length {length} (seed {seed})"


def test_kill9_while_appending_keeps_exactly_the_reported_batches(tmp_path: Path) -> None:
    """kill -9 of a child appending batches at random points, 4 times: reading up to the
    last length it reported gives exactly the keys of the batches it reported, whatever
    it was writing when it died, and the next run goes on from there."""
    kill9_campaign(tmp_path, kills=4, seed=campaign_seed())


@pytest.mark.slow
def test_kill9_while_appending_many_times(tmp_path: Path) -> None:
    """The same campaign with 80 kills."""
    kill9_campaign(tmp_path, kills=80, seed=campaign_seed())


# -- I/O errors ----------------------------------------------------------------------------------


def run_job(journal: Path, strace_options: Sequence[str], *args: str) -> Traced:
    """Run journal_job.py, under ``strace -f -qq -y -o LOG`` when given strace options."""
    return run_script(
        "journal_job.py",
        [str(journal), *args],
        log=journal.with_name("strace.log"),
        strace_options=strace_options,
    )


def record_lengths(size: int, batches: int) -> list[int]:
    """The journal's length after each of the first `batches` batches of journal_job.py."""
    lengths = [0]
    for batch in range(batches):
        lengths.append(lengths[-1] + len(encode_records(batch_keys(batch, size))))
    return lengths


def error_report(run: Traced, line: str, prefix: str, errno_name: str) -> str:
    """The message of a reported `StateWriteError`, checked for its errno."""
    kind, _, payload = line.partition(" ")
    assert kind == prefix, run.describe(f"expected an {prefix!r} line, got {line!r}")
    report = json.loads(payload)
    assert report["errno"] == errno_name, run.describe("the wrong errno")
    message = str(report["message"])
    assert f"[{errno_name}]" in message, message
    return message


@dataclass(frozen=True)
class AppendFault:
    """An injected error on the journal: at which append, and what the file keeps."""

    name: str
    errno_name: str
    inject: str  # strace -e inject= expression, counted on the journal's calls only (-P)
    failed_call: str  # the system call that fails
    good: int  # appends that succeed before it
    kept_failed_bytes: bool  # whether the failed append's bytes reached the file


APPEND_FAULTS = [
    AppendFault("eio-fsync", "EIO", "fsync:error=EIO:when=3", "fsync", 2, True),
    AppendFault("enospc-write", "ENOSPC", "write:error=ENOSPC:when=2", "write", 1, False),
]


@needs_strace
@pytest.mark.parametrize("fault", APPEND_FAULTS, ids=[fault.name for fault in APPEND_FAULTS])
def test_a_failed_append_raises_and_the_journal_takes_no_more(
    tmp_path: Path, fault: AppendFault
) -> None:
    """An I/O error in an append: StateWriteError naming the journal and the errno; the next
    append fails at once without a system call (no fsync retried after a failed one); the
    committed records read back whole; reopening at the committed length cuts off what the
    failed append left and appends again."""
    journal = journal_path(tmp_path / "job.state", 0)
    size = 8
    run = run_job(
        journal,
        ["-e", "trace=write,fsync", "-e", f"inject={fault.inject}", "-P", str(journal)],
        "append",
        "--batches",
        "5",
        "--size",
        str(size),
    )
    assert run.returncode == 0, run.describe("the job failed")
    lengths = record_lengths(size, fault.good + 1)
    committed = [f"committed {batch} {lengths[batch + 1]}" for batch in range(fault.good)]
    assert run.stdout[: fault.good + 1] == ["opened 0", *committed], run.describe("output")
    assert len(run.stdout) == fault.good + 3, run.describe("output")
    message = error_report(run, run.stdout[-2], "error", fault.errno_name)
    assert str(journal) in message, message
    assert "The keys of earlier saves are intact" in message, message
    again = error_report(run, run.stdout[-1], "again", fault.errno_name)
    assert "takes no more keys" in again, again

    failed = run.calls(fault.failed_call, journal)
    assert len(failed) == fault.good + 1, run.describe("the failed call was not the expected one")
    assert failed[-1].endswith("(INJECTED)"), run.describe("")
    after = run.log[run.log.index(failed[-1]) + 1 :]
    touching = [line for line in after if f"<{journal}>" in line]
    assert touching == [], run.describe(f"calls on the journal after the error: {touching}")

    good = lengths[fault.good]
    expected_size = lengths[fault.good + 1] if fault.kept_failed_bytes else good
    assert journal.stat().st_size == expected_size
    keys = [batch_keys(batch, size) for batch in range(fault.good)]
    assert read_journal(journal, good).keys == union(keys)
    with JournalWriter.open(journal, good) as writer:
        assert journal.stat().st_size == good
        length = writer.append(batch_keys(fault.good, size))
    assert read_journal(journal, length).keys == union([*keys, batch_keys(fault.good, size)])


def test_a_write_cut_short_by_the_file_size_limit_leaves_a_torn_record(tmp_path: Path) -> None:
    """A real RLIMIT_FSIZE in the middle of the second record: the write stops short, the
    next fails with EFBIG; the torn bytes stay past the committed length, the first
    record reads back, and reopening cuts the torn bytes off."""
    journal = journal_path(tmp_path / "job.state", 0)
    size = 16
    lengths = record_lengths(size, 2)
    limit = lengths[1] + 100
    assert lengths[2] > limit
    run = run_job(
        journal,
        [],
        "append",
        "--batches",
        "3",
        "--size",
        str(size),
        "--fsize-limit",
        str(limit),
    )
    assert run.returncode == 0, run.describe("the job failed")
    assert run.stdout[:2] == ["opened 0", f"committed 0 {lengths[1]}"], run.describe("output")
    assert len(run.stdout) == 4, run.describe("output")
    error_report(run, run.stdout[2], "error", "EFBIG")
    error_report(run, run.stdout[3], "again", "EFBIG")
    assert journal.stat().st_size == limit
    assert read_journal(journal, lengths[1]).keys == set(batch_keys(0, size))
    with pytest.raises(StateFileError, match=rf"damaged at byte {lengths[1]:,}"):
        read_journal(journal, limit)
    with JournalWriter.open(journal, lengths[1]):
        pass
    assert journal.stat().st_size == lengths[1]


@needs_strace
@pytest.mark.parametrize("exists", [False, True], ids=["new-file", "existing-file"])
def test_the_directory_is_flushed_once_after_the_first_append_to_a_new_file(
    tmp_path: Path, exists: bool
) -> None:
    """A new journal's directory entry is made durable right after its first record is
    flushed, and never again; a journal that existed needs no directory flush."""
    journal = journal_path(tmp_path / "job.state", 0)
    if exists:
        journal.write_bytes(b"")
    options = ["-e", "trace=fsync", "-P", str(journal), "-P", str(tmp_path)]
    run = run_job(journal, options, "append", "--batches", "3", "--size", "4")
    assert run.returncode == 0, run.describe("the job failed")
    fsyncs = [line for line in run.log if re.match(r"^\d+\s+fsync\(", line)]
    on_journal = f"<{journal}>"
    on_directory = f"<{tmp_path}>"
    kinds = [
        "journal" if on_journal in line else "dir" if on_directory in line else line
        for line in fsyncs
    ]
    expected = (
        ["journal", "journal", "journal"] if exists else ["journal", "dir", "journal", "journal"]
    )
    assert kinds == expected, run.describe("")


@needs_strace
@pytest.mark.parametrize(
    ("inject", "errno_name"),
    [("write:error=ENOSPC:when=2", "ENOSPC"), ("fsync:error=EIO:when=1", "EIO")],
    ids=["enospc-write", "eio-fsync"],
)
def test_a_failed_fold_removes_its_file(tmp_path: Path, inject: str, errno_name: str) -> None:
    """ENOSPC on the second record of a fold, or EIO on its fsync: StateWriteError, and the
    half-written generation is removed."""
    journal = journal_path(tmp_path / "job.state", 1)
    options = ["-e", "trace=write,fsync", "-e", f"inject={inject}", "-P", str(journal)]
    run = run_job(journal, options, "fold", "--batches", "2", "--size", str(RECORD_KEYS // 2 + 8))
    assert run.returncode == 0, run.describe("the job failed")
    assert len(run.stdout) == 1, run.describe("output")
    message = error_report(run, run.stdout[0], "error", errno_name)
    assert "The journal in use is unchanged" in message, message
    assert not journal.exists()
