"""The loop's counting holds at every chunk boundary, for every kind of input."""

from __future__ import annotations

import array
import collections
import itertools
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import InputChangedError, Resumable, inspect
from resumable._feed import MAX_CHUNK, Feed, open_feed  # the unit under test

FEED_FILE = sys.modules[Feed.__module__].__file__  # the lines a cut may land on


class IndexOnly(Sequence[int]):
    """A sequence that can only be read by index (no fast iterator to jump)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        if not 0 <= index < self.size:
            raise IndexError(index)
        return index


def numbers(size: int) -> Iterator[int]:
    yield from range(size)


INPUTS: dict[str, Callable[[int], Iterable[int]]] = {
    "list": lambda size: list(range(size)),
    "range": range,
    "index-only sequence": IndexOnly,
    "generator": numbers,
    # Iterators other than generators are pulled with next() rather than send().
    "iterator": lambda size: map(int, range(size)),
}
SIZES = [0, 1, 2, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK, 3000]


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("size", SIZES)
def test_a_whole_run_counts_every_item(tmp_path: Path, kind: str, size: int) -> None:
    path = tmp_path / "job.state"
    with Resumable(path) as r:
        assert list(r.iterate(INPUTS[kind](size))) == list(range(size))
        assert (r.position, r.finished) == (size, True)
    assert (inspect(path).position, inspect(path).finished) == (size, True)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(INPUTS)),
    size=st.integers(1, 3 * MAX_CHUNK),
    data=st.data(),
)
def test_break_anywhere_then_resume_yields_exactly_the_rest(
    tmp_path_factory: pytest.TempPathFactory, kind: str, size: int, data: st.DataObject
) -> None:
    stop = data.draw(st.integers(0, size - 1), label="break at")
    path = tmp_path_factory.mktemp("feed") / "job.state"
    with Resumable(path) as r:
        for item in r.iterate(INPUTS[kind](size)):
            assert r.position == item
            if item == stop:
                break
        assert r.position == stop
    with Resumable(path) as r:
        assert list(r.iterate(INPUTS[kind](size))) == list(range(stop, size))


@pytest.mark.parametrize("kind", INPUTS)
def test_ctrl_c_stops_after_the_current_item_inside_a_chunk(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "job.state"
    finished: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(path, quiet=True) as r:
        for item in r.iterate(INPUTS[kind](3000)):
            if item == 1500:
                signal.raise_signal(signal.SIGINT)
            finished.append(item)
    assert finished == list(range(1501))
    assert inspect(path).position == 1501


@pytest.mark.parametrize("size", [5, MAX_CHUNK - 1, MAX_CHUNK, 3000])
def test_ctrl_c_while_the_input_finds_its_end_counts_no_item_too_many(
    tmp_path: Path, size: int
) -> None:
    """The signal lands during the pull that finds no further item: that pull's None was
    counted when the stop came, and must not end up as an item done."""

    def source() -> Iterator[int]:
        yield from range(size)
        signal.raise_signal(signal.SIGINT)  # ctrl+c while the source looks for one more

    path = tmp_path / "job.state"
    finished: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(path, quiet=True) as r:
        for item in r.iterate(source()):
            finished.append(item)
    assert finished == list(range(size))
    assert (inspect(path).position, inspect(path).finished) == (size, True)


def flaky_generator() -> Iterator[int]:
    yield from range(1500)
    raise ConnectionError("the source broke")


def flaky_iterator() -> Iterator[int]:
    def read(number: int) -> int:
        if number == 1500:
            raise ConnectionError("the source broke")
        return number

    return map(read, range(3000))


@pytest.mark.parametrize("flaky", [flaky_generator, flaky_iterator])
def test_an_error_from_the_input_keeps_every_finished_item(
    tmp_path: Path, flaky: Callable[[], Iterator[int]]
) -> None:
    path = tmp_path / "job.state"
    with pytest.raises(ConnectionError, match="the source broke"), Resumable(path) as r:
        for _ in r.iterate(flaky()):
            pass
    assert inspect(path).position == 1500


def test_an_error_from_indexing_keeps_every_finished_item(tmp_path: Path) -> None:
    class Broken(IndexOnly):
        def __getitem__(self, index: int) -> int:  # type: ignore[override]
            if index == 700:
                raise OSError("unreadable record")
            return super().__getitem__(index)

    path = tmp_path / "job.state"
    with pytest.raises(OSError, match="unreadable record"), Resumable(path) as r:
        list(r.iterate(Broken(2000)))
    assert inspect(path).position == 700


def test_a_list_that_grows_while_looping_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "job.state"
    urls = ["start"]
    with Resumable(path) as r:
        for url in r.iterate(urls):
            if len(urls) < 2500:
                urls.extend([f"{url}/a", f"{url}/b"])
        assert r.position == len(urls) >= 2500
    assert inspect(path).finished


def test_items_appended_by_the_last_body_are_not_handed_out_after_ctrl_c(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.state"
    urls = list(range(3000))
    finished: list[int] = []
    with pytest.raises(KeyboardInterrupt), Resumable(path, quiet=True) as r:
        for url in r.iterate(urls):
            if url == 1500:
                signal.raise_signal(signal.SIGINT)
                urls.extend(range(10))  # a crawler queues what it found
            finished.append(url)
    assert finished == list(range(1501))


def test_the_list_iterator_behaviour_the_feed_relies_on() -> None:
    """A list iterator pulled past its end drops its list: it pickles as an empty iterator,
    and moving it (as a cut does) does not bring it back. A Python that changes this must
    fail here, not miscount a loop."""
    at_end: Any = iter([None, None])  # list iterators: __setstate__ is not in their stubs
    pulled_past: Any = iter([None, None])
    at_end.__setstate__(2)
    pulled_past.__setstate__(2)
    assert next(pulled_past, "end") == "end"
    assert len(at_end.__reduce__()) == 3
    assert len(pulled_past.__reduce__()) == 2
    pulled_past.__setstate__(0)
    assert (pulled_past.__length_hint__(), len(pulled_past.__reduce__())) == (0, 2)


class Columns:
    """Like a polars DataFrame: len() and indexing count rows, iteration yields columns."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[str, int]:
        if not 0 <= index < 5:
            raise IndexError(index)
        return ("row", index)

    def __iter__(self) -> Iterator[str]:
        return iter(["id", "name", "price", "stock"])


class Overstated:
    """A len() that says more than there is (a count cached before rows went), and no
    __iter__: a for loop indexes it until IndexError."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < 7:
            raise IndexError(index)
        return index * 10


class Understated(IndexOnly):
    """A Sequence whose len() says less than its items: Sequence.__iter__ ignores len()."""

    def __len__(self) -> int:
        return 3


class Backwards(list[int]):
    """A list that iterates backwards."""

    def __iter__(self) -> Iterator[int]:
        return reversed(self)


class ReadByIndex(collections.deque[int]):
    """A deque that fails when read by index: a deque is a linked list of blocks, so
    reading it by index takes time growing with the index."""

    def __getitem__(self, index: object) -> int:  # type: ignore[override]
        raise AssertionError("a deque must be iterated, not indexed")


ALIKE: dict[str, Callable[[], Iterable[object]]] = {
    "own __iter__ besides len and []": Columns,
    "len() too high, no __iter__": lambda: cast(Iterable[int], Overstated()),
    "Sequence with len() too low": lambda: Understated(7),
    "list subclass with own __iter__": lambda: Backwards(range(6)),
    "deque": lambda: ReadByIndex(range(3000)),
    "dict": lambda: {f"key {n}": n for n in range(6)},
    "UserList": lambda: collections.UserList(range(6)),
    "array.array": lambda: array.array("i", range(6)),
    "str subclass": lambda: type("Text", (str,), {})("abcdef"),
    "memoryview": lambda: memoryview(b"abcdef"),
}


@pytest.mark.parametrize("make", ALIKE.values(), ids=ALIKE)
def test_iterate_yields_exactly_what_a_for_loop_yields_on_every_run(
    tmp_path: Path, make: Callable[[], Iterable[object]]
) -> None:
    expected = list(make())
    path = tmp_path / "job.state"
    with Resumable(path) as r:
        assert list(r.iterate(make())) == expected
    stop = len(expected) // 2
    path = tmp_path / "resumed.state"
    with Resumable(path) as r:
        for done, item in enumerate(r.iterate(make())):
            if done == stop:
                break
            assert item == expected[done]
    with Resumable(path) as r:
        assert list(r.iterate(make())) == expected[stop:]
        assert r.finished


def test_an_input_read_by_index_that_ends_before_the_position_is_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.state"
    with Resumable(path) as r:
        assert list(r.iterate(cast(Iterable[int], Overstated()))) == [0, 10, 20, 30, 40, 50, 60]

    class Shorter(Overstated):
        def __getitem__(self, index: int) -> int:
            return super().__getitem__(index) if index < 4 else super().__getitem__(99)

    ran_out = "7 items are done, but the input ran out"
    with pytest.raises(InputChangedError, match=ran_out), Resumable(path) as r:
        r.iterate(cast(Iterable[int], Shorter()), on_change="continue")
    assert inspect(path).position == 7


FEEDS: dict[str, Callable[[], Feed[int]]] = {
    "list": lambda: open_feed(list(range(100)), 0, "job"),
    "index-only sequence": lambda: open_feed(IndexOnly(100), 0, "job"),
    "generator": lambda: open_feed(numbers(100), 0, "job"),
    "iterator": lambda: open_feed(map(int, range(100)), 0, "job"),
}


def ask_cutting_at_line(feed: Feed[int], question: str, line: int) -> tuple[object, int]:
    """Ask the feed `question`, cutting it as its `line`-th line runs (0: never).

    Returns the answer and how many lines of the feed ran. sys.settrace stops at every
    line, as a signal handler can.
    """
    lines = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal lines
        if frame.f_code.co_filename != FEED_FILE:
            return None
        if event == "line":
            lines += 1
            if lines == line:
                feed.cut()
        return tracer

    previous = sys.gettrace()  # coverage's tracer under nox -s coverage: put it back
    sys.settrace(tracer)
    try:
        answer = feed.chunk(10) if question == "chunk" else getattr(feed, question)()
    finally:
        sys.settrace(previous)
    return answer, lines


def test_a_cut_landing_inside_any_line_of_the_check_after_the_input_ended() -> None:
    """The source ran out (on the counter's last None, or before it), and a signal handler
    cuts the feed between any two lines of the boundary's question: still 4 items taken,
    and the input counts as ended."""
    for chunk_size, source in itertools.product((5, 10), (numbers, lambda n: iter(range(n)))):
        line = 1
        while True:
            feed = open_feed(source(4), 0, "job")
            assert list(feed.chunk(chunk_size)) == [0, 1, 2, 3]
            ended, lines = ask_cutting_at_line(feed, "exhausted", line)
            assert (ended, feed.taken(), feed.exhausted()) == (True, 4, True)
            if lines < line:
                break
            line += 1


@pytest.mark.parametrize("kind", FEEDS)
@pytest.mark.parametrize("question", ["taken", "exhausted", "chunk"])
def test_a_cut_landing_inside_any_line_of_the_feed_is_never_miscounted(
    kind: str, question: str
) -> None:
    """A signal handler may cut the feed between any two lines of its other methods."""
    line = 1
    while True:
        feed = FEEDS[kind]()
        assert list(feed.chunk(4)) == [0, 1, 2, 3]  # used up, as before the loop asks again
        answer, lines = ask_cutting_at_line(feed, question, line)
        if question == "taken":
            assert answer == 4
        elif question == "exhausted":
            assert answer is False
        if lines >= line:  # the cut happened: nothing more is handed out
            if question == "chunk":
                assert list(cast(Iterator[int], answer)) == []
            assert (feed.taken(), feed.exhausted()) == (4, False)
        else:
            break
        line += 1


def test_a_range_past_2_63_items_resumed_far_in_jumps_to_its_position(tmp_path: Path) -> None:
    """range(2**64) has a long range iterator of its own, which jumps too: resumed at
    item 10**12 (a state file edited to that position, its checksum made anew), the loop
    hands out item 10**12 at once. In a child with a time limit: reading through 10**12
    items instead would take hours."""
    code = textwrap.dedent(
        f"""
        import orjson, sys
        from pathlib import Path
        from resumable import Resumable
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from jobs.documents import checksummed
        state = Path({str(tmp_path / "job.state")!r})
        with Resumable(state) as r:
            for item in r.iterate(range(2**64)):
                if item == 3:
                    break
        document = orjson.loads(state.read_bytes())
        del document["checksum"]
        document["progress"]["position"] = 10**12
        state.write_bytes(checksummed(document))
        with Resumable(state) as r:
            print(next(iter(r.iterate(range(2**64)))))
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert ran.stdout == f"{10**12}\n"
