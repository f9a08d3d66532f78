"""Output files in step with progress (`Resumable.sink`): what the file holds after each
kind of stop, the cut on the next run, and the errors (docs/output-files.md).

Stops by real signals and kill -9 are in test_sinks_kill9.py.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from resumable import Resumable, StateFileError, UsageError, inspect

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ITEMS = list(range(20))


class BodyError(Exception):
    """The body's failure in these tests."""


def line(item: int) -> str:
    return f"item {item}: {'x' * item}\n"


def expected(items: list[int] = ITEMS) -> bytes:
    return "".join(line(item) for item in items).encode()


def run(
    state: Path,
    out: Path,
    fail_at: int | None = None,
    loop: str = "iterate",
    before_failing: Callable[[Resumable], None] | None = None,
) -> None:
    """One run writing `line(item)` per item; raises BodyError inside item `fail_at`, after
    writing half of its line."""
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in _loop(r, loop):
            if item == fail_at:
                sink.write(line(item)[:5])
                if before_failing is not None:
                    before_failing(r)
                raise BodyError(item)
            sink.write(line(item))


def _loop(r: Resumable, loop: str) -> Iterator[int]:
    if loop == "iterate":
        return r.iterate(ITEMS)
    if loop == "keyed":
        return r.iterate(ITEMS, key=int)
    return r.map(int, ITEMS, workers=3)


@pytest.mark.parametrize("loop", ["iterate", "keyed", "map"])
def test_an_exception_inside_an_item_leaves_a_file_equal_to_one_uninterrupted_run(
    tmp_path: Path, loop: str
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    for fail_at in (0, 7, 13):
        with pytest.raises(BodyError):
            run(state, out, fail_at, loop)
    run(state, out, loop=loop)
    assert out.read_bytes() == expected()


def test_the_state_file_records_the_length_of_the_output_of_the_items_done(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=4)
    assert out.read_bytes() == expected(ITEMS[:4]) + line(4)[:5].encode()  # flushed as it was
    assert inspect(state).sinks == {str(out): len(expected(ITEMS[:4]))}
    assert inspect(state).position == 4


def test_an_explicit_save_inside_an_item_records_the_output_up_to_the_item_before(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    recorded: list[dict[str, int]] = []

    def save_then_look(r: Resumable) -> None:
        r.save()
        recorded.append(inspect(state).sinks)

    with pytest.raises(BodyError):
        run(state, out, fail_at=9, before_failing=save_then_look)
    assert recorded == [{str(out): len(expected(ITEMS[:9]))}]
    run(state, out)
    assert out.read_bytes() == expected()


def test_output_past_the_recorded_length_is_cut_off_when_the_sink_opens(
    tmp_path: Path,
) -> None:
    """As kill -9 leaves it: output of items not done after the last save."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=6)
    with out.open("ab") as file:
        file.write(b"output of items the state file does not count\n")
    with Resumable(state) as r:
        r.sink(out)
        assert out.read_bytes() == expected(ITEMS[:6])
        assert r.position == 6


def test_a_sink_shorter_than_recorded_is_refused_naming_both_lengths_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=6)
    recorded = len(expected(ITEMS[:6]))
    out.write_bytes(expected(ITEMS[:3]))
    with Resumable(state) as r, pytest.raises(StateFileError) as caught:
        r.sink(out)
    message = str(caught.value)
    assert str(out) in message
    assert f"{len(expected(ITEMS[:3])):,} bytes" in message
    assert f"{recorded:,} bytes" in message
    assert out.read_bytes() == expected(ITEMS[:3])  # never padded, never cut further
    assert inspect(state).sinks == {str(out): recorded}


def test_a_missing_sink_the_state_file_counts_output_in_is_refused_and_not_created(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=6)
    out.unlink()
    with Resumable(state) as r, pytest.raises(StateFileError, match="is missing"):
        r.sink(out)
    assert not out.exists()


def test_a_new_sink_over_a_file_the_job_did_not_write_is_refused_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    out.write_bytes(b"someone's data\n")
    with Resumable(state) as r, pytest.raises(UsageError, match="15 bytes this job did not"):
        r.sink(out)
    assert out.read_bytes() == b"someone's data\n"


def test_restart_moves_a_sink_with_output_aside_and_starts_it_empty(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out)
    with Resumable(state, restart=True) as r:
        sink = r.sink(out)
        assert sink.length == 0
        for item in r.iterate(ITEMS[:3]):
            sink.write(line(item))
    assert out.read_bytes() == expected(ITEMS[:3])
    (aside,) = tmp_path.glob("out.txt.reset-*")
    assert aside.read_bytes() == expected()


def test_a_new_sink_is_recorded_at_once_so_a_run_killed_before_its_first_save_is_cut(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        r.sink(out)
        assert inspect(state).sinks == {str(out): 0}
        assert [record.reason for record in r.save_log] == ["sink"]
    out.write_bytes(b"written before the first save of a run that was killed\n")
    run(state, out)
    assert out.read_bytes() == expected()


def test_a_sink_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with Resumable(tmp_path / "job.state") as r, pytest.raises(UsageError, match="directory"):
        r.sink(tmp_path)


def test_one_file_opened_by_two_sinks_of_a_job_is_refused_through_a_link_too(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    (tmp_path / "link.txt").symlink_to(out)
    with Resumable(tmp_path / "job.state") as r:
        r.sink(out)
        with pytest.raises(UsageError, match="already a sink"):
            r.sink(tmp_path / "link.txt")


def test_the_state_file_itself_is_refused_as_a_sink(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    with Resumable(state) as r, pytest.raises(UsageError, match="the job's own files"):
        r.sink(state)


def test_a_sink_opened_after_the_loop_started_is_refused(tmp_path: Path) -> None:
    with Resumable(tmp_path / "job.state") as r:
        for _ in r.iterate(ITEMS):
            with pytest.raises(UsageError, match="before iterate"):
                r.sink(tmp_path / "out.txt")
            break
    assert not (tmp_path / "out.txt").exists()


def test_a_sink_outside_the_with_block_is_refused(tmp_path: Path) -> None:
    r = Resumable(tmp_path / "job.state")
    with pytest.raises(UsageError, match="inside the with block"):
        r.sink(tmp_path / "out.txt")


@pytest.mark.parametrize(
    ("mode", "encoding", "error"),
    [("w", "utf-8", "mode must be"), ("t", "no-such-codec", "not a text encoding")],
)
def test_a_bad_mode_or_encoding_is_refused(
    tmp_path: Path, mode: Any, encoding: str, error: str
) -> None:
    with Resumable(tmp_path / "job.state") as r, pytest.raises(ValueError, match=error):
        r.sink(tmp_path / "out.txt", mode, encoding)
    assert not (tmp_path / "out.txt").exists()


def test_text_and_binary_sinks_take_their_own_type_only(tmp_path: Path) -> None:
    with Resumable(tmp_path / "job.state") as r:
        text, binary = r.sink(tmp_path / "a.txt"), r.sink(tmp_path / "b.bin", "b")
        with pytest.raises(TypeError, match="text mode"):
            text.write(b"bytes")
        with pytest.raises(TypeError, match="binary mode"):
            binary.write("str")
        text.write("é\n")
        binary.write(bytearray(b"\x00\xff"))
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_write_json_appends_one_orjson_line_in_the_sinks_encoding(tmp_path: Path) -> None:
    value = {"url": "https://example.org/café", "size": 3}
    with Resumable(tmp_path / "job.state") as r:
        utf8 = r.sink(tmp_path / "a.jsonl")
        latin = r.sink(tmp_path / "b.jsonl", encoding="latin-1")
        binary = r.sink(tmp_path / "c.jsonl", "b")
        for sink in (utf8, latin, binary):
            sink.write_json(value)
            with pytest.raises(TypeError):
                sink.write_json({"not json": object()})
    assert (tmp_path / "a.jsonl").read_bytes() == orjson.dumps(value) + b"\n"
    assert (tmp_path / "c.jsonl").read_bytes() == orjson.dumps(value) + b"\n"
    assert (tmp_path / "b.jsonl").read_text("latin-1") == orjson.dumps(value).decode() + "\n"


def test_a_csv_header_is_written_once_however_many_runs(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.csv"
    for stop_at in (3, 8, None):
        with Resumable(state) as r:
            rows = r.sink(out).csv(header=["item", "name"])
            for item in r.iterate(range(10)):
                if item == stop_at:
                    break
                rows.writerow([item, f"n,{item}"])
    body = "".join(f'{item},"n,{item}"\r\n' for item in range(10))
    assert out.read_bytes().decode() == "item,name\r\n" + body


def test_several_sinks_each_keep_their_own_length(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    for fail_at in (5, None):
        with Resumable(state) as r:
            evens, odds = r.sink(tmp_path / "evens.txt"), r.sink(tmp_path / "odds.txt")
            for item in r.iterate(range(10)):
                (odds if item % 2 else evens).write(f"{item}\n")
                if item == fail_at:
                    break
    assert (tmp_path / "evens.txt").read_text() == "0\n2\n4\n6\n8\n"
    assert (tmp_path / "odds.txt").read_text() == "1\n3\n5\n7\n9\n"


def test_a_sink_a_run_does_not_open_keeps_its_record(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=6)
    with Resumable(state) as r:
        r.save()
    assert inspect(state).sinks == {str(out): len(expected(ITEMS[:6]))}


def test_a_header_before_the_loop_and_a_footer_after_it_count_at_once(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        sink = r.sink(out)
        if sink.length == 0:
            sink.write("header\n")
        for item in r.iterate(range(3)):
            sink.write(f"{item}\n")
        sink.write("footer\n")
    assert inspect(state).sinks == {str(out): len(b"header\n0\n1\n2\nfooter\n")}
    with Resumable(state) as r:
        r.sink(out)
    assert out.read_text() == "header\n0\n1\n2\nfooter\n"


def test_a_job_of_an_earlier_version_without_sinks_gets_one(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "v2-positional-failures", tmp_path / "job")
    state, out = tmp_path / "job" / "job.state", tmp_path / "out.txt"
    assert inspect(state).sinks == {}
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(10), on_error="record"):
            sink.write(f"{item}\n")
    assert out.read_text() == "2\n5\n8\n9\n"  # the failed items first, then the rest
    assert inspect(state).sinks == {str(out): 8}


@pytest.mark.parametrize(
    "record",
    [
        -1,
        {"length": -1},
        {"length": 5},  # output with no tail to check
        {"length": 5, "tail": "sha1:0"},
        {"length": 5, "tail": "crc32:00000000", "footer_at": 6},
        {"length": 0, "size": 0},
    ],
)
def test_a_damaged_sinks_field_is_a_state_file_error(tmp_path: Path, record: object) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out)
    document = orjson.loads(state.read_bytes())
    document["sinks"] = {"out.txt": record}
    del document["checksum"]
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    state.write_bytes(
        canonical[:-1] + f',"checksum":"crc32:{zlib.crc32(canonical):08x}"}}'.encode()
    )
    os.unlink(str(state) + ".bak")
    with pytest.raises(StateFileError, match=r"its sink 'out\.txt' has the record "):
        inspect(state)


def test_a_job_moved_with_its_output_resumes_with_its_sink(tmp_path: Path) -> None:
    """The state file records the sink's path relative to its own folder."""
    (tmp_path / "before").mkdir()
    state, out = tmp_path / "before" / "job.state", tmp_path / "before" / "out.txt"
    with pytest.raises(BodyError):
        run(state, out, fail_at=6)
    moved = tmp_path / "after"
    (tmp_path / "before").rename(moved)
    run(moved / "job.state", moved / "out.txt")
    assert (moved / "out.txt").read_bytes() == expected()


def test_an_item_attempt_records_as_failed_keeps_what_it_wrote(tmp_path: Path) -> None:
    """As docs/output-files.md says: write an item's results after the work that can fail."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(3), on_error="record"):
            with r.attempt():
                sink.write(f"{item} started\n")
                if item == 1:
                    raise BodyError(item)
                sink.write(f"{item} done\n")
    assert out.read_text() == "0 started\n0 done\n1 started\n2 started\n2 done\n"
    assert [failed.position for failed in r.failed] == [1]


@pytest.mark.parametrize("key", [None, int], ids=["by position", "by key"])
def test_a_batch_stopped_half_written_runs_again_and_is_written_once(
    tmp_path: Path, key: Callable[[int], int] | None
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    for fail_at in (4, 13, None):
        with Resumable(state) as r:
            sink = r.sink(out)
            for batch in r.iterate(ITEMS, batch=3, key=key):
                for item in batch:
                    if item == fail_at:
                        sink.write(line(item)[:5])
                        break
                    sink.write(line(item))
                else:
                    continue
                break  # inside the batch: none of it is done
    assert out.read_bytes() == expected()


def test_a_new_sink_in_a_missing_folder_is_a_file_not_found_error(tmp_path: Path) -> None:
    with Resumable(tmp_path / "job.state") as r, pytest.raises(FileNotFoundError):
        r.sink(tmp_path / "no such folder" / "out.txt")


def test_a_sink_open_in_another_job_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with Resumable(tmp_path / "first.state") as first:
        first.sink(out).write("the first job's output\n")
        first.save()
        with (
            Resumable(tmp_path / "second.state") as second,
            pytest.raises(UsageError, match="open in another run"),
        ):
            second.sink(out)
    assert out.read_text() == "the first job's output\n"
