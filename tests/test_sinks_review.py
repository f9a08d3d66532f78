"""A hostile review of output files (`Resumable.sink`, issue 15): the bugs it found, each a
test of what a user should get, marked ``xfail(strict=True)`` with the bug as its reason
until resumable/ is fixed (then the mark goes, and the test stays).

Real files, a real FIFO, real hard links, a real ``os.fork()`` in a child process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from resumable import Resumable, ResumableError, UsageError

from jobs.harness import TIMEOUT, child_env


class BodyError(Exception):
    """The body's failure in these tests."""


def lines(items: range) -> str:
    return "".join(f"{item}\n" for item in items)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_a_text_sink_in_an_encoding_with_a_byte_order_mark_writes_it_once(
    tmp_path: Path, encoding: str
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    for fail_at in (2, None):  # two runs: the second appends to the first's output
        with contextlib.suppress(BodyError), Resumable(state) as r:
            sink = r.sink(out, encoding=encoding)
            rows = sink.csv()
            for item in r.iterate(range(4)):
                if item == fail_at:
                    raise BodyError
                sink.write(f"{item}\n")
                sink.write_json({"item": item})
                rows.writerow([item, "é"])
    expected = "".join(f'{item}\n{{"item":{item}}}\n{item},é\r\n' for item in range(4))
    # What Python's own open(out, "a", encoding=encoding) writes: one BOM, at the start.
    assert out.read_bytes().decode(encoding) == expected


def test_a_text_sink_takes_a_subclass_of_str(tmp_path: Path) -> None:
    class Name(str):
        pass

    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate([Name("red"), Name("green")]):
            sink.write(item)
    assert out.read_text() == "redgreen"


def _blocked_opening_a_fifo(thread: threading.Thread) -> bool:
    """Whether `thread` sleeps in the kernel waiting for a FIFO's reader."""
    try:
        wchan = Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()
    except OSError:
        return False
    return wchan in ("wait_for_partner", "fifo_open")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_a_sink_on_a_fifo_without_a_reader_is_refused_at_once(tmp_path: Path) -> None:
    state, fifo = tmp_path / "job.state", tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []
    with Resumable(state) as r:

        def open_sink() -> None:
            try:
                r.sink(fifo)
            except BaseException as error:  # handed to the test's thread
                outcome.append(error)
            else:
                outcome.append(None)

        opener = threading.Thread(target=open_sink)
        opener.start()
        deadline = time.monotonic() + TIMEOUT
        blocked = False
        while opener.is_alive() and time.monotonic() < deadline:
            if _blocked_opening_a_fifo(opener):
                blocked = True
                break
            time.sleep(0.001)  # polls a real condition: the thread ended, or sleeps in open
        if opener.is_alive():
            # Let it go: a reader completes the writer's open.
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            opener.join()
            os.close(reader)
    assert not blocked, "r.sink waited for a reader of the FIFO"
    assert len(outcome) == 1
    assert isinstance(outcome[0], UsageError), outcome
    assert "not a regular file" in str(outcome[0])


def test_a_hard_link_to_a_sink_of_this_job_is_refused_as_the_same_file(tmp_path: Path) -> None:
    state, first, second = tmp_path / "job.state", tmp_path / "a.txt", tmp_path / "b.txt"
    with Resumable(state) as r:
        r.sink(first)
        os.link(first, second)
        with pytest.raises(UsageError) as refused:
            r.sink(second)
    assert "another job" not in str(refused.value)
    assert str(first) in str(refused.value), "the message names the sink it is the same as"


def test_a_sink_used_by_two_jobs_in_turn_never_loses_the_other_jobs_output(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared.txt"
    with pytest.raises(BodyError), Resumable(tmp_path / "a.state") as a:
        a.sink(shared)  # recorded at 0 bytes at once
        raise BodyError
    refused = False
    try:
        with Resumable(tmp_path / "b.state") as b:
            out = b.sink(shared)
            for item in b.iterate(range(3)):
                out.write(f"b{item}\n")
        with Resumable(tmp_path / "a.state") as a:
            out = a.sink(shared)
            for item in a.iterate(range(3)):
                out.write(f"a{item}\n")
    except ResumableError:
        refused = True  # either job refusing the file is a fix
    assert refused or "b0\nb1\nb2\n" in shared.read_text(), shared.read_text()


def test_a_sink_replaced_by_a_longer_different_file_is_refused_not_cut(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError), Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(10)):
            if item == 5:
                raise BodyError
            sink.write(f"{item}\n")
    precious = "someone else's data, longer than the job's output\n"
    out.unlink()
    out.write_text(precious)  # another file at that path
    with pytest.raises(ResumableError), Resumable(state) as r:
        r.sink(out)
    assert out.read_text() == precious


def test_a_resumed_job_run_from_another_directory_does_not_split_its_output_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "job.state"  # absolute, as a job started by cron names it
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    with pytest.raises(BodyError), Resumable(state) as r:
        sink = r.sink("out.jsonl")
        for item in r.iterate(range(10)):
            if item == 5:
                raise BodyError
            sink.write_json(item)
    monkeypatch.chdir(second)
    told = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Resumable(state) as r:
                sink = r.sink("out.jsonl")
                for item in r.iterate(range(10)):
                    sink.write_json(item)
    except (UsageError, Warning):
        told = True
    assert told, (
        f"first/out.jsonl: {(first / 'out.jsonl').read_text()!r}, "
        f"second/out.jsonl: {(second / 'out.jsonl').read_text()!r}"
    )


def test_a_sink_written_in_a_map_worker_is_a_clear_error(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(UsageError), Resumable(state) as r:
        sink = r.sink(out)

        def work(item: int) -> int:
            sink.write(f"{item}\n")  # in the worker: the docs say the body writes
            return item

        for _ in r.map(work, range(6), workers=3):
            pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_child_leaving_the_with_block_writes_nothing_to_the_parents_sink(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    script = tmp_path / "fork_sink.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            from resumable import Resumable

            with Resumable({str(state)!r}) as r:
                sink = r.sink({str(out)!r})
                for item in r.iterate(range(4)):
                    sink.write(f"{{item}}\\n")
                    if item == 2:
                        child = os.fork()
                        if child == 0:
                            sys.exit(0)  # falls through the with block, then exits
                        os.waitpid(child, 0)
            """
        )
    )
    subprocess.run([sys.executable, str(script)], env=child_env(), timeout=TIMEOUT, check=True)
    # A rerun of the finished job cuts the file to the length its state records.
    with Resumable(state) as r:
        r.sink(out)
    assert out.read_text() == lines(range(4))


def test_a_write_after_the_with_block_names_the_sink_and_says_why(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate(range(3)):
            sink.write(f"{item}\n")
    with pytest.raises(UsageError, match=r"out\.txt"):
        sink.write("footer\n")  # a footer written after the with block


def test_on_change_restart_starts_the_output_over_too(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    with pytest.raises(BodyError), Resumable(state) as r:
        sink = r.sink(out)
        for item in r.iterate([1, 2, 3, 99, 5], on_change="restart"):
            if item == 99:
                raise BodyError
            sink.write(f"{item}\n")
    try:
        with Resumable(state) as r:
            sink = r.sink(out)
            for item in r.iterate([7, 8, 9], on_change="restart"):
                sink.write(f"{item}\n")
    except ResumableError:
        return  # refusing sinks with on_change='restart' is a fix too
    assert out.read_text() == "7\n8\n9\n"


def test_a_sink_name_that_is_not_utf8_is_refused_as_such(tmp_path: Path) -> None:
    state = tmp_path / "job.state"
    out = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff.txt")
    with Resumable(state) as r, pytest.raises(UsageError) as refused:
        r.sink(out)
    assert "damaged" not in str(refused.value)


def test_a_rerun_of_a_finished_job_leaves_its_output_as_it_is(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"

    def run() -> None:
        with Resumable(state) as r:
            sink = r.sink(out)
            for item in r.iterate(range(3)):
                sink.write(f"{item}\n")
            sink.write("end\n")  # a footer, as docs/output-files.md allows

    run()
    once = out.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "this job already finished; nothing to do"
        # Refusing output to a job that finished before the run is a fix too.
        with contextlib.suppress(ResumableError):
            run()
    assert out.read_text() == once


@pytest.mark.parametrize("encoding", ["hex", "rot13"])
def test_a_codec_that_is_not_a_text_encoding_is_refused_by_sink(
    tmp_path: Path, encoding: str
) -> None:
    with Resumable(tmp_path / "job.state") as r, pytest.raises(ValueError, match="encoding"):
        r.sink(tmp_path / "out.txt", encoding=encoding)


def test_a_footer_cut_short_by_ctrl_c_is_written_whole_by_the_next_run(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    script = tmp_path / "footer_job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from resumable import Resumable

            with Resumable({str(state)!r}) as r:
                sink = r.sink({str(out)!r})
                for item in r.iterate(range(3)):
                    sink.write(f"{{item}}\\n")
                sink.write("total: ")
                if sys.argv[1] == "interrupt":
                    os.kill(os.getpid(), signal.SIGINT)  # ctrl+c in the middle of the footer
                sink.write("3\\n")
            """
        )
    )
    interrupted = subprocess.run(
        [sys.executable, str(script), "interrupt"],
        env=child_env(),
        timeout=TIMEOUT,
        capture_output=True,
        check=False,
    )
    assert interrupted.returncode != 0, "the ctrl+c did not stop the first run"
    subprocess.run(
        [sys.executable, str(script), "go"],
        env=child_env(),
        timeout=TIMEOUT,
        capture_output=True,
        check=True,
    )
    assert out.read_text() == "0\n1\n2\ntotal: 3\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_child_outliving_a_killed_job_does_not_hold_its_sink(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    script = tmp_path / "lingering_child_job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing, os, signal
            from resumable import Resumable

            def linger(fd):
                os.read(fd, 1)  # never returns: every copy of the write end stays open

            if __name__ == "__main__":
                multiprocessing.set_start_method("fork")
                read_end, _ = os.pipe()
                with Resumable({str(state)!r}) as r:
                    sink = r.sink({str(out)!r})
                    for item in r.iterate(range(3)):
                        sink.write(f"{{item}}\\n")
                        if item == 1:
                            child = multiprocessing.Process(target=linger, args=(read_end,))
                            child.start()
                            print(child.pid, flush=True)
                            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    reported = tmp_path / "child.pid"
    with reported.open("w") as stdout:  # a file: the lingering child would hold a pipe open
        killed = subprocess.run(
            [sys.executable, str(script)],
            env=child_env(),
            timeout=TIMEOUT,
            stdout=stdout,
            check=False,
        )
    lingering = int(reported.read_text().split()[0])
    try:
        assert killed.returncode == -9
        with Resumable(state) as r:
            sink = r.sink(out)
            for item in r.iterate(range(3)):
                sink.write(f"{item}\n")
    finally:
        os.kill(lingering, 9)
    assert out.read_text() == lines(range(3))


@pytest.mark.strace
def test_a_restart_killed_before_its_first_save_leaves_a_job_that_runs(tmp_path: Path) -> None:
    state, out = tmp_path / "job.state", tmp_path / "out.txt"
    script = tmp_path / "restart_job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from resumable import Resumable

            with Resumable({str(state)!r}, restart=sys.argv[1] == "restart") as r:
                sink = r.sink({str(out)!r})
                for item in r.iterate(range(3)):
                    sink.write(f"{{item}}\\n")
            """
        )
    )
    subprocess.run(
        [sys.executable, str(script), "first"], env=child_env(), timeout=TIMEOUT, check=True
    )
    strace = shutil.which("strace")
    assert strace is not None
    # kill -9 at the first rename of the state file: the first save setting it aside.
    traced = ["-f", "-qq", "-o", str(tmp_path / "strace.log"), "-P", str(state)]
    faults = ["-e", "trace=rename,renameat,renameat2", "-e", "inject=all:signal=KILL:when=1"]
    killed = subprocess.run(
        [strace, *traced, *faults, sys.executable, str(script), "restart"],
        env=child_env(),
        timeout=TIMEOUT,
        capture_output=True,
        check=False,
    )
    assert killed.returncode in (-9, 137), killed
    # The output is moved aside only after the old state is: killed at that, it is in place.
    assert not list(tmp_path.glob("out.txt.reset-*")), "the sink was moved before the state"
    after = subprocess.run(
        [sys.executable, str(script), "again"],
        env=child_env(),
        timeout=TIMEOUT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert after.returncode == 0, after.stderr[-2000:]
