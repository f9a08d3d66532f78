"""Branches of the open, save and lock paths that `nox -s coverage` found no test for.

docs/reliability.md ("Coverage") lists every uncovered branch of those paths and why the
rest cannot be reached here. Each test below takes one of them through the public API,
with a real file put where the library looks: a lock file replaced by a socket, by a
symlink loop or by text that is no pid, a state file of format version 0.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from resumable import (
    Resumable,
    ResumableWarning,
    StateFileError,
    StateLockedError,
    StateNotSerializableError,
    StateWriteError,
    UsageError,
    inspect,
)
from resumable.policies import NPolicy

from jobs.harness import Job


def lock_file_of(state: Path) -> Path:
    """Where docs/state-file.md says a job's lock file is."""
    return state.with_name(state.name + ".lock")


def digest(path: Path) -> bytes:
    return path.read_bytes()


def test_a_save_after_the_lock_file_became_a_socket_is_refused_naming_no_process(
    tmp_path: Path,
) -> None:
    """A lock file replaced by something that cannot be opened to read a pid (a Unix
    socket) still refuses the save; the error says the file was replaced, naming no pid."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateLockedError, match="was replaced by another file") as raised,
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(range(4)):
            if item == 1:
                lock_file_of(state).unlink()
                with socket.socket(socket.AF_UNIX) as server:
                    server.bind(str(lock_file_of(state)))
                    with pytest.raises(OSError, match="No such device") as opening:
                        os.open(lock_file_of(state), os.O_RDONLY | os.O_NONBLOCK)
                    assert opening.value.errno == errno.ENXIO  # what the test relies on
                    r.save()
    assert "written by process" not in str(raised.value)
    assert inspect(state).position == 1


def test_a_save_after_the_lock_file_was_replaced_by_text_that_is_no_pid_names_no_process(
    tmp_path: Path,
) -> None:
    """A replacement lock file whose content is not a pid: the save is refused, and the
    error names no process rather than a wrong one."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateLockedError, match="was replaced by another file") as raised,
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(range(4)):
            if item == 1:
                replacement = tmp_path / "other"
                replacement.write_text("not a pid\n")
                os.replace(replacement, lock_file_of(state))
                r.save()
    assert "written by process" not in str(raised.value)
    assert raised.value.pid is None
    assert inspect(state).position == 1


def test_a_save_whose_lock_file_cannot_be_checked_raises_state_write_error_and_keeps_the_file(
    tmp_path: Path,
) -> None:
    """The lock file turned into a symlink loop: checking it fails (ELOOP), so the save
    raises StateWriteError carrying the errno, and the state file stays as it was."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateWriteError, match="checking its lock file failed") as raised,
        Resumable(state, policy=NPolicy(1)) as r,
    ):
        for item in r.iterate(range(4)):
            if item == 1:
                before = digest(state)
                lock_file_of(state).unlink()
                lock_file_of(state).symlink_to(lock_file_of(state).name)
                r.save()
    assert raised.value.errno == errno.ELOOP
    assert digest(state) == before


def test_a_big_integer_inside_a_list_of_r_state_is_named_by_its_index(tmp_path: Path) -> None:
    """An int beyond 64 bits passes the state check but not the JSON encoder: the error
    names where it is, down to its index in the list, and no file is written."""
    state = tmp_path / "job.state"
    with (
        pytest.raises(StateNotSerializableError, match=r"r\.state\['rows'\]\[1\] cannot be"),
        Resumable(state) as r,
    ):
        r.state = {"rows": [1, 2**70]}
        r.save()
    assert not state.exists()


def with_checksum(document: dict[str, Any]) -> bytes:
    """`document` as a state file, with the checksum docs/state-file.md describes."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    checksum = f"crc32:{zlib.crc32(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)):08x}"
    return orjson.dumps({**body, "checksum": checksum})


def test_a_state_file_of_format_version_0_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    """Format versions start at 1: version 0, checksum and all, is refused by name."""
    state = tmp_path / "job.state"
    with Resumable(state) as r:
        for _ in r.iterate(range(3)):
            pass
    document = orjson.loads(state.read_bytes())
    state.write_bytes(with_checksum({**document, "format_version": 0}))
    before = digest(state)
    with pytest.raises(StateFileError, match="unknown format version 0"), Resumable(state):
        pass
    assert digest(state) == before


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (3, TypeError, "takes a str or PathLike, got int"),
        ("/", ValueError, "needs a file name, got '/'"),
    ],
)
def test_a_path_that_names_no_file_is_refused_before_anything_is_touched(
    tmp_path: Path, path: Any, error: type[Exception], message: str
) -> None:
    """Resumable(path) refuses what is not a path, and a path with no file name in it."""
    with pytest.raises(error, match=message):
        Resumable(path)
    assert list(tmp_path.iterdir()) == []


def test_a_save_after_the_lock_file_became_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """Reading the pid of a replaced lock file that is a FIFO must not wait for a writer
    (O_NONBLOCK): the save is refused at once. The run goes in a thread so that a hang
    fails this test instead of the suite."""
    state = tmp_path / "job.state"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with warnings.catch_warnings():
                # Off the main thread Resumable warns that it cannot catch signals: expected.
                warnings.simplefilter("ignore", ResumableWarning)
                with Resumable(state, policy=NPolicy(1)) as r:
                    for item in r.iterate(range(4)):
                        if item == 1:
                            lock_file_of(state).unlink()
                            os.mkfifo(lock_file_of(state))
                            r.save()
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # let the reader go: open the FIFO's other end
        os.close(os.open(lock_file_of(state), os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
        pytest.fail("the save waited for a writer of the FIFO that replaced the lock file")
    assert len(outcome) == 1
    assert isinstance(outcome[0], StateLockedError)
    assert "was replaced by another file" in str(outcome[0])


def test_the_lock_file_gets_the_usual_permission_bits_less_the_umask(tmp_path: Path) -> None:
    """The lock file is created 0o666 less the umask, as open() makes any file: readable
    by whoever may read the state file, so `resumable status` can name its holder."""
    state = tmp_path / "job.state"
    previous = os.umask(0o002)
    try:
        with Resumable(state):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(lock_file_of(state).stat().st_mode) == 0o664


def test_a_new_state_file_gets_the_usual_permission_bits_less_the_umask(tmp_path: Path) -> None:
    """The first save of a job creates its state file 0o666 less the umask, as open()
    makes any file (later saves keep whatever bits it has then)."""
    state = tmp_path / "job.state"
    previous = os.umask(0o002)
    try:
        with Resumable(state) as r:
            for _ in r.iterate(range(2)):
                pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o664


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_run_refused_for_a_lock_held_by_another_process_leaves_no_descriptor_open(
    tmp_path: Path,
) -> None:
    """StateLockedError closes the lock file it opened: a process that retries a held
    job must not gain a descriptor per try."""
    job = Job(tmp_path)
    with job.stepped("--every", "1") as holder:
        holder.expect("ready 0 1")
        holder.expect("start 0")
        before = open_descriptors()
        for _ in range(3):
            with pytest.raises(StateLockedError), Resumable(job.state):
                pass
        after = open_descriptors()
        holder.send("go")
        holder.expect("end 0")
    assert after == before


def test_files_named_like_the_job_s_temp_files_but_not_one_are_left_alone(tmp_path: Path) -> None:
    """A start removes only the temp files a save makes (.NAME.PID.TOKEN.tmp): other files
    that merely begin with the job's name and a dot stay."""
    state = tmp_path / "job.state"
    with Resumable(state) as r:
        for _ in r.iterate(range(3)):
            pass
    others = [".job.state.notes", ".job.state.4242.tmp", ".job.state.bak.copy"]
    for name in others:
        (tmp_path / name).write_bytes(b"the user's")
    with Resumable(state):
        pass
    assert sorted(name for name in others if (tmp_path / name).exists()) == sorted(others)


def test_status_of_a_job_whose_lock_file_is_a_fifo_answers_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """`resumable status` opens the lock file with O_NONBLOCK: a FIFO in its place (put
    there by mistake or malice) makes it answer, not wait forever for a writer."""
    state = tmp_path / "job.state"
    with Resumable(state) as r:
        for _ in r.iterate(range(3)):
            pass
    lock_file_of(state).unlink()
    os.mkfifo(lock_file_of(state))
    command = [sys.executable, "-m", "resumable", "status", str(state)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("resumable status waited for a writer of the FIFO in the lock file's place")
    assert str(state) in done.stdout, done.stderr


class BrokenRepr:
    """A key whose repr() raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def broken_key(item: str) -> Any:
    """A key function that breaks its contract: it returns neither str nor int."""
    return BrokenRepr()


def test_a_bad_key_whose_repr_raises_is_still_named_by_its_type(tmp_path: Path) -> None:
    """A key function returning neither str nor int raises UsageError naming the type,
    even when the key's own __repr__ raises."""
    with (
        pytest.raises(UsageError, match="BrokenRepr"),
        Resumable(tmp_path / "job.state") as r,
    ):
        for _ in r.iterate(["a", "b"], key=broken_key):
            pass


def test_a_key_journal_replaced_by_a_directory_is_refused_as_unreadable(tmp_path: Path) -> None:
    """The journal a state file counts on cannot be read (a directory in its place): the
    next run stops with StateFileError saying so, and the state file is left as it was."""
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1)) as r:
        for index, _ in enumerate(r.iterate(["a", "b", "c", "d"], key=str)):
            if index == 2:
                break
    (journal,) = tmp_path.glob("job.state.keys-*")
    journal.unlink()
    journal.mkdir()
    before = digest(state)
    with (
        pytest.raises(
            StateFileError, match=r"cannot be read: Is a directory \[EISDIR\]\. That says nothing"
        ),
        Resumable(state) as r,
    ):
        for _ in r.iterate(["a", "b", "c", "d"], key=str):
            pass
    assert digest(state) == before


def test_a_save_after_the_state_file_was_deleted_mid_run_writes_it_anew(tmp_path: Path) -> None:
    """The state file deleted while the run holds the lock: the next save has nothing to
    keep as the backup and writes the state file again."""
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1)) as r:
        for item in r.iterate(range(4)):
            if item == 2:
                state.unlink()
                backup = state.with_name("job.state.bak")
                backup.unlink(missing_ok=True)
    assert inspect(state).position == 4


@pytest.mark.parametrize(
    ("done", "shown"),
    [
        (-5, "got -5"),  # a small int is shown as itself
        ("x" * 58, "got '" + "x" * 58 + "'"),  # a repr of 60 characters is shown whole
        ("x" * 100, "got '" + "x" * 56 + "..."),  # a longer one is cut to 57 and '...'
    ],
)
def test_a_keyed_state_file_with_a_bad_done_count_is_refused_showing_the_value(
    tmp_path: Path, done: object, shown: str
) -> None:
    """A keyed state file whose checksum is right but whose count of done keys is not a
    whole number >= 0: StateFileError shows the value found, cut to 60 characters."""
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1)) as r:
        for index, _ in enumerate(r.iterate(["a", "b", "c"], key=str)):
            if index == 2:
                break
    document = orjson.loads(state.read_bytes())
    document["progress"]["done"] = done
    state.write_bytes(with_checksum(document))
    before = digest(state)
    with pytest.raises(StateFileError) as raised, Resumable(state) as r:
        for _ in r.iterate(["a", "b", "c"], key=str):
            pass
    assert f"done must be a whole number >= 0, {shown}" in str(raised.value)
    assert digest(state) == before


@pytest.mark.parametrize("number", ["4294967296", "99999999999"])
def test_a_journal_file_numbered_just_past_the_largest_generation_is_passed_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, number: str
) -> None:
    """2**32, ten digits like the largest generation, is passed over with a warning as a
    longer number is; the job runs and finishes as if the file were not there."""
    state = tmp_path / "job.state"
    stray = tmp_path / f"job.state.keys-{number}"
    stray.write_bytes(b"not a journal")
    with caplog.at_level("WARNING", logger="resumable"), Resumable(state) as r:
        for _ in r.iterate(["a", "b", "c"], key=str):
            pass
    assert f"ignoring {stray.name}: its number is above 4294967295" in caplog.text
    assert inspect(state).finished
    assert stray.read_bytes() == b"not a journal"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_inside_the_with_block_gets_back_the_handlers_from_before(
    tmp_path: Path,
) -> None:
    """The job stays its parent's: in a child made by os.fork() the signal handlers that
    were there before the with block are back, so ctrl+c and SIGTERM act as they did."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    read, write = os.pipe()
    with Resumable(tmp_path / "job.state"):
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]  # ours, inside
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork() while another thread runs (a test's leftover):
            # the child only reads two handlers and leaves by os._exit.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report, and leave without running pytest's exit
            back = all(signal.getsignal(signum) == handler for signum, handler in before.items())
            os.write(write, b"1" if back else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"1"


def test_a_keyed_job_resumed_as_saved_logs_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning that the state file's count of done keys disagrees with its journal is
    for damage only: a job resumed as it was saved logs no warning at all."""
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1)) as r:
        for index, _ in enumerate(r.iterate(["a", "b", "c", "d"], key=str)):
            if index == 2:
                break
    with caplog.at_level("WARNING", logger="resumable"), Resumable(state) as r:
        for _ in r.iterate(["a", "b", "c", "d"], key=str):
            pass
    assert [record.getMessage() for record in caplog.records] == []
    assert inspect(state).finished


# The arcs of the with block's entry and exit (`_resumable.py`) that coverage found no
# test for; docs/reliability.md lists them.


def test_a_second_exit_of_a_run_changes_nothing_not_even_a_later_run_of_the_job(
    tmp_path: Path,
) -> None:
    """Calling ``__exit__`` again (an exit stack unwound twice) saves nothing, not even a
    change made to ``r.state`` since, and frees nothing: the state file stays byte for
    byte, and the lock of the run opened since is still held."""
    state = tmp_path / "job.state"
    first = Resumable(state)
    first.__enter__()
    assert list(first.iterate(range(3))) == [0, 1, 2]
    first.__exit__(None, None, None)
    saved = state.read_bytes()
    first.state["late"] = True  # a change after the exit, which no exit saves
    with Resumable(state, policy=NPolicy(1)) as later:
        first.__exit__(None, None, None)
        assert state.read_bytes() == saved
        with pytest.raises(StateLockedError, match="already open in this process"):
            Resumable(state).__enter__()
        later.state["seen"] = True
    assert inspect(state).state == {"seen": True}


def test_a_second_async_exit_of_a_run_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "job.state"

    async def main() -> None:
        first = Resumable(state)
        await first.__aenter__()
        assert [item async for item in first.aiterate(range(3))] == [0, 1, 2]
        await first.__aexit__(None, None, None)
        saved = state.read_bytes()
        first.state["late"] = True  # a change after the exit, which no exit saves
        async with Resumable(state) as later:
            await first.__aexit__(None, None, None)
            assert state.read_bytes() == saved
            with pytest.raises(StateLockedError, match="already open in this process"):
                Resumable(state).__enter__()
            later.state["seen"] = True

    asyncio.run(main())
    assert inspect(state).state == {"seen": True}


def test_an_async_with_block_entered_twice_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        r = Resumable(tmp_path / "job.state")
        async with r:
            pass
        with pytest.raises(UsageError, match="runs once"):
            async with r:
                pass

    asyncio.run(main())


def test_asave_in_a_plain_with_block_says_to_use_save(tmp_path: Path) -> None:
    async def main() -> None:
        with (
            Resumable(tmp_path / "job.state") as r,
            pytest.raises(UsageError, match=r"async with Resumable\(path\) as r:`; use save"),
        ):
            await r.asave()

    asyncio.run(main())


def test_an_async_with_block_refused_at_its_entry_leaves_the_handlers_and_the_lock_free(
    tmp_path: Path,
) -> None:
    """A damaged state file refused by ``__aenter__``: the handlers of before are back,
    and the lock is free for the next run once the file is dealt with."""
    state = tmp_path / "job.state"
    state.write_bytes(b"not a state file")

    async def main() -> None:
        before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        with pytest.raises(StateFileError):
            async with Resumable(state):
                pass
        after = {signum: signal.getsignal(signum) for signum in before}
        assert after == before

    asyncio.run(main())
    assert state.read_bytes() == b"not a state file"
    state.unlink()
    with Resumable(state) as r:
        assert list(r.iterate(range(2))) == [0, 1]


def test_an_async_with_block_away_from_the_main_thread_warns_and_still_works(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job.state"
    outcome: dict[str, object] = {}

    async def main() -> None:
        async with Resumable(state) as r:
            outcome["items"] = [item async for item in r.aiterate(range(3))]
            outcome["handler"] = signal.getsignal(signal.SIGINT)

    def job() -> None:
        with pytest.warns(ResumableWarning, match="not on the main thread"):
            asyncio.run(main())

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert outcome == {"items": [0, 1, 2], "handler": before}
    assert inspect(state).finished


def test_a_keyed_batch_loop_whose_key_function_returns_no_str_or_int_is_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "job.state"
    with Resumable(state) as r, pytest.raises(UsageError, match=r"returned a float: 1\.5"):
        for _ in r.iterate([1.5, 2.5], key=cast(Any, float), batch=2):
            pass
    assert inspect(state).position == 0


def test_an_error_in_an_item_after_a_save_at_its_boundary_makes_no_exit_save(
    tmp_path: Path,
) -> None:
    """The exit saves only what changed: with an item in flight, a sink counts up to the
    last boundary (which the last save recorded), not the item's own output so far."""
    state = tmp_path / "job.state"

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), Resumable(state, policy=NPolicy(1)) as r:
        out = r.sink(tmp_path / "out.txt")
        for item in r.iterate(range(5)):
            out.write(f"{item}\n")
            if item == 2:
                saves, written = r.saves, digest(state)
                raise BoomError
    assert r.saves == saves  # no exit save: it would write what the file holds
    assert digest(state) == written
    assert inspect(state).sinks == {str(tmp_path / "out.txt"): len("0\n1\n")}


def test_a_run_that_caught_the_refusal_of_a_lost_lock_leaves_without_another_save(
    tmp_path: Path,
) -> None:
    """After a save found the lock file deleted (StateLockedError, caught in the body),
    the exit makes no save of its own: it would be refused the same way, and its error
    would replace the run's ending."""
    state = tmp_path / "job.state"
    with Resumable(state, policy=NPolicy(1_000)) as r:
        for item in r.iterate(range(5)):
            if item == 2:
                r.save()
                lock_file_of(state).unlink()
                with pytest.raises(StateLockedError, match="was deleted"):
                    r.save()
                r.state["changed"] = "after the refusal"  # the exit would have to save it
                written = digest(state)
                break  # the loop's end would save (and be refused) too
    assert digest(state) == written
    assert inspect(state).position == 2
