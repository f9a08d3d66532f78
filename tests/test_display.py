"""Progress bars: ``iterate(progress=True)`` draws a tqdm bar; a display of your own works too."""

from __future__ import annotations

import io
import itertools
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time
from tqdm import tqdm

from resumable import NPolicy, Resumable, TimePolicy


def resume_at(path: Path, position: int, total: int) -> None:
    """A first run that broke after `position` items of range(total)."""
    with Resumable(path) as r:
        for item in r.iterate(range(total)):
            if item == position:
                break


def last_frame(stderr: str) -> str:
    """What a terminal would show last on the bar's line."""
    return stderr.rstrip("\n").split("\n")[-1].split("\r")[-1].strip()


class Recorder:
    """A display of our own: records each update with the (frozen) time it came at."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, int]] = []
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.updates.append((time.monotonic(), n))

    def close(self) -> None:
        self.closed = True

    @property
    def total(self) -> int:
        return sum(n for _, n in self.updates)


def test_the_bar_starts_at_the_resumed_position_and_rates_only_this_run(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """9,000 of 10,000 items were done before; this run does 100 at one second each. The
    rate is 1 item/s and the ETA 900 s: the skipped 9,000 items count for neither."""
    resume_at(state_path, 9000, 10_000)
    capsys.readouterr()
    with freeze_time("2026-11-27 14:00:00", tick=False) as frozen, Resumable(state_path) as r:
        for item in r.iterate(range(10_000), progress=True):
            if item == 9100:
                break
            frozen.tick(1)
    frame = last_frame(capsys.readouterr().err)
    assert "9100/10000" in frame, frame
    # 100 items in 100 s: 1 s per item (not 91 items/s, as 9,100 items would make it) and
    # 900 s for the 900 left.
    assert "[01:40<15:00,  1.00item/s" in frame, frame
    assert frame.startswith("job.state:"), frame


def test_the_bar_of_an_input_without_a_length_counts_without_a_total(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resume_at(state_path, 40, 100)
    capsys.readouterr()
    with freeze_time("2026-11-27 14:00:00", tick=False) as frozen, Resumable(state_path) as r:
        for _ in r.iterate((n for n in range(100)), progress=True):
            frozen.tick(2)
    frame = last_frame(capsys.readouterr().err)
    assert "100item [02:00,  2.00s/item" in frame, frame  # 60 items at 2 s each, no total


def test_the_postfix_says_when_the_last_save_happened(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        freeze_time("2026-11-27 14:03:00", tick=False) as frozen,
        Resumable(state_path, policy=NPolicy(10)) as r,
    ):
        for item in r.iterate(range(25), progress=True):
            frozen.tick(1)
            if item == 20:
                break
    # Saves after 10 and 20 items, the second at 14:03:20 (freezegun's local time is the
    # frozen time itself).
    frame = last_frame(capsys.readouterr().err)
    assert frame.endswith("saved 14:03:20]"), frame


def test_the_bar_moves_at_least_five_times_a_second_even_when_saves_are_rare(
    state_path: Path,
) -> None:
    """Without a display the loop would check only every 1024 items here; a display makes
    it come back every 0.2 s of the (frozen) clock."""
    display = Recorder()
    with freeze_time("2026-11-27", tick=False) as frozen, Resumable(state_path) as r:
        for _ in r.iterate(range(5000), progress=display):
            frozen.tick(0.01)
    times = [when for when, _ in display.updates]
    assert display.total == 5000
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= 0.2 + 1e-6, max(gaps)  # frozen time is a float timestamp
    assert len(display.updates) < 5000 / 10  # and not per item either


def test_a_display_of_your_own_gets_this_runs_items_and_stays_open(state_path: Path) -> None:
    resume_at(state_path, 30, 100)
    display = Recorder()
    with Resumable(state_path, policy=TimePolicy(3600)) as r:
        for item in r.iterate(list(range(100)), progress=display):
            if item == 80:
                break
    assert display.total == 50  # items 30..79
    assert not display.closed


def test_a_tqdm_bar_of_your_own_works_as_the_docs_show(state_path: Path) -> None:
    resume_at(state_path, 30, 100)
    out = io.StringIO()
    items = list(range(100))
    with Resumable(state_path) as r, tqdm(total=len(items), initial=r.position, file=out) as bar:
        for _ in r.iterate(items, progress=bar):
            pass
        assert bar.n == 100
    assert "100/100" in last_frame(out.getvalue())


def test_progress_true_without_tqdm_names_the_extra_and_consumes_nothing(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # what `import tqdm` meets uninstalled
    taken: list[int] = []

    def source() -> Iterator[int]:
        for n in range(10):
            taken.append(n)
            yield n

    with Resumable(state_path) as r:
        extra = r"pip install tqdm \(from a clone of resumable, pip install '\.\[progress\]'"
        with pytest.raises(ImportError, match=extra):
            r.iterate(source(), progress=True)
        assert taken == []
    assert not state_path.exists()  # a refused run writes nothing


def test_progress_rejects_what_is_not_a_display(state_path: Path) -> None:
    with Resumable(state_path) as r, pytest.raises(TypeError, match="update"):
        r.iterate(range(3), progress="yes")  # type: ignore[call-overload]


def test_ctrl_c_prints_the_stop_line_on_its_own_line_below_our_bar(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path) as r:
        for item in r.iterate(range(100), progress=True):
            if item == 5:
                signal.raise_signal(signal.SIGINT)  # a real signal; the item finishes
    lines = capsys.readouterr().err.split("\n")
    stop = [line for line in lines if "stopped by SIGINT" in line]
    assert stop == [
        f"resumable: stopped by SIGINT after 6 items (6 in this run); progress saved to "
        f"{state_path}. Run again to continue."
    ]
    bar_lines = [line for line in lines if "item" in line and "stopped" not in line]
    assert "6/100" in bar_lines[-1].split("\r")[-1]  # closed at the saved position first


def test_ctrl_c_writes_the_stop_line_through_a_bar_of_your_own(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tqdm's write() clears the bar, prints the line and redraws the bar under it."""
    with (
        pytest.raises(KeyboardInterrupt),
        tqdm(total=100, file=sys.stderr) as bar,
        Resumable(state_path) as r,
    ):
        for item in r.iterate(range(100), progress=bar):
            if item == 5:
                signal.raise_signal(signal.SIGINT)
    err = capsys.readouterr().err
    stop_lines = [line for line in err.split("\n") if "stopped by SIGINT" in line]
    assert len(stop_lines) == 1
    # The bar's last drawing was cleared by a carriage return before the stop line.
    assert stop_lines[0].split("\r")[-1].startswith("resumable: stopped by SIGINT after 6 items")


def test_quiet_silences_the_stop_line_with_a_bar_too(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyboardInterrupt), Resumable(state_path, quiet=True) as r:
        for item in r.iterate(range(100), progress=True):
            if item == 5:
                signal.raise_signal(signal.SIGINT)
    assert "stopped by" not in capsys.readouterr().err


def test_without_tqdm_a_resumed_generator_is_not_read_and_a_loop_without_a_bar_runs(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, for a resumed job: the ImportError comes before the done prefix of the
    generator is skipped; and progress=False needs no tqdm."""
    with Resumable(state_path) as r:
        for item in r.iterate(iter(range(10))):
            if item == 3:
                break
    monkeypatch.setitem(sys.modules, "tqdm", None)  # what an absent package makes import do
    source = iter(range(10))
    with Resumable(state_path) as r:
        with pytest.raises(ImportError, match="pip install tqdm"):
            r.iterate(source, progress=True)
        assert next(source) == 0  # nothing read
        assert list(r.iterate(range(10))) == list(range(3, 10))
