"""Fault injection with strace into the branches of a save that no other test reaches.

The style of tests/test_faults_strace.py (read its docstring for how strace injects and
counts): a real child process under real strace, one system call made to fail or to bring
a signal, and then what the user sees: the error and its message, the state file intact
or the new one in place, nothing lost, and the next run resuming where the state file
says. The branches:

- the directory's open for the flush after a save's rename fails;
- a file system without hard links: the backup's ``link`` fails and the copy replaces it;
- `reset` (and ``resumable reset``) when a rename aside fails, before or after the
  backup moved;
- the key journal's open, ``fstat``, ``ftruncate`` and the ``unlink`` of a generation no
  state file names failing;
- a new key journal's open (``O_CREAT``) or ``fchmod`` failing;
- a fold of the key journal failing part-way (a write, the fsync, the directory's flush);
- a program's own signal handler raising (not an ``OSError``) in a journal append or a fold;
- a ctrl+c (SIGINT) arriving in the key journal's write or fsync of a save.

The keyed job is tests/jobs/keyed_save_job.py: item i has the key ``k<i>`` and every item
is one save (a record appended to ``job.state.keys-0``, then the state file).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import resumable

from jobs.harness import RESUMABLE_COMMAND, STRACE, TIMEOUT, Job, Traced, child_env, run_script

pytestmark = pytest.mark.strace  # skipped without strace, failed under CI=true

ITEMS = 4
LINK = "?link,linkat"
RENAME = "?rename,renameat,renameat2"
UNLINK = "?unlink,unlinkat"
FSTAT = "?fstat,newfstatat"


def digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backup_of(job: Job) -> Path:
    """The backup file of the job's state file."""
    return job.state.with_name(job.state.name + ".bak")


def key_journal(job: Job) -> Path:
    """The job's key journal of generation 0, the one a new keyed job writes."""
    return job.state.with_name(job.state.name + ".keys-0")


def strace_options(call: str, inject: str, *only: Path) -> list[str]:
    """Trace `call`, inject `inject` into it, and count only calls on the paths `only`."""
    options = ["-e", f"trace={call}", "-e", f"inject={call}:{inject}"]
    for path in only:
        options += ["-P", str(path)]
    return options


def run_job(script: str, job: Job, args: Sequence[str], options: Sequence[str] = ()) -> Traced:
    """Run a job script on `job`, under strace with `options` when there are any."""
    # No .pyc writes: they would add calls to the counts.
    return run_script(
        script,
        [str(job.state), *args],
        log=job.directory / "strace.log",
        strace_options=options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def error_report(traced: Traced) -> dict[str, object]:
    """The ``error <json>`` report that ends the job's output."""
    kind, _, payload = traced.stdout[-1].partition(" ")
    assert kind == "error", traced.describe("the job reported no error")
    report = json.loads(payload)
    assert isinstance(report, dict)
    return report


def injected(traced: Traced, pattern: str) -> str:
    """The log line of the first injected fault; it must match `pattern`."""
    lines = [line for line in traced.log if line.endswith("(INJECTED)")]
    assert lines, traced.describe("no fault was injected")
    assert re.search(pattern, lines[0]), traced.describe(f"the fault hit {lines[0]!r}")
    return lines[0]


def position(job: Job) -> tuple[int, bool, bool]:
    """(position, finished, from_backup) of the job's state file."""
    snapshot = resumable.inspect(job.state)
    return snapshot.position, snapshot.finished, snapshot.from_backup


# -- the positional job: the directory flush and the backup without hard links ----------


def test_the_directory_open_for_the_flush_failing_says_the_new_state_is_in_place(
    tmp_path: Path,
) -> None:
    """EACCES on the open of the directory, for its flush after the second save's rename:
    StateWriteError says the new state is in place (not that the previous one is intact),
    the state file holds the second save, and the next run resumes there and finishes."""
    job = Job(tmp_path)
    # The directory's opens: the scan for stale temp files at the start, then one flush
    # per save; the third is the second save's.
    options = strace_options("openat", "error=EACCES:when=3", job.directory)
    traced = run_job("save_job.py", job, ["--items", str(ITEMS), "--digest"], options)
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    failed = injected(traced, r"openat\(.*O_DIRECTORY\) = -1 EACCES")
    assert "O_NONBLOCK" not in failed, traced.describe("the fault hit the scan, not the flush")
    before = traced.stdout[1].removeprefix("digest ")
    report = error_report(traced)
    message = str(report["message"])
    assert report["errno"] == "EACCES", message
    assert f"saved progress to {job.state}, but flushing its directory failed" in message
    assert "Permission denied [EACCES]" in message, message
    assert "The new state is in place" in message, message
    assert "intact" not in message, message
    assert digest(job.state) != before, "the second save's rename did not run"
    assert position(job) == (2, False, False)
    assert job.temp_files() == []

    finished = run_job("save_job.py", job, ["--items", str(ITEMS)])
    assert finished.stdout == ["ready 2 2", f"done {ITEMS} True {ITEMS - 2}"], finished.describe("")
    assert position(job) == (ITEMS, True, False)


@pytest.mark.parametrize("errno_name", ["EPERM", "EXDEV", "EOPNOTSUPP"])
def test_without_hard_links_the_backup_is_a_copy_of_the_previous_save(
    tmp_path: Path, errno_name: str
) -> None:
    """Every ``link`` fails as on a file system without hard links (FAT, some network
    shares; EOPNOTSUPP is ENOTSUP on Linux): each save copies the state file into the
    backup's temp file and renames it, so the job finishes with a backup of the save
    before the last, a file of its own, and no temp file left."""
    job = Job(tmp_path)
    options = ["-e", f"trace={LINK},write", "-e", f"inject={LINK}:error={errno_name}:when=1+"]
    traced = run_job("save_job.py", job, ["--items", str(ITEMS)], options)
    assert traced.returncode == 0, traced.describe("the job failed")
    assert traced.stdout == ["ready 0 1", f"done {ITEMS} True {ITEMS}"], traced.describe("")
    links = traced.matching(re.compile(r"^\d+\s+link(?:at)?\("))
    # A new job's first save keeps no backup; each of the other three links one.
    assert len(links) == ITEMS - 1, traced.describe(f"links: {links}")
    failed = [line for line in links if f"= -1 {errno_name} " in line and "(INJECTED)" in line]
    assert failed == links, traced.describe("a link was not refused")
    backup_temp = re.escape(f"{job.directory}/.{job.state.name}.bak.")
    copies = traced.matching(
        re.compile(rf"^\d+\s+write\(\d+<{backup_temp}\d+\.[0-9a-f]{{8}}\.tmp>")
    )
    assert len(copies) == ITEMS - 1, traced.describe("the backup was not copied")
    assert position(job) == (ITEMS, True, False)
    assert resumable.inspect(backup_of(job)).position == ITEMS - 1
    assert backup_of(job).stat().st_nlink == 1  # a copy, not another name of the state file
    assert job.state.stat().st_nlink == 1
    assert job.temp_files() == []


# -- reset: a rename aside fails --------------------------------------------------------


def finished_positional_job(job: Job) -> tuple[str, str]:
    """Run save_job.py over two items: a finished job with a backup. Return the digests of
    its state file and backup."""
    traced = run_job("save_job.py", job, ["--items", "2"])
    assert traced.stdout == ["ready 0 1", "done 2 True 2"], traced.describe("")
    return digest(job.state), digest(backup_of(job))


def run_reset_command(job: Job, options: Sequence[str]) -> Traced:
    """``resumable reset --yes STATE`` under strace with `options`."""
    assert STRACE is not None
    log = job.directory / "strace.log"
    command = [STRACE, "-f", "-qq", "-y", "-o", str(log), *options]
    command += [sys.executable, "-c", RESUMABLE_COMMAND, "reset", "--yes", str(job.state)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=TIMEOUT,
        check=False,
    )
    return Traced(
        command,
        completed.returncode,
        completed.stdout.splitlines(),
        completed.stderr,
        log.read_text().splitlines(),
    )


@pytest.mark.parametrize("how", ["reset()", "resumable reset"])
@pytest.mark.parametrize("errno_name", ["EACCES", "EXDEV"])
@pytest.mark.parametrize("failing", [1, 2], ids=["backup-rename", "state-rename"])
def test_a_reset_whose_rename_aside_fails_leaves_the_job_resumable(
    tmp_path: Path, how: str, errno_name: str, failing: int
) -> None:
    """The rename of the backup aside (the first) or of the state file (the second) fails:
    the reset raises StateWriteError (the command: exit 1 and the message), the state file
    is byte for byte as it was, the lock is free, and the next run resumes the job. When
    the second rename fails, the backup is already aside, under the reset name plus .bak,
    byte for byte (as a crash between the two renames leaves it)."""
    job = Job(tmp_path)
    state_before, backup_before = finished_positional_job(job)
    options = strace_options(RENAME, f"error={errno_name}:when={failing}")
    if how == "reset()":
        traced = run_job("keyed_save_job.py", job, ["reset"], options)
        assert traced.returncode == 0, traced.describe("the reset did not end by itself")
        report = error_report(traced)
        assert (report["type"], report["errno"]) == ("StateWriteError", errno_name), report
        message = str(report["message"])
    else:
        traced = run_reset_command(job, options)
        assert traced.returncode == 1, traced.describe("resumable reset did not fail")
        assert traced.stdout == [], traced.describe("")
        message = traced.stderr.strip().removeprefix("resumable: error: ")
    # The job's renames only: under coverage, the child also renames its data file.
    in_job = re.escape(str(job.directory))
    renames = traced.matching(re.compile(rf'^\d+\s+rename(?:at2?)?\((?:\S+, )?"{in_job}/'))
    assert len(renames) == failing, traced.describe(f"renames: {renames}")
    source = backup_of(job) if failing == 1 else job.state
    failed = injected(traced, rf'^\d+\s+rename(?:at2?)?\((?:\S+, )?"{re.escape(str(source))}", ')
    assert failed == renames[-1], traced.describe("the fault hit another rename")
    # When the backup was moved aside already, the message says so, and where.
    moved = (
        r" Its backup was moved aside already, to \1\.bak beside it: the job is as it was, "
        r"less that backup \(rename it back to job\.state\.bak to keep it\)\."
        if failing == 2
        else ""
    )
    named = re.fullmatch(
        rf"could not move {re.escape(str(job.state))} aside to (job\.state\.reset-[0-9T-]+): "
        rf"\S.* \[{errno_name}\]\.{moved} Check that this user may write to its directory\.",
        message,
    )
    assert named is not None, message
    asides = sorted(path.name for path in tmp_path.glob("job.state.reset-*"))
    assert digest(job.state) == state_before
    if failing == 1:
        assert asides == [], asides
        assert digest(backup_of(job)) == backup_before
    else:
        assert not backup_of(job).exists()
        assert asides == [f"{named[1]}.bak"], asides
        assert digest(tmp_path / asides[0]) == backup_before
    assert job.lock_is_free()

    again = run_job("save_job.py", job, ["--items", "2"])
    assert again.stdout == ["ready 2 2", "done 2 True 1"], again.describe("it did not resume")


# -- the key journal ----------------------------------------------------------------------


def keyed_job_stopped_at_two(job: Job) -> None:
    """Run keyed_save_job.py until item 2: items 0 and 1 are done, each saved."""
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS), "--stop-at", "2"])
    assert traced.stdout == ["ready 0 1", "did 0", "did 1", "done 2 False 2"], traced.describe("")


def resume_keyed_job(job: Job, done: int) -> None:
    """Run the keyed job without faults: it resumes after its `done` committed items, runs
    each of the others once and finishes."""
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)])
    rest = [f"did {item}" for item in range(done, ITEMS)]
    expected = [f"ready {done} 2", *rest, f"done {ITEMS} True {ITEMS - done + 1}"]
    assert traced.stdout == expected, traced.describe("the next run did not resume")
    assert position(job) == (ITEMS, True, False)


JOURNAL_FAULTS = [
    # (id, system calls, injection, the error's type and message,
    #  whether the run got to the save of item 2, junk bytes past the committed length)
    # The load reads the journal (the run's first open and its two fstat calls on it), the
    # first save opens it for writing (the second open, the third fstat).
    (
        "read-open-eacces",
        "openat",
        "error=EACCES:when=1+",
        "StateFileError",
        "the key journal {journal} cannot be read: Permission denied [EACCES]. That says "
        "nothing about its content: nothing was changed. Give this user read access to it "
        "(a run as another user, or under sudo, may have left it so), then run again.",
        False,
        b"",
    ),
    (
        "read-fstat-eio",
        FSTAT,
        "error=EIO:when=1+",
        "StateFileError",
        "the key journal {journal} cannot be read: Input/output error [EIO]. That says "
        "nothing about its content: nothing was changed. Fix what stops the read (the disk, "
        "the file system, the network share), then run again.",
        False,
        b"",
    ),
    (
        "write-open-eacces",
        "openat",
        "error=EACCES:when=2+",
        "StateWriteError",
        "cannot open the key journal {journal} for writing: Permission denied [EACCES]. "
        "Check that this user may write to it and to its directory.",
        True,
        b"",
    ),
    (
        "write-fstat-eio",
        FSTAT,
        "error=EIO:when=3+",
        "StateWriteError",
        "cannot read the size of the key journal {journal}: Input/output error [EIO]. "
        "The state file and the key journal's committed bytes are as they were.",
        True,
        b"",
    ),
    # Bytes past the committed length (a save killed between its journal record and its
    # state file): the first save cuts them off.
    (
        "ftruncate-eio",
        "ftruncate",
        "error=EIO:when=1+",
        "StateWriteError",
        "cannot cut the key journal {journal} back to its committed {length} bytes: "
        "Input/output error [EIO]. The state file and the key journal's committed bytes "
        "are as they were.",
        True,
        b"K\x06\0\0\0torn",
    ),
]


@pytest.mark.parametrize(
    ("call", "inject", "error_type", "message", "saving", "junk"),
    [fault[1:] for fault in JOURNAL_FAULTS],
    ids=[fault[0] for fault in JOURNAL_FAULTS],
)
def test_a_key_journal_that_cannot_be_opened_or_cut_stops_the_run_with_the_state_intact(
    tmp_path: Path,
    call: str,
    inject: str,
    error_type: str,
    message: str,
    saving: bool,
    junk: bytes,
) -> None:
    """A keyed job done up to item 2; the next run's open or fstat of its key journal (to
    read it at the start, or to append at the first save) or the cut of bytes past the
    committed length fails: the run stops with StateFileError or StateWriteError naming the
    journal, the state file and the journal's committed bytes are as they were, and the
    run after resumes with every committed key."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    journal = key_journal(job)
    length = journal.stat().st_size
    with journal.open("ab") as file:
        file.write(junk)
    state_before, journal_before = digest(job.state), journal.read_bytes()[:length]

    options = strace_options(call, inject, journal)
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)], options)
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    injected(traced, rf"<?{re.escape(str(journal))}")
    assert traced.stdout[:-1] == (["ready 2 2", "did 2"] if saving else []), traced.describe("")
    report = error_report(traced)
    assert (report["type"], report["saves"]) == (error_type, 0), report
    expected = message.format(journal=journal, length=f"{length:,}")
    assert report["message"] == expected, report["message"]
    assert digest(job.state) == state_before
    assert journal.read_bytes() == journal_before + junk
    assert position(job) == (2, False, False)

    resume_keyed_job(job, done=2)
    assert journal.stat().st_size > length  # cut, then appended to


NEW_JOURNAL_FAULTS = [
    # (id, system call, injection, what the injected call must show, the message's reason)
    # A new journal's open is the second on its path, after the plain open that finds no
    # file: every second open is the one with O_CREAT (the run's exit save tries again).
    ("create-eacces", "openat", "error=EACCES:when=2+2", "O_CREAT", "Permission denied [EACCES]"),
    (
        "create-enospc",
        "openat",
        "error=ENOSPC:when=2+2",
        "O_CREAT",
        "No space left on device [ENOSPC]",
    ),
    ("create-eio", "openat", "error=EIO:when=2+2", "O_CREAT", "Input/output error [EIO]"),
    ("fchmod-eperm", "fchmod", "error=EPERM:when=1+", "fchmod", "Operation not permitted [EPERM]"),
]


@pytest.mark.parametrize(
    ("call", "inject", "shows", "reason"),
    [fault[1:] for fault in NEW_JOURNAL_FAULTS],
    ids=[fault[0] for fault in NEW_JOURNAL_FAULTS],
)
def test_a_new_key_journal_that_cannot_be_created_stops_the_run_and_leaves_no_file(
    tmp_path: Path, call: str, inject: str, shows: str, reason: str
) -> None:
    """A private (0600) keyed job saved before any key was done has no journal yet; the
    next run's first save creates it. When that open (O_CREAT) fails, or the fchmod that
    gives it the state file's permission bits: StateWriteError naming the journal and the
    reason, the state file as it was, no journal file left (one left without the bits
    would keep them: only a new file gets them), and the next run starts at item 0 and
    writes a 0600 journal."""
    job = Job(tmp_path)
    first = run_job("keyed_save_job.py", job, ["--items", str(ITEMS), "--stop-at", "0"])
    assert first.stdout == ["ready 0 1", "done 0 False 1"], first.describe("")
    job.state.chmod(0o600)
    journal = key_journal(job)
    state_before = digest(job.state)

    options = strace_options(call, inject, journal)
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)], options)
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    faults = [line for line in traced.log if line.endswith("(INJECTED)")]
    assert faults, traced.describe("no fault was injected")
    assert all(shows in line and str(journal) in line for line in faults), traced.describe("")
    assert traced.stdout[:-1] == ["ready 0 2", "did 0"], traced.describe("")
    report = error_report(traced)
    assert (report["type"], report["saves"]) == ("StateWriteError", 0), report
    message = str(report["message"])
    if call == "openat":
        assert message == (
            f"cannot open the key journal {journal} for writing: {reason}. Check that this "
            "user may write to it and to its directory."
        ), message
    else:
        assert message == (
            f"cannot give the new key journal {journal} the state file's permission bits: "
            f"{reason}. The state file and the key journal's committed bytes are as they were."
        ), message
    assert digest(job.state) == state_before
    assert not journal.exists()
    assert position(job) == (0, False, False)

    resume_keyed_job(job, done=0)
    assert journal.stat().st_mode & 0o777 == 0o600


def test_a_key_journal_at_its_committed_length_is_appended_to_without_a_cut(
    tmp_path: Path,
) -> None:
    """A journal whose size is its committed length (no torn tail) needs no cut: the run
    makes no ftruncate (each costs a journaled size change), so one that would fail (EIO)
    is never reached, and the run finishes."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    journal = key_journal(job)
    options = strace_options("ftruncate", "error=EIO:when=1+", journal)
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)], options)
    assert traced.log == [], traced.describe("an ftruncate was made")
    assert traced.stdout == ["ready 2 2", "did 2", "did 3", f"done {ITEMS} True 3"], (
        traced.describe("the run did not finish")
    )


def test_a_retired_key_journal_that_cannot_be_deleted_is_left_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A generation above the one in use (a fold a crash left unfinished) is deleted when
    a run opens the job; when its unlink fails (EACCES) the file is left as it is, the run
    goes on and finishes, and the next run deletes it."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    retired = job.state.with_name(f"{job.state.name}.keys-7")
    retired.write_bytes(b"an unfinished fold")

    options = strace_options(UNLINK, "error=EACCES:when=1+", retired)
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)], options)
    injected(traced, rf'unlink(?:at)?\((?:\S+, )?"{re.escape(str(retired))}"')
    assert traced.stdout == ["ready 2 2", "did 2", "did 3", f"done {ITEMS} True 3"], (
        traced.describe("the run did not go on")
    )
    assert traced.stderr == "", traced.describe("")
    assert retired.read_bytes() == b"an unfinished fold"
    assert position(job) == (ITEMS, True, False)

    again = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)])
    assert again.stdout == [f"ready {ITEMS} 3", f"done {ITEMS} True 1"], again.describe("")
    assert not retired.exists()
    assert key_journal(job).exists()


# -- a fold failing part-way, and a program's own handler raising in a journal write -------


def fold_journal(job: Job) -> Path:
    """The file of the key journal's generation 1: the one a fold of generation 0 writes."""
    return job.state.with_name(job.state.name + ".keys-1")


FOLD_FAULTS = [
    # (id, system call, injection, the error's type, the reason in its message)
    # The fold writes the job record, then one record of all the keys, then fsyncs. With
    # "+", every later call fails too: the exit's save, which folds again, fails as well.
    ("write-1-eio", "write", "error=EIO:when=1+", "StateWriteError", "Input/output error [EIO]"),
    (
        "write-2-enospc",
        "write",
        "error=ENOSPC:when=2+",
        "StateWriteError",
        "No space left on device [ENOSPC]",
    ),
    ("fsync-eio", "fsync", "error=EIO:when=1+", "StateWriteError", "Input/output error [EIO]"),
    # The program's own SIGUSR1 handler raises (not an OSError) after the fold's first
    # write: re-raised as it is, the fold's file removed.
    ("write-1-usr1", "write", "signal=USR1:when=1+", "UserHandlerError", ""),
    ("write-2-usr1", "write", "signal=USR1:when=2+", "UserHandlerError", ""),
]


@pytest.mark.parametrize(
    ("call", "inject", "error_type", "reason"),
    [fault[1:] for fault in FOLD_FAULTS],
    ids=[fault[0] for fault in FOLD_FAULTS],
)
def test_a_fold_failing_part_way_leaves_the_journal_and_state_as_committed(
    tmp_path: Path, call: str, inject: str, error_type: str, reason: str
) -> None:
    """A keyed job done up to item 2 (two records); the next run folds its key journal at
    its first save (FOLD_MIN_RECORDS lowered to 1), and a write or the fsync of the new
    generation fails, or brings a signal whose handler (the program's) raises: the run
    stops with StateWriteError naming the fold (or with the handler's own exception), the
    new generation's file is removed, the state file and the key journal in use are byte
    for byte as they were, and the next run resumes with every committed key."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    journal, fold = key_journal(job), fold_journal(job)
    state_before, journal_before = digest(job.state), digest(journal)

    args = ["--items", str(ITEMS), "--fold-after", "1", "--raise-on-usr1"]
    traced = run_job("keyed_save_job.py", job, args, strace_options(call, inject, fold))
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    assert traced.stdout[:-1] == ["ready 2 2", "did 2"], traced.describe("")
    if error_type == "UserHandlerError":
        assert any("--- SIGUSR1" in line for line in traced.log), traced.describe("no signal")
        assert traced.stdout[-1] == "raised UserHandlerError 0", traced.describe("")
    else:
        injected(traced, rf"{call}\(\d+<{re.escape(str(fold))}>")
        report = error_report(traced)
        assert (report["type"], report["saves"]) == (error_type, 0), report
        assert report["message"] == (
            f"could not write the folded key journal {fold}: {reason}. The journal in use "
            "is unchanged."
        ), report["message"]
    assert not fold.exists()
    assert (digest(job.state), digest(journal)) == (state_before, journal_before)
    assert position(job) == (2, False, False)

    resume_keyed_job(job, done=2)


def test_a_fold_whose_directory_flush_fails_is_removed_and_the_exit_folds_again(
    tmp_path: Path,
) -> None:
    """The fold's new generation is written and fsynced, but the open of the directory
    for its flush fails (EACCES, once): StateWriteError, the file removed (its name may not
    be on the disk); the exit's save folds again, into the same generation, and commits it
    with item 2; the next run resumes after item 2."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    fold = fold_journal(job)
    # The directory's opens: four scans (O_NONBLOCK) as the run opens the job and chooses
    # the fold's generation, then the fold's flush.
    options = strace_options("openat", "error=EACCES:when=5", job.directory)
    args = ["--items", str(ITEMS), "--fold-after", "1"]
    traced = run_job("keyed_save_job.py", job, args, options)
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    failed = injected(traced, r"openat\(.*O_DIRECTORY\) = -1 EACCES")
    assert "O_NONBLOCK" not in failed, traced.describe("the fault hit a scan, not the flush")
    assert traced.stdout[:-1] == ["ready 2 2", "did 2"], traced.describe("")
    report = error_report(traced)
    assert (report["type"], report["saves"]) == ("StateWriteError", 1), report
    assert report["message"] == (
        f"could not write the folded key journal {fold}: Permission denied [EACCES]. The "
        "journal in use is unchanged."
    ), report["message"]
    assert fold.exists()  # written again by the exit's save, which the state file commits
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished) == (3, False)

    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)])
    assert traced.stdout == ["ready 3 3", "did 3", f"done {ITEMS} True 2"], traced.describe("")


def test_a_program_s_own_handler_raising_in_a_journal_append_is_raised_as_it_is(
    tmp_path: Path,
) -> None:
    """The program's own SIGUSR1 handler raises (not an OSError, not held back by the
    library) in every write of the key journal: the append re-raises it as it is, not as
    StateWriteError; the state file and the journal's committed bytes are as they were
    (the torn record past them is cut by the next run), and the next run resumes with
    every committed key."""
    job = Job(tmp_path)
    keyed_job_stopped_at_two(job)
    journal = key_journal(job)
    length = journal.stat().st_size
    state_before, journal_before = digest(job.state), journal.read_bytes()

    options = strace_options("write", "signal=USR1:when=1+", journal)
    args = ["--items", str(ITEMS), "--raise-on-usr1"]
    traced = run_job("keyed_save_job.py", job, args, options)
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    assert any("--- SIGUSR1" in line for line in traced.log), traced.describe("no signal")
    assert traced.stdout == ["ready 2 2", "did 2", "raised UserHandlerError 0"], traced.describe("")
    assert digest(job.state) == state_before
    assert journal.read_bytes()[:length] == journal_before
    assert position(job) == (2, False, False)

    resume_keyed_job(job, done=2)


# -- ctrl+c in a journal write --------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "when"),
    [("write", 1), ("write", 2), ("write", ITEMS), ("fsync", 2)],
    ids=["write-1-job-record", "write-2", f"write-{ITEMS}-last", "fsync-2"],
)
def test_ctrl_c_in_a_key_journal_write_lets_the_save_complete_and_the_next_run_resumes(
    tmp_path: Path, call: str, when: int
) -> None:
    """SIGINT arrives in the `when`-th write (or fsync) of the key journal, that is in the
    save of item `when` - 1 (the first write also carries the job record): the save
    completes whole, state file included, the run stops with KeyboardInterrupt and says
    the progress is saved, and the next run resumes with every committed key, running
    each of the others once."""
    job = Job(tmp_path)
    journal = key_journal(job)
    options = strace_options(call, f"signal=INT:when={when}", journal)
    traced = run_job("keyed_save_job.py", job, ["--items", str(ITEMS)], options)
    assert traced.returncode == 0, traced.describe("the run did not end by itself")
    signalled = [index for index, line in enumerate(traced.log) if "--- SIGINT" in line]
    assert signalled, traced.describe("no SIGINT came")
    call_on_journal = re.compile(rf"^\d+\s+{call}\(\d+<{re.escape(str(journal))}>")
    before = [line for line in traced.log[: signalled[0]] if call_on_journal.search(line)]
    assert len(before) == when, traced.describe(f"{call} calls before the SIGINT: {before}")
    assert call_on_journal.search(traced.log[signalled[0] - 1]), traced.describe("")
    did = [f"did {item}" for item in range(when)]
    assert traced.stdout == ["ready 0 1", *did, f"interrupted {when}"], traced.describe("")
    items = "item" if when == 1 else "items"
    assert (
        f"resumable: stopped by SIGINT after {when} {items} ({when} in this run); progress "
        f"saved to {job.state}. Run again to continue."
    ) in traced.stderr, traced.describe("")
    assert position(job) == (when, False, False)
    assert job.temp_files() == []

    resume_keyed_job(job, done=when)


@pytest.mark.parametrize("how", ["reset()", "resumable reset"])
def test_a_reset_whose_directory_flush_fails_says_the_reset_is_done(
    tmp_path: Path, how: str
) -> None:
    """Both renames aside succeed, then the open of the directory for their flush fails
    (EACCES): StateWriteError says the state file was moved aside and the reset is done
    (not that it could not be moved), both files are aside byte for byte, the lock is
    free, and the next run starts the job over."""
    job = Job(tmp_path)
    state_before, backup_before = finished_positional_job(job)
    # Every open of the directory fails; the reset makes only the one for its flush.
    options = strace_options("openat", "error=EACCES:when=1+", job.directory)
    if how == "reset()":
        traced = run_job("keyed_save_job.py", job, ["reset"], options)
        assert traced.returncode == 0, traced.describe("the reset did not end by itself")
        report = error_report(traced)
        assert (report["type"], report["errno"]) == ("StateWriteError", "EACCES"), report
        message = str(report["message"])
    else:
        traced = run_reset_command(job, options)
        assert traced.returncode == 1, traced.describe("resumable reset did not fail")
        message = traced.stderr.strip().removeprefix("resumable: error: ")
    injected(traced, r"openat\(.*O_DIRECTORY\) = -1 EACCES")
    named = re.fullmatch(
        rf"moved {re.escape(str(job.state))} aside to (job\.state\.reset-[0-9T-]+), but "
        r"flushing its directory failed: Permission denied \[EACCES\]\. The reset is done; "
        r"after a power cut the state file may come back, and the job would resume instead "
        r"of starting over\.",
        message,
    )
    assert named is not None, message
    assert not job.state.exists()
    assert not backup_of(job).exists()
    assert digest(tmp_path / named[1]) == state_before
    assert digest(tmp_path / f"{named[1]}.bak") == backup_before
    assert job.lock_is_free()

    again = run_job("save_job.py", job, ["--items", "2"])
    assert again.stdout == ["ready 0 1", "done 2 True 2"], again.describe("it did not start over")
