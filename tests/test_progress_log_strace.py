"""Fault injection with strace into the progress log: kill -9 at each system call of an
append and of a compaction, ENOSPC and EIO on the append and on its fdatasync, for each
kind of record: positional progress, keys, failure entries (the job's first failure, one
record too), output lengths (kill -9 only: the sink's own faults are in
test_sinks_faults_strace.py).

tests/jobs/save_job.py with ``--log`` runs four items with NPolicy(1) and saves four
times: position 1 compacts (the run's first save), 2 and 3 are records appended to
``job.state.log`` (the first opens and empties the log and flushes the directory), and 4
(the end of the input) compacts, cutting the log, which the close then deletes::

    save 1: write(temp) fsync(temp) rename(temp, job.state) fsync(directory)
    save 2: openat(log) ftruncate(log, 0) fsync(directory) write(log) fdatasync(log)
    save 3: write(log) fdatasync(log)
    save 4: write(temp) fsync(temp) unlink(backup) link(job.state, backup)
            rename(temp, job.state) fsync(directory) ftruncate(log, 0)
    close:  unlink(log)

See tests/test_faults_strace.py for how strace counts and injects.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

import resumable

from jobs.documents import saved_keys
from jobs.harness import Job, Traced, child_env, run_script

pytestmark = pytest.mark.strace  # skipped without strace, failed under CI=true

ITEMS = 4
Call = tuple[str, int, int]  # a call's name, its number among those of the name, saves done
CALLS = (
    "write,fsync,fdatasync,ftruncate,openat,?link,linkat,?rename,renameat,renameat2,"
    "?unlink,unlinkat"
)
_CALL = re.compile(r"^\d+\s+(\w+)\(")


def log_of(job: Job) -> Path:
    return job.state.with_name(job.state.name + ".log")


def run_traced(job: Job, options: list[str]) -> Traced:
    """Run save_job.py --log on `job` under strace with `options`."""
    return run_script(
        "save_job.py",
        [str(job.state), "--items", str(ITEMS), "--log"],
        log=job.directory / "strace.log",
        strace_options=options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def the_job_finishes(job: Job) -> None:
    """A run without faults resumes and finishes the job; nothing is left but its files."""
    again = run_script(
        "save_job.py", [str(job.state), "--items", str(ITEMS), "--log"], log=job.directory / "x"
    )
    assert again.returncode == 0, again.describe("the run after the fault failed")
    assert again.stdout[-1].startswith("done 4 True"), again.describe("it did not finish")
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (ITEMS, True, False)
    assert not log_of(job).exists()
    assert job.temp_files() == []


# -- kill -9 at each call ------------------------------------------------------------------


def calls_of_the_job(clean: Traced, job: Job) -> list[tuple[str, int, int]]:
    """Each call of the clean run on the job's files but its lock file, as (name, its
    number among the log's calls of that name, saves completed before it). A save is
    complete when the fdatasync of its record returned, or the fsync of the directory
    after the rename of its state file."""
    seen: dict[str, int] = {}
    completed, renamed = 0, False
    calls = []
    directory = str(job.directory)
    for line in clean.log:
        match = _CALL.match(line)
        if match is None:
            continue
        name = match[1]
        seen[name] = seen.get(name, 0) + 1
        if directory in line and ".lock" not in line and "strace.log" not in line:
            calls.append((name, seen[name], completed))
        if name.startswith("rename") and f'"{job.state}"' in line:
            renamed = True
        elif name == "fsync" and line.rstrip().endswith(f"<{directory}>) = 0") and renamed:
            completed, renamed = completed + 1, False
        elif name == "fdatasync":
            completed += 1
    return calls


def kill_at_each_call(tmp_path: Path, chosen: list[tuple[str, int, int]]) -> None:
    """kill -9 on entering each call of `chosen`, one run each: the state file and its
    log hold the last completed save or the one in progress, never damage nor the backup;
    a run without faults then finishes the job."""
    for index, (name, nth, completed) in enumerate(chosen):
        job = Job(tmp_path / f"kill-{index}")
        job.directory.mkdir()
        options = ["-e", f"trace={CALLS}", "-e", f"inject={name}:signal=SIGKILL:when={nth}"]
        traced = run_traced(job, options)
        context = f"kill at {name} #{nth} after {completed} saves"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        killed = traced.killed_call()
        assert str(job.directory) in killed, traced.describe(f"{context}: hit {killed!r}")
        try:
            snapshot = resumable.inspect(job.state)
        except FileNotFoundError:
            assert completed == 0, traced.describe(f"{context}: no state file")
            the_job_finishes(job)
            continue
        assert not snapshot.from_backup, traced.describe(f"{context}: from the backup")
        assert snapshot.position in (completed, completed + 1), traced.describe(
            f"{context}: position {snapshot.position}"
        )
        the_job_finishes(job)


@pytest.fixture
def clean_calls(tmp_path: Path) -> list[tuple[str, int, int]]:
    job = Job(tmp_path / "clean")
    job.directory.mkdir()
    clean = run_traced(job, ["-e", f"trace={CALLS}"])
    assert clean.returncode == 0, clean.describe("the run without faults failed")
    calls = calls_of_the_job(clean, job)
    assert sum(name == "fdatasync" for name, _, _ in calls) == 2, clean.describe("2 appends")
    return calls


def test_kill9_at_every_call_of_an_append_keeps_the_last_save_or_the_one_in_progress(
    tmp_path: Path, clean_calls: list[tuple[str, int, int]]
) -> None:
    """The calls of saves 2 and 3 (the log opened and emptied, two records appended and
    flushed), and of the log in the compaction that follows (cut, then deleted)."""
    first = next(i for i, (name, _, _) in enumerate(clean_calls) if name == "ftruncate") - 1
    appends = clean_calls[first:]
    last_append = max(i for i, (name, _, _) in enumerate(appends) if name == "fdatasync")
    chosen = appends[: last_append + 1] + [c for c in appends if c[0] in ("ftruncate", "unlink")]
    chosen = list(dict.fromkeys(chosen))
    assert len(chosen) >= 8, chosen
    kill_at_each_call(tmp_path, chosen)


@pytest.mark.slow
def test_kill9_at_every_call_of_every_save_keeps_the_last_save_or_the_one_in_progress(
    tmp_path: Path, clean_calls: list[tuple[str, int, int]]
) -> None:
    """Every call on the job's files of the whole run: two compactions, two appends, the
    close."""
    kill_at_each_call(tmp_path, clean_calls)


# -- keyed progress: the keys ride the log ----------------------------------------------------
#
# tests/jobs/keyed_save_job.py --log runs four items by key (k0 to k3), saving after each:
# save 1 compacts (the key journal gets k0, then the state file is rewritten), saves 2 to 4
# are records of the log that carry k1, k2 and k3 (no call on the key journal), and the
# save at the end of the input compacts: the journal gets k1, k2 and k3, then the state
# file.


def run_keyed(job: Job, options: list[str]) -> Traced:
    """Run keyed_save_job.py --log on `job`, under strace with `options` if any."""
    return run_script(
        "keyed_save_job.py",
        [str(job.state), "--items", str(ITEMS), "--log"],
        log=job.directory / ("strace.log" if options else "again.log"),
        strace_options=options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def bodies(traced: Traced) -> set[int]:
    """The items whose body ran in the run `traced`."""
    return {int(line.split()[1]) for line in traced.stdout if line.startswith("did ")}


def keyed_kill_at_each_call(tmp_path: Path, chosen: list[tuple[str, int, int]]) -> None:
    """kill -9 on entering each call of `chosen`, one run each: every key a completed save
    recorded is done (in the key journal up to its committed length, or in a record of
    the log), and at most the key of the save in progress more; the next run redoes at
    most one item (NPolicy(1)) and finishes the job with every key in the journal."""
    for index, (name, nth, completed) in enumerate(chosen):
        job = Job(tmp_path / f"kill-{index}")
        job.directory.mkdir()
        options = ["-e", f"trace={CALLS}", "-e", f"inject={name}:signal=SIGKILL:when={nth}"]
        traced = run_keyed(job, options)
        context = f"kill at {name} #{nth} after {completed} saves"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        killed = traced.killed_call()
        assert str(job.directory) in killed, traced.describe(f"{context}: hit {killed!r}")
        saved = saved_keys(job.state) if job.state.exists() else set()
        # Save n records k0 to k(n - 1); the save at the end of the input adds none.
        recorded = {f"k{item}" for item in range(min(completed, ITEMS))}
        assert recorded <= saved, traced.describe(f"{context}: lost {recorded - saved}")
        assert len(saved) <= completed + 1, traced.describe(f"{context}: saved {saved}")
        if job.state.exists():
            snapshot = resumable.inspect(job.state)
            assert not snapshot.from_backup, traced.describe(f"{context}: from the backup")
            assert snapshot.position == len(saved), traced.describe(f"{context}: counted")
        again = run_keyed(job, [])
        assert again.stdout[-1].startswith(f"done {ITEMS} True"), again.describe(
            f"{context}: the next run did not finish"
        )
        redone = bodies(traced) & bodies(again)
        assert len(redone) <= 1, again.describe(f"{context}: redone {redone}")
        assert saved_keys(job.state) == {f"k{item}" for item in range(ITEMS)}
        assert not log_of(job).exists()


@pytest.fixture
def keyed_clean_calls(tmp_path: Path) -> list[tuple[str, int, int]]:
    job = Job(tmp_path / "clean")
    job.directory.mkdir()
    clean = run_keyed(job, ["-e", f"trace={CALLS}"])
    assert clean.returncode == 0, clean.describe("the run without faults failed")
    calls = calls_of_the_job(clean, job)
    flushes = [name for name, _, _ in calls if name in ("fsync", "fdatasync")]
    # Save 1: the new journal, its directory, the temp file, the directory; save 2 opens the
    # log (its directory flushed); saves 2 to 4 one fdatasync each, nothing on the key
    # journal; the end: the journal, the temp file, the directory.
    assert flushes == ["fsync"] * 5 + ["fdatasync"] * 3 + ["fsync"] * 3, clean.describe(
        f"flushes: {flushes}"
    )
    return calls


def test_kill9_at_every_call_of_a_keyed_append_loses_no_recorded_key(
    tmp_path: Path, keyed_clean_calls: list[tuple[str, int, int]]
) -> None:
    """The calls of saves 2 and 3 (the log opened and emptied, two records with their
    keys appended and flushed; save 4 makes the same calls as save 3), and the key
    journal's write and flush in the compaction at the end, which writes the logged keys
    into the journal. The full sweep (torture) kills at every call of the run."""
    first = next(i for i, (name, _, _) in enumerate(keyed_clean_calls) if name == "ftruncate")
    calls = keyed_clean_calls[first - 1 :]
    flushes = [i for i, (name, _, _) in enumerate(calls) if name == "fdatasync"]
    journal = max(flushes) + 1  # the journal's write, then its fsync
    chosen = calls[: flushes[1] + 1] + calls[journal : journal + 2]
    assert [name for name, _, _ in chosen[-2:]] == ["write", "fsync"], chosen
    keyed_kill_at_each_call(tmp_path, chosen)


@pytest.mark.slow
def test_kill9_at_every_call_of_every_keyed_save_loses_no_recorded_key(
    tmp_path: Path, keyed_clean_calls: list[tuple[str, int, int]]
) -> None:
    """Every call on the job's files of the whole keyed run: two compactions (with their
    key journal), three appends, the close."""
    keyed_kill_at_each_call(tmp_path, keyed_clean_calls)


# -- failure entries: the job's first failure rides the log -----------------------------------
#
# With --record --fail-at 2 both jobs record item 2's failure (on_error="record") instead
# of finishing it. save_job.py: save 3, the first failure, is one record (write and
# fdatasync of the log, as save 2's record), and the save at the end of the input starts
# the failure journal (job.state.failed-0: created, written, flushed, its directory
# flushed) before it writes the state file. keyed_save_job.py: save 3 is the same record,
# between the records of k1 and k3. A later run retries item 2 first (by position) or
# where the input has it (by key).

FAILING = ["--record", "--fail-at", "2"]
JOBS = {"position": "save_job.py", "key": "keyed_save_job.py"}


def run_failing(job: Job, keyed: bool, options: list[str], args: list[str] = FAILING) -> Traced:
    """Run save_job.py (keyed_save_job.py if `keyed`) --log with `args` on `job`, under
    strace with `options` if any."""
    return run_script(
        JOBS["key" if keyed else "position"],
        [str(job.state), "--items", str(ITEMS), "--log", *args],
        log=job.directory / ("strace.log" if options else "again.log"),
        strace_options=options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def recorded(job: Job, keyed: bool) -> list[str]:
    """What the job's files hold of the run's events, in their order: the items done
    (k0, k1, k3 by key; 0, 1, 3 by position) and ``failed 2``."""
    snapshot = resumable.inspect(job.state)
    assert not snapshot.from_backup
    failed = [f"failed {item.where}" for item in snapshot.failed]
    assert failed in ([], ["failed k2" if keyed else "failed 2"]), failed
    if keyed:
        done = sorted(saved_keys(job.state), key=str)
        return [key for key in done if key in ("k0", "k1")] + failed + (["k3"] * ("k3" in done))
    assert bool(failed) == (snapshot.position >= 3), (snapshot.position, failed)
    return (
        [str(item) for item in range(min(snapshot.position, 2))]
        + failed
        + (["3"] * (snapshot.position == ITEMS))
    )


def events(keyed: bool) -> list[str]:
    """What each save of the run records, in turn."""
    return ["k0", "k1", "failed k2", "k3"] if keyed else ["0", "1", "failed 2", "3"]


def the_failed_item_is_retried(job: Job, keyed: bool, context: str) -> None:
    """A run without the fault retries item 2 (it succeeds now) and finishes the job:
    no failure left, no log, no temp file."""
    again = run_failing(job, keyed, [], ["--record"])
    assert again.returncode == 0, again.describe(f"{context}: the run after it failed")
    assert "did 2" in again.stdout, again.describe(f"{context}: item 2 did not run")
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.failed) == (ITEMS, True, ()), (
        again.describe(f"{context}: {snapshot}")
    )
    assert not log_of(job).exists()
    assert job.temp_files() == []


@pytest.fixture(params=[False, True], ids=["by position", "by key"])
def failing_calls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[bool, list[Call]]:
    """Whether the job is keyed, and the calls on its files of a clean run."""
    keyed: bool = request.param
    job = Job(tmp_path / "clean")
    job.directory.mkdir()
    clean = run_failing(job, keyed, ["-e", f"trace={CALLS}"])
    assert clean.returncode == 0, clean.describe("the run without faults failed")
    assert recorded(job, keyed) == events(keyed), clean.describe("not every event recorded")
    return keyed, calls_of_the_job(clean, job)


def test_the_job_s_first_failure_is_one_record_and_one_fdatasync(
    tmp_path: Path, failing_calls: tuple[bool, list[Call]]
) -> None:
    """Save 3 (item 2 failed) writes one record to the log and flushes it with one
    fdatasync, as save 2: no journal is touched. The failure journal is created by the
    compaction at the end, after every record."""
    job = Job(tmp_path / "clean")
    log, journal = log_of(job), job.directory / "job.state.failed-0"
    on_files = [
        (match[1], line)
        for line in (job.directory / "strace.log").read_text().splitlines()
        if (match := _CALL.match(line)) and str(job.directory) in line and ".lock" not in line
    ]
    syncs = [index for index, (name, _) in enumerate(on_files) if name == "fdatasync"]
    save_3 = on_files[syncs[0] + 1 : syncs[1] + 1]
    assert [(name, f"<{log}>" in line) for name, line in save_3] == [
        ("write", True),
        ("fdatasync", True),
    ], save_3
    created = next(index for index, (_, line) in enumerate(on_files) if f'"{journal}"' in line)
    assert created > syncs[-1], on_files[created]


def failing_kill_at_each_call(tmp_path: Path, keyed: bool, chosen: list[Call]) -> None:
    """kill -9 on entering each call of `chosen`, one run each: the job's files hold the
    events of the saves completed and at most that of the save in progress, in order (the
    failure recorded or not, never a damaged file nor the backup); a run without the
    fault retries item 2 and finishes the job."""
    for index, (name, nth, completed) in enumerate(chosen):
        job = Job(tmp_path / f"kill-{index}")
        job.directory.mkdir()
        options = ["-e", f"trace={CALLS}", "-e", f"inject={name}:signal=SIGKILL:when={nth}"]
        traced = run_failing(job, keyed, options)
        context = f"kill at {name} #{nth} after {completed} saves"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        killed = traced.killed_call()
        assert str(job.directory) in killed, traced.describe(f"{context}: hit {killed!r}")
        if job.state.exists():
            held = recorded(job, keyed)
            saved = events(keyed)[: min(completed, ITEMS)]
            assert held[: len(saved)] == saved, traced.describe(f"{context}: holds {held}")
            assert held == events(keyed)[: len(held)], traced.describe(f"{context}: {held}")
            assert len(held) <= completed + 1, traced.describe(f"{context}: holds {held}")
        else:
            assert completed == 0, traced.describe(f"{context}: no state file")
        the_failed_item_is_retried(job, keyed, context)


def test_kill9_at_every_call_of_the_first_failure_s_save_records_it_or_not(
    tmp_path: Path, failing_calls: tuple[bool, list[Call]]
) -> None:
    """The calls of save 3, the record that carries the first failure: its write (the
    failure not saved) and its fdatasync (saved: the record is in the page cache). The
    full sweep (torture) kills at every call of the run, those of the rewrite that starts
    the failure journal among them."""
    keyed, calls = failing_calls
    syncs = [index for index, (name, _, _) in enumerate(calls) if name == "fdatasync"]
    chosen = calls[syncs[0] + 1 : syncs[1] + 1]
    assert [name for name, _, _ in chosen] == ["write", "fdatasync"], chosen
    failing_kill_at_each_call(tmp_path, keyed, chosen)


@pytest.mark.slow
def test_kill9_at_every_call_of_a_run_with_a_failure_records_it_or_not(
    tmp_path: Path, failing_calls: tuple[bool, list[Call]]
) -> None:
    """Every call on the job's files of the whole run: the compactions (the last starts
    the failure journal), the records (one carries the failure), the close."""
    keyed, calls = failing_calls
    failing_kill_at_each_call(tmp_path, keyed, calls)


# -- ENOSPC and EIO on the append and its fdatasync, for every kind of record ----------------
#
# Every call of `call` on the log fails from the first record that carries `kind`: a
# positional save (save_job.py, save 2), keys (keyed_save_job.py, save 2 carries k1), the
# job's first failure (save_job.py --record --fail-at 2, save 3; save 2's record is
# written before the faults start).

FAULTS = {
    # kind: (the script's options, the first faulty record, the position it saves)
    "position": ([], 1, 2),
    "keys": ([], 1, 2),
    "failure": (FAILING, 2, 3),
}
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "call", "errno_name"),
    [
        ("position", "write", "ENOSPC"),
        ("position", "fdatasync", "EIO"),
        ("keys", "write", "ENOSPC"),
        ("keys", "fdatasync", "ENOSPC"),
        ("failure", "write", "ENOSPC"),
        ("failure", "fdatasync", "EIO"),
        pytest.param("position", "write", "EIO", marks=SLOW),
        pytest.param("position", "fdatasync", "ENOSPC", marks=SLOW),
        pytest.param("keys", "write", "EIO", marks=SLOW),
        pytest.param("keys", "fdatasync", "EIO", marks=SLOW),
        pytest.param("failure", "write", "EIO", marks=SLOW),
        pytest.param("failure", "fdatasync", "ENOSPC", marks=SLOW),
    ],
)
def test_a_failed_append_raises_state_write_error_and_the_exit_compacts(
    tmp_path: Path, kind: str, call: str, errno_name: str
) -> None:
    """The append of the first record of `kind` fails: the save raises StateWriteError
    naming the log and the errno; the failed record is cut off (a flush that failed is
    never retried); the exit's compaction saves what that save held, the failure too, in
    the state file and its journals; a run without faults then finishes the job."""
    args, faulty, position = FAULTS[kind]
    keyed = kind == "keys"
    job = Job(tmp_path)
    log = log_of(job)
    options = ["-e", f"trace={CALLS}", "-e", f"inject={call}:error={errno_name}:when={faulty}+"]
    traced = run_failing(job, keyed, [*options, "-P", str(log)], args)
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    assert traced.stdout[0] == "ready 0 1", traced.describe("unexpected output")
    kind_of_line, _, payload = traced.stdout[-1].partition(" ")
    assert kind_of_line == "error", traced.describe("the job saw no StateWriteError")
    report = json.loads(payload)
    assert report["errno"] == errno_name, report
    assert str(log) in report["message"], report
    assert report["saves"] == position, report  # the saves before it, and the exit's
    on_log = [line for line in traced.log if f"<{log}>" in line or f'"{log}"' in line]
    names = [m[1] for line in on_log if (m := _CALL.match(line))]
    # Open, empty, the records (each flushed), the failed one cut back to the log's length
    # before it, the compaction's cut to 0 bytes, then deleted by the close.
    records = ["write", "fdatasync"] * faulty
    if call == "write":
        records.pop()
    expected = ["openat", "ftruncate", *records, "ftruncate", "ftruncate", "unlink"]
    assert names == expected, traced.describe(f"calls on the log: {names}")
    assert not log.exists()
    if kind == "keys":
        assert saved_keys(job.state) == {"k0", "k1"}
        again = run_failing(job, keyed, [], [])
        assert again.stdout[-1].startswith(f"done {ITEMS} True"), again.describe("not done")
        assert bodies(again) == {2, 3}
        return
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (position, False, False)
    if kind == "failure":
        assert [item.where for item in snapshot.failed] == [2]
        assert (job.directory / "job.state.failed-0").exists()
        the_failed_item_is_retried(job, keyed, f"{call} {errno_name}")
    else:
        the_job_finishes(job)


def test_a_log_that_cannot_be_emptied_at_its_open_is_closed_and_the_exit_compacts(
    tmp_path: Path,
) -> None:
    """EIO on the `ftruncate` that empties the log as the first append opens it: the save
    raises StateWriteError naming the log, the descriptor is closed at once (not left
    open till the process ends), the exit compacts and deletes the log, and a run without
    faults finishes the job."""
    job = Job(tmp_path)
    log = log_of(job)
    options = [
        *("-e", "trace=openat,ftruncate,close,unlink,unlinkat"),
        *("-e", "inject=ftruncate:error=EIO:when=1", "-P", str(log)),
    ]
    traced = run_failing(job, False, options, [])
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    kind_of_line, _, payload = traced.stdout[-1].partition(" ")
    assert kind_of_line == "error", traced.describe("the job saw no StateWriteError")
    report = json.loads(payload)
    assert (report["errno"], report["saves"]) == ("EIO", 2), report
    assert str(log) in report["message"], report
    on_log = [line for line in traced.log if f"<{log}>" in line or f'"{log}"' in line]
    names = [m[1] for line in on_log if (m := _CALL.match(line))]
    assert names == ["openat", "ftruncate", "close", "unlink"], traced.describe(str(names))
    assert "= -1 EIO" in on_log[1], traced.describe("the emptying did not fail")
    assert resumable.inspect(job.state).position == 2
    the_job_finishes(job)


# -- output lengths: a record carrying a sink's length ---------------------------------------
#
# tests/jobs/sink_fault_job.py writes "<i>\n" to its sink per item with NPolicy(1): save 1
# records the new sink at 0 bytes (a rewrite), the saves of positions 1 to 3 each write the
# sink's line and fsync it, then append a record with its length (the first opens the
# log), and the saves at the end rewrite the state file. The sink's bytes reach the disk
# before the record that counts them.

SINK_OUTPUT = "".join(f"{item}\n" for item in range(ITEMS))


def run_sink_job(job: Job, options: list[str]) -> Traced:
    """Run sink_fault_job.py on `job` (its sink out.txt beside the state file)."""
    return run_script(
        "sink_fault_job.py",
        [str(job.state), str(job.directory / "out.txt"), "--items", str(ITEMS)],
        log=job.directory / ("strace.log" if options else "again.log"),
        strace_options=options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture
def sink_calls(tmp_path: Path) -> list[Call]:
    job = Job(tmp_path / "clean")
    job.directory.mkdir()
    clean = run_sink_job(job, ["-e", f"trace={CALLS}"])
    assert clean.stdout[-1] == f"done {ITEMS} True", clean.describe("the clean run failed")
    return calls_of_the_job(clean, job)


def sink_kill_at_each_call(tmp_path: Path, chosen: list[Call]) -> None:
    """kill -9 on entering each call of `chosen`, one run each: the job's files hold the
    last save that returned or the one in progress, and the sink its output up to the
    length recorded (and perhaps more, which the next run cuts off); that run finishes
    with the output of one uninterrupted run."""
    for index, (name, nth, completed) in enumerate(chosen):
        job = Job(tmp_path / f"kill-{index}")
        job.directory.mkdir()
        out = job.directory / "out.txt"
        options = ["-e", f"trace={CALLS}", "-e", f"inject={name}:signal=SIGKILL:when={nth}"]
        traced = run_sink_job(job, options)
        context = f"kill at {name} #{nth} after {completed} saves"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        assert str(job.directory) in traced.killed_call(), traced.describe(context)
        if job.state.exists():
            snapshot = resumable.inspect(job.state)
            assert not snapshot.from_backup, traced.describe(f"{context}: from the backup")
            # Save 1 records the sink at position 0, save k > 1 position k - 1, and the
            # exit's save after the completion's the same position (the output after the
            # loop: none).
            saved = min(max(completed - 1, 0), ITEMS)
            assert snapshot.position in (saved, saved + 1), traced.describe(
                f"{context}: {snapshot}"
            )
            length = snapshot.sinks.get(str(out), 0)
            assert length == 2 * snapshot.position, traced.describe(f"{context}: {snapshot}")
            written = out.read_text() if out.exists() else ""
            assert written[:length] == SINK_OUTPUT[:length], traced.describe(
                f"{context}: {written!r}"
            )
        again = run_sink_job(job, [])
        assert again.stdout[-1] == f"done {ITEMS} True", again.describe(f"{context}: not done")
        assert out.read_text() == SINK_OUTPUT, again.describe(f"{context}: the output")
        assert not log_of(job).exists()


def test_kill9_at_every_call_of_a_record_of_output_lengths_keeps_output_and_state_in_step(
    tmp_path: Path, sink_calls: list[Call]
) -> None:
    """The calls of the record of the save of position 2 (its write: the sink's line is on
    the disk, its length not yet recorded; its fdatasync), after the sink's write and
    fsync. The full sweep (torture) kills at every call of the run."""
    syncs = [index for index, (name, _, _) in enumerate(sink_calls) if name == "fdatasync"]
    chosen = [call for call in sink_calls[syncs[0] + 1 : syncs[1] + 1] if call[0] != "openat"]
    assert [name for name, _, _ in chosen] == ["write", "fsync", "write", "fdatasync"], chosen
    sink_kill_at_each_call(tmp_path, chosen[2:])


@pytest.mark.slow
def test_kill9_at_every_call_of_a_job_with_a_sink_keeps_output_and_state_in_step(
    tmp_path: Path, sink_calls: list[Call]
) -> None:
    sink_kill_at_each_call(tmp_path, sink_calls)
