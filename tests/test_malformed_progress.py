"""A state file whose checksum is right but whose progress or failure records are not:
every malformed field is refused with `StateFileError` naming it, and the file is left
byte-identical. (Failure records are written to the failure journal; the cases give them
as format version 1 kept them, in the progress itself, which is still read.)

A checksum catches damage, not a file written wrong (by hand, by another tool, by a bug
of an older version): these files pass it, as docs/state-file.md says how to compute it,
so only the checks of the progress itself stand between them and a wrong resume.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from resumable import Resumable, StateFileError


class FlakyError(Exception):
    """What the recorded item raised."""


def with_checksum(document: dict[str, Any]) -> bytes:
    """`document` as a state file, with the checksum docs/state-file.md describes."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    checksum = f"crc32:{zlib.crc32(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)):08x}"
    return orjson.dumps({**body, "checksum": checksum})


def saved_job(path: Path, keyed: bool) -> dict[str, Any]:
    """A real job with one failed item recorded, stopped after four items; its document."""
    with Resumable(path) as r:
        items = ["a", "b", "c", "d", "e", "f"] if keyed else range(6)
        for index, item in enumerate(
            r.iterate(items, key=str if keyed else None, on_error="record")
        ):
            if index == 4:
                break
            with r.attempt():
                if index == 1:
                    raise FlakyError(item)
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    assert document["progress"]["failed"]["items"] == 1  # in the failure journal
    return document


FAILED_ITEM = {
    "error_type": "FlakyError",
    "message": "1",
    "attempts": 1,
    "failed_at": "2026-01-01T00:00:00+00:00",
}

# (what is changed in the document's progress, what the error names)
POSITION_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown kind": ({"kind": "rows"}, "unknown progress kind 'rows'"),
    "no kind": ({"kind": None}, "unknown progress kind None"),
    "negative position": ({"position": -1}, "position must be a whole number >= 0, got -1"),
    "position as a string": ({"position": "4"}, "position must be a whole number >= 0"),
    "position as a bool": ({"position": True}, "position must be a whole number >= 0"),
    "position as a float": ({"position": 4.0}, "position must be a whole number >= 0"),
    "finished as a string": ({"finished": "no"}, "finished must be true or false"),
    "finished as 0": ({"finished": 0}, "finished must be true or false"),
    "input not an object": ({"input": [1]}, "progress input must be an object"),
    "input length negative": (
        {"input": {"length": -1, "head_items": 0, "head_hash": None}},
        "input length must be a whole number >= 0 or null",
    ),
    "input head_items too many": (
        {"input": {"length": 6, "head_items": 10**6, "head_hash": None}},
        "input head_items must be 0 to",
    ),
    "input head_hash not a string": (
        {"input": {"length": 6, "head_items": 1, "head_hash": 5}},
        "input head_hash must be a string or null",
    ),
    "failed neither a journal nor a list": ({"failed": 5}, "failed must be an object naming"),
    "failed item of keyed progress": (
        {"failed": [{**FAILED_ITEM, "key": "b"}]},
        "a failed item of positional progress needs a position",
    ),
    "failed item not an object": ({"failed": [1]}, "a failed item must be an object"),
    "failed item with neither key nor position": (
        {"failed": [FAILED_ITEM]},
        "a failed item has a key or a position",
    ),
    "failed item with both key and position": (
        {"failed": [{**FAILED_ITEM, "key": "b", "position": 1}]},
        "a failed item has a key or a position",
    ),
    "failed item at a negative position": (
        {"failed": [{**FAILED_ITEM, "position": -1}]},
        "a failed item's position must be an int >= 0",
    ),
    "failed item with a bool position": (
        {"failed": [{**FAILED_ITEM, "position": True}]},
        "a failed item's position must be an int >= 0",
    ),
    "failed item with a bad tagged key": (
        {"failed": [{**FAILED_ITEM, "key": {"int": "zz"}}]},
        "a failed item's key is",
    ),
    "failed item without a message": (
        {"failed": [{**FAILED_ITEM, "position": 1, "message": None}]},
        "a failed item needs error_type and message strings",
    ),
    "failed item with error_type not a string": (
        {"failed": [{**FAILED_ITEM, "position": 1, "error_type": 3}]},
        "a failed item needs error_type and message strings",
    ),
    "failed item with no attempts": (
        {"failed": [{**FAILED_ITEM, "position": 1, "attempts": 0}]},
        "a failed item's attempts must be an int >= 1",
    ),
    "failed item with attempts as a bool": (
        {"failed": [{**FAILED_ITEM, "position": 1, "attempts": True}]},
        "a failed item's attempts must be an int >= 1",
    ),
    "failed item with failed_at not a string": (
        {"failed": [{**FAILED_ITEM, "position": 1, "failed_at": 5}]},
        "a failed item's failed_at must be a string",
    ),
    "failed item with failed_at no date": (
        {"failed": [{**FAILED_ITEM, "position": 1, "failed_at": "yesterday"}]},
        "yesterday",
    ),
}

KEYED_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no journal": ({"journal": None}, "keyed progress needs a journal object"),
    "finished as a string": ({"finished": "yes"}, "finished must be true or false"),
    "negative done": ({"done": -1}, "done must be a whole number >= 0"),
    "done as a float": ({"done": 4.0}, "done must be a whole number >= 0"),
    "failed item with a position": (
        {"failed": [{**FAILED_ITEM, "key": None, "position": "b"}]},
        "a failed item's position must be an int >= 0",
    ),
}

JOURNAL_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "negative generation": ({"generation": -1}, "generation must be a whole number >= 0"),
    "generation as a string": ({"generation": "0"}, "generation must be a whole number >= 0"),
    "generation past the largest": ({"generation": 2**64 - 1}, "generation must be at most"),
    "negative length": ({"length": -5}, "length must be a whole number >= 0"),
    "first_generation as a bool": (
        {"first_generation": False},
        "first_generation must be a whole number >= 0",
    ),
    # A bad job id is shown whole up to 60 characters (its repr, quotes counted), and cut
    # to 57 and "..." past them.
    "job id of 60 characters shown whole": ({"job_id": "x" * 58}, f"got '{'x' * 58}'"),
    "job id of 61 characters cut": ({"job_id": "y" * 59}, f"got '{'y' * 56}..."),
}


FAILURE_JOURNAL_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "negative generation": ({"generation": -1}, "failed generation must be a whole number"),
    "generation past the largest": ({"generation": 2**64 - 1}, "generation must be at most"),
    "length as a string": ({"length": "9"}, "failed length must be a whole number >= 0"),
    "no first_generation": ({"first_generation": None}, "failed first_generation must be"),
    "job id not hex": ({"job_id": "x" * 32}, "a job id is 32 lowercase hex digits"),
    "negative entries": ({"entries": -1}, "failed entries must be a whole number >= 0"),
    "items as a float": ({"items": 1.0}, "failed items must be a whole number >= 0"),
}


def refused(path: Path, document: dict[str, Any], problem: str) -> None:
    """Written with a good checksum, the document is refused naming `problem`, no backup
    stands in for it, and the file stays as it was."""
    data = with_checksum(document)
    path.write_bytes(data)
    path.with_name(path.name + ".bak").unlink(missing_ok=True)
    with pytest.raises(StateFileError, match="holds progress this version cannot use") as raised:
        Resumable(path).__enter__()
    assert problem in str(raised.value)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == data


@pytest.mark.parametrize("case", POSITION_CASES)
def test_malformed_position_progress_with_a_good_checksum_is_refused(
    state_path: Path, case: str
) -> None:
    change, problem = POSITION_CASES[case]
    document = saved_job(state_path, keyed=False)
    document["progress"] = {**document["progress"], **change}
    refused(state_path, document, problem)


# r.map's progress: the position job's, with the indexes done above its watermark.
WATERMARK_CASES: dict[str, list[Any] | int] = {
    "an index at the watermark": [4],
    "an index below it": [2, 6],
    "an index as a string": ["6"],
    "not a list": 6,
}


@pytest.mark.parametrize("case", WATERMARK_CASES)
def test_malformed_watermark_progress_with_a_good_checksum_is_refused(
    state_path: Path, case: str
) -> None:
    document = saved_job(state_path, keyed=False)  # position 4
    above = WATERMARK_CASES[case]
    document["progress"] = {**document["progress"], "kind": "watermark", "done_above": above}
    refused(
        state_path,
        document,
        f"done_above must be a list of the indexes done above the "
        f"watermark (whole numbers > 4), got {above!r}",
    )


def test_watermark_progress_listing_an_index_twice_is_refused(state_path: Path) -> None:
    document = saved_job(state_path, keyed=False)
    document["progress"] = {**document["progress"], "kind": "watermark", "done_above": [6, 6]}
    refused(state_path, document, "done_above lists an index twice")


@pytest.mark.parametrize("case", KEYED_CASES)
def test_malformed_keyed_progress_with_a_good_checksum_is_refused(
    state_path: Path, case: str
) -> None:
    change, problem = KEYED_CASES[case]
    document = saved_job(state_path, keyed=True)
    document["progress"] = {**document["progress"], **change}
    refused(state_path, document, problem)


@pytest.mark.parametrize("case", JOURNAL_CASES)
def test_a_malformed_journal_reference_with_a_good_checksum_is_refused(
    state_path: Path, case: str
) -> None:
    change, problem = JOURNAL_CASES[case]
    document = saved_job(state_path, keyed=True)
    progress = document["progress"]
    document["progress"] = {**progress, "journal": {**progress["journal"], **change}}
    refused(state_path, document, problem)


@pytest.mark.parametrize("keyed", [False, True], ids=["positional", "keyed"])
@pytest.mark.parametrize("case", FAILURE_JOURNAL_CASES)
def test_a_malformed_failure_journal_reference_with_a_good_checksum_is_refused(
    state_path: Path, case: str, keyed: bool
) -> None:
    change, problem = FAILURE_JOURNAL_CASES[case]
    document = saved_job(state_path, keyed=keyed)
    progress = document["progress"]
    document["progress"] = {**progress, "failed": {**progress["failed"], **change}}
    refused(state_path, document, problem)


def test_the_unchanged_documents_resume(state_path: Path, tmp_path: Path) -> None:
    """The cases above differ from a good file by their change only: rewritten with the
    same checksum computation and nothing changed, both jobs resume."""
    for keyed in (False, True):
        path = tmp_path / f"{keyed}" / "job.state"
        path.parent.mkdir()
        document = saved_job(path, keyed)
        path.write_bytes(with_checksum(document))
        with Resumable(path) as r:
            assert r.position == (3 if keyed else 4)  # a failed key is not done
            assert len(r.failed) == 1
    path = tmp_path / "watermark" / "job.state"
    path.parent.mkdir()
    document = saved_job(path, keyed=False)
    document["progress"] = {**document["progress"], "kind": "watermark", "done_above": [6]}
    path.write_bytes(with_checksum(document))
    with Resumable(path) as r:
        assert r.position == 5  # the 4 below the watermark, and item 6
