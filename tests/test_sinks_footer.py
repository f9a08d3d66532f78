"""The code after the loop of a job with sinks (a footer): it counts once the with block
leaves without an error, and a rerun of the finished job appends nothing
(docs/output-files.md, "Headers and footers").

Whatever stops a run in the footer (an exception, ctrl+c, kill -9, a `break` before it),
the file ends up, once the job finishes, equal to the file of one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from resumable import Resumable, ResumableWarning, inspect

from jobs.harness import TIMEOUT, Child, campaign_seed, child_env

ONE_RUN = "header\n0\n1\n2\n3\n4\ntotal: 5\n"


class FooterError(Exception):
    """The footer code's failure in these tests."""


@contextlib.contextmanager
def finished_job_rerun() -> Iterator[None]:
    """A rerun of a finished job warns "already finished; nothing to do"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(
    state: Path,
    out: Path,
    items: int = 5,
    footer: tuple[str, ...] = ("total: ", "5\n"),
    fail_after: int | None = None,
    save_in_footer: bool = False,
) -> None:
    """One run: a header while the sink is empty, one line per item, then the footer in
    parts; raises FooterError after part `fail_after` of the footer."""
    with Resumable(state) as r:
        sink = r.sink(out)
        if sink.length == 0:
            sink.write("header\n")
        for item in r.iterate(range(items)):
            sink.write(f"{item}\n")
        for number, part in enumerate(footer):
            sink.write(part)
            if save_in_footer:
                r.save()  # records the output up to the loop's end, not the footer's start
            if number == fail_after:
                raise FooterError


def record(state: Path) -> dict[str, object]:
    """The sink's record in the state file (docs/state-file.md: ``sinks``)."""
    document = orjson.loads(state.read_bytes())
    (only,) = document["sinks"].values()
    assert isinstance(only, dict)
    return only


def test_a_finished_job_records_where_its_footer_starts(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out)
    assert out.read_text() == ONE_RUN
    saved = record(state)
    assert saved["length"] == len(ONE_RUN)
    assert saved["footer_at"] == len(ONE_RUN) - len("total: 5\n")
    assert inspect(state).sinks == {str(out): len(ONE_RUN)}


def test_a_rerun_of_a_finished_job_writing_its_footer_in_other_parts_changes_nothing(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out)
    before = state.read_bytes()
    with finished_job_rerun():
        run(state, out, footer=("to", "tal: 5", "\n"))
        run(state, out, footer=("total: ",))  # less than the first run: nothing cut
    assert out.read_text() == ONE_RUN
    assert record(state) == orjson.loads(before)["sinks"]["out.txt"]


def test_a_rerun_of_a_finished_job_writing_another_footer_warns_once_and_changes_nothing(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out)
    before = record(state)
    for footer in (("total: 6\n",), ("total: 5\n", "more\n"), ("x\n", "total: 5\n")):
        with finished_job_rerun(), pytest.warns(ResumableWarning) as warned:
            run(state, out, footer=footer)
        assert len(warned) == 1, [str(w.message) for w in warned]
        message = str(warned[0].message)
        assert str(out) in message
        assert "restart=True" in message
        assert out.read_text() == ONE_RUN
        assert record(state) == before


@pytest.mark.parametrize("save_in_footer", [False, True], ids=["", "r.save() in the footer"])
def test_an_exception_in_the_footer_leaves_it_to_the_next_run_whole(
    tmp_path: Path, save_in_footer: bool
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(FooterError):
        run(state, out, fail_after=0, save_in_footer=save_in_footer)
    assert inspect(state).sinks == {str(out): len(ONE_RUN) - len("total: 5\n")}
    run(state, out)
    assert out.read_text() == ONE_RUN


def test_a_break_out_of_the_loop_leaves_its_footer_to_the_run_that_finishes(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        sink = r.sink(out)
        sink.write("header\n")
        for item in r.iterate(range(5)):
            sink.write(f"{item}\n")
            if item == 2:
                break  # item 2 is not done: it runs again
        sink.write("total: 2\n")  # the footer of a loop that did not finish
    assert out.read_text() == "header\n0\n1\n2\ntotal: 2\n"
    run(state, out)
    assert out.read_text() == ONE_RUN


def test_a_new_sink_in_a_rerun_of_a_finished_job_keeps_its_header_and_footer(
    tmp_path: Path,
) -> None:
    state, out, summary = tmp_path / "job.state", tmp_path / "out.txt", tmp_path / "summary"
    run(state, out)
    for _ in range(2):
        with finished_job_rerun(), Resumable(state) as r:
            rows = r.sink(summary).csv(header=["what", "count"])
            for _ in r.iterate(range(5)):
                pass
            rows.writerow(["items", 5])
    assert summary.read_bytes() == b"what,count\r\nitems,5\r\n"


def test_a_finished_keyed_job_whose_input_grew_appends_after_its_footer(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"

    def keyed(keys: str) -> None:
        with Resumable(state) as r:
            sink = r.sink(out)
            for key in r.iterate(keys, key=str):
                sink.write(f"{key}\n")
            sink.write("end\n")

    keyed("ab")
    with finished_job_rerun():
        keyed("ab")  # nothing new: nothing appended
    keyed("abc")
    with finished_job_rerun():
        keyed("abc")
    # Append only: a footer written stays, and the new items' output follows it.
    assert out.read_text() == "a\nb\nend\nc\nend\n"


def test_a_finished_keyed_job_whose_input_grew_writes_its_new_footer_without_new_lines(
    tmp_path: Path,
) -> None:
    """New items that write nothing still make the footer new output (a count, here)."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"

    def counted(keys: str) -> None:
        with Resumable(state) as r:
            sink = r.sink(out)
            for _ in r.iterate(keys, key=str):
                pass
            sink.write(f"{r.position} done\n")

    counted("ab")
    with finished_job_rerun():
        counted("ab")
    counted("abc")
    with finished_job_rerun():
        counted("abc")
    assert out.read_text() == "2 done\n3 done\n"


NOTES = "notes: " + "n" * 9000 + "\n"
FOOTER_JOB = f"""
import os, signal, sys
from resumable import Resumable

NOTES = {NOTES!r}

with Resumable(sys.argv[1]) as r:
    sink = r.sink(sys.argv[2])
    if sink.length == 0:
        sink.write("header\\n")
    for item in r.iterate(range(5)):
        sink.write(f"{{item}}\\n")
    sink.write(NOTES)  # longer than the buffer: on the disk before the stop
    r.save()
    if sys.argv[3] != "go":
        os.kill(os.getpid(), getattr(signal, sys.argv[3]))
    sink.write("total: 5\\n")
"""


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_run_stopped_by_a_signal_in_its_footer_is_followed_by_one_whole_footer(
    tmp_path: Path, stop: str
) -> None:
    state, out, script = tmp_path / "job.state", tmp_path / "out.txt", tmp_path / "job.py"
    script.write_text(textwrap.dedent(FOOTER_JOB))

    def job(how: str) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, str(script), str(state), str(out), how]
        return subprocess.run(
            command, env=child_env(), timeout=TIMEOUT, capture_output=True, check=False
        )

    stopped = job(stop)
    assert stopped.returncode != 0, stopped.stderr[-2000:]
    if stop == "SIGKILL":
        assert stopped.returncode == -signal.SIGKILL
        assert out.read_text().endswith("4\n" + NOTES)  # the first half of the footer
    finished = job("go")
    assert finished.returncode == 0, finished.stderr[-2000:]
    again = job("go")
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_text() == ONE_RUN.replace("total", NOTES + "total")


def test_a_rerun_of_a_finished_job_without_its_footer_record_appends_it_once(
    tmp_path: Path,
) -> None:
    """A job finished by an earlier 0.2 (a bare length per sink, no footer_at) is not
    known to be finished with its footer: the rerun's footer is appended, once."""
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    run(state, out, footer=())
    document = orjson.loads(state.read_bytes())
    document["sinks"] = {"out.txt": document["sinks"]["out.txt"]["length"]}
    del document["checksum"]
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    checksum = f"crc32:{zlib.crc32(canonical):08x}"
    state.write_bytes(canonical[:-1] + f',"checksum":"{checksum}"}}'.encode())
    os.unlink(f"{state}.bak")
    with finished_job_rerun():
        run(state, out)
        run(state, out)
    assert out.read_text() == ONE_RUN


FOOTER_ITEMS = 12
FOOTER_STEPS = 1 + 2 * FOOTER_ITEMS + 4  # the header, two writes per item, the footer's four


def footer_job(directory: Path) -> Child:
    items = str(FOOTER_ITEMS)
    return Child("footer_job.py", directory / "job.state", directory / "out.txt", "--items", items)


def footer_campaign(tmp_path: Path, kills: int, seed: int) -> None:
    """Kill the footer job `kills` times, each at a random step of its run (the runs
    after the job finished are reruns, killed in their footer), then run it to the end,
    and once more: each time, its output equals that of one run."""
    rng = random.Random(seed)
    once = tmp_path / "once"
    once.mkdir()
    with footer_job(once) as child:
        assert child.finish().returncode == 0, child.describe("the uninterrupted run")
    reference = (once / "out.txt").read_bytes()
    job = tmp_path / "job"
    job.mkdir()
    for kill in range(kills):
        target = rng.randrange(FOOTER_STEPS)
        context = f"kill {kill + 1} at step {target} (seed {seed})"
        with footer_job(job) as child:
            for step in range(target + 1):
                line = child.read_line()
                assert line is not None, child.describe(f"{context}: ended early")
                if line.startswith("done"):
                    break  # a rerun of the finished job has fewer steps
                if step != target:
                    child.send("go")
            result = child.kill9()
        assert result.returncode in (-signal.SIGKILL, 0), child.describe(context)
        written = (job / "out.txt").read_bytes()
        recorded = inspect(job / "job.state").sinks[str(job / "out.txt")]
        assert written[:recorded] == reference[:recorded], f"{context}: output differs"
    for run in ("final run", "rerun"):
        with footer_job(job) as child:
            result = child.finish()
        assert result.returncode == 0, child.describe(run)
        assert (job / "out.txt").read_bytes() == reference, f"{run} (seed {seed})"


def test_kill9_at_random_steps_around_the_footer_leaves_the_output_of_one_run(
    tmp_path: Path,
) -> None:
    footer_campaign(tmp_path, kills=10, seed=campaign_seed())


@pytest.mark.slow
def test_200_kill9_at_random_steps_around_the_footer_leave_the_output_of_one_run(
    tmp_path: Path,
) -> None:
    footer_campaign(tmp_path, kills=200, seed=campaign_seed())
