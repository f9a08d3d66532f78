"""Fault injection with strace: kill -9 and I/O errors at each system call of a save.

tests/jobs/save_job.py runs four items with NPolicy(1): a run from scratch saves exactly
four times (positions 1 to 4) and makes the same system calls in the same order every
time. Its first system call below is the lock file's pid ``write``. The first save has no
state file to keep as the backup (its ``link`` fails with ENOENT); every later save makes
these calls (x86-64 names; other architectures have only ``linkat`` and ``renameat``):

    write(temp)  fsync(temp)  link(job.state, backup temp)
    rename(backup temp, job.state.bak)  rename(temp, job.state)  fsync(directory)

strace runs the job and injects a fault into the K-th call of one system call. Its log
(``-y -o``) shows which call the fault hit, and every test checks that first, so a change
in the library's sequence of calls fails loudly instead of quietly testing something else.

strace 6.1, as used here:

- ``inject=SET:signal=SIGKILL:when=K`` stops the process on entering the K-th call, and
  that call does not run: the kernel skips a system call when a fatal signal is pending at
  the syscall-entry stop. strace then kills itself with the same signal (exit status -9),
  and writes ``+++ killed by SIGKILL +++`` to the log even with ``-qq``.
- ``-P PATH`` limits injection, and the counting of ``when``, to calls that touch PATH.
  But for ``rename`` it matches only the old path, never the new one, and the temp file's
  name is random; so ``-P`` serves for the directory's fsync, and the rest is counted.
- ``when=K+`` faults the K-th call and every later one (a full disk stays full);
  ``when=K+2`` every other call from the K-th on.
- A name the architecture lacks fails the whole command unless written ``?name``.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import resumable
from resumable._store import progress_log

from jobs.harness import Child, Job, Traced, child_env, run_script

pytestmark = pytest.mark.strace  # skipped without strace, failed under CI=true

ITEMS = 4  # save_job.py saves positions 1, 2, 3 and 4 (finished)
LINK = "?link,linkat"
RENAME = "?rename,renameat,renameat2"
UNLINK = "?unlink,unlinkat"
TRACED = f"write,fsync,{LINK},{RENAME},{UNLINK}"

# Regular expressions of the save's calls in a ``strace -y`` log, as templates over the
# paths of one job (see `_patterns`). ``-y`` shows a descriptor with its path.
_AT = r"(?:AT_FDCWD<[^>]*>, )?"  # the directory argument of linkat and renameat
WRITE_TEMP = r"write\(\d+<{temp}>, "
WRITE_BACKUP_TEMP = r"write\(\d+<{backup_temp}>, "
FSYNC_TEMP = r"fsync\(\d+<{temp}>\)"
FSYNC_DIRECTORY = r"fsync\(\d+<{directory}>\)"
LINK_BACKUP = rf'link(?:at)?\({_AT}"{{state}}", {_AT}"{{backup}}"'
UNLINK_BACKUP = rf'unlink(?:at)?\({_AT}"{{backup}}"'
RENAME_STATE = rf'rename(?:at2?)?\({_AT}"{{temp}}", {_AT}"{{state}}"'


def _patterns(job: Job) -> dict[str, str]:
    directory = re.escape(str(job.directory))
    return {
        "directory": directory,
        "state": rf"{directory}/job\.state",
        "backup": rf"{directory}/job\.state\.bak",
        "temp": rf"{directory}/\.job\.state\.\d+\.[0-9a-f]{{8}}\.tmp",
        "backup_temp": rf"{directory}/\.job\.state\.bak\.\d+\.[0-9a-f]{{8}}\.tmp",
    }


def call_pattern(template: str, job: Job) -> re.Pattern[str]:
    """The regular expression `template` for the files of `job`."""
    return re.compile(template.format(**_patterns(job)))


def backup_of(job: Job) -> Path:
    """The backup file of the job's state file."""
    return job.state.with_name(job.state.name + ".bak")


def digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_traced(job: Job, strace_options: Sequence[str], *job_options: str) -> Traced:
    """Run save_job.py on `job` under ``strace -f -qq -y -o LOG`` with `strace_options`."""
    # No .pyc writes: they would add write and rename calls to the count.
    return run_script(
        "save_job.py",
        [str(job.state), "--items", str(ITEMS), *job_options],
        log=job.directory / "strace.log",
        strace_options=strace_options,
        env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def finish_job(job: Job, leftovers: Sequence[Path]) -> None:
    """Run the job again without faults: it resumes where the state file says, the start
    removes the temp files a killed save left, and the job finishes with every item."""
    try:
        position = resumable.inspect(job.state).position
        runs = 2
    except FileNotFoundError:
        position, runs = 0, 1
    with Child("save_job.py", job.state, "--items", str(ITEMS)) as child:
        child.expect(f"ready {position} {runs}")
        kept = [path.name for path in leftovers if path.exists()]
        assert not kept, child.describe(f"temp files kept past the start: {kept}")
        result = child.finish()
    assert result.returncode == 0, child.describe("the run after the kill failed")
    # A run of a job that had finished saves once, to count itself in runs.
    saves = ITEMS - position if position < ITEMS else 1
    expected = f"done {ITEMS} True {saves}"
    assert result.stdout == [expected], child.describe("the run after the kill did not finish")
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (ITEMS, True, False)
    # The backup is the save before the last: the one of item 3, or the finished file.
    backup = ITEMS if position == ITEMS else ITEMS - 1
    assert resumable.inspect(backup_of(job)).position == backup
    assert job.temp_files() == []


# -- kill -9 at each system call of a save ---------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """A system call of the second save (position 2), and what a kill -9 there leaves."""

    name: str
    syscalls: str  # the strace syscall set
    when: int  # the call's number among those strace counts
    call: str  # template of the call's regular expression
    nth: int  # the call's number among the log lines matching `call`
    position: int  # what the state file holds after the kill
    leftovers: int  # temp files the killed save leaves
    on_directory: bool = False  # count only the calls on the directory (strace -P)

    def strace_options(self, job: Job) -> list[str]:
        """Trace the save's calls and kill the job on entering this one."""
        options = ["-e", f"trace={TRACED}"]
        options += ["-e", f"inject={self.syscalls}:signal=SIGKILL:when={self.when}"]
        return [*options, "-P", str(job.directory)] if self.on_directory else options


KILL_POINTS = [
    # The lock file's pid, the first save and then the second save write once each.
    KillPoint("write-temp", "write", 3, WRITE_TEMP, 2, position=1, leftovers=1),
    KillPoint("fsync-temp", "fsync", 3, FSYNC_TEMP, 2, position=1, leftovers=1),
    # A new job's first save keeps no backup: the second save removes the old backup (none
    # yet: the call fails, as it does once), then links the state file as the backup.
    KillPoint("unlink-backup", UNLINK, 1, UNLINK_BACKUP, 1, position=1, leftovers=1),
    KillPoint("link-backup", LINK, 1, LINK_BACKUP, 1, position=1, leftovers=1),
    KillPoint("rename-state", RENAME, 2, RENAME_STATE, 2, position=1, leftovers=1),
    KillPoint(
        "fsync-directory",
        "fsync",
        2,
        FSYNC_DIRECTORY,
        2,
        position=2,
        leftovers=0,
        on_directory=True,
    ),
]


@pytest.mark.parametrize("point", KILL_POINTS, ids=[point.name for point in KILL_POINTS])
def test_kill9_at_a_call_of_a_save_leaves_the_old_or_new_state_and_the_job_finishes(
    tmp_path: Path, point: KillPoint
) -> None:
    """kill -9 on entering one system call of the second save: the state file holds the
    first save before the final rename and the second after it, never an error; a backup
    is readable; the next run removes the temp files at its start and finishes the job."""
    job = Job(tmp_path)
    traced = run_traced(job, point.strace_options(job))
    assert traced.returncode == -signal.SIGKILL, traced.describe("the job was not killed")
    assert traced.stdout == ["ready 0 1"], traced.describe("unexpected output")
    traced.check_is_nth(traced.killed_call(), call_pattern(point.call, job), point.nth, "kill")

    snapshot = resumable.inspect(job.state)
    assert snapshot.position in (1, 2), traced.describe(f"position {snapshot.position}")
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (
        point.position,
        False,
        False,
    ), traced.describe("the state file after the kill")
    if backup_of(job).exists():
        assert resumable.inspect(backup_of(job)).position == 1
    leftovers = job.temp_files()
    assert len(leftovers) == point.leftovers, traced.describe(f"temp files: {leftovers}")
    finish_job(job, leftovers)


SWEPT_SAVE = 3  # the save of position 3: the first with an old backup to replace
_CALL_NAME = re.compile(r"^\d+\s+(\w+)\(")


def calls_of_save(traced: Traced, job: Job, save: int) -> list[tuple[str, int, bool]]:
    """The traced calls of the `save`-th save, each as (system call, its number among the
    log's calls of that name, whether the state file's rename had run before it). A save
    runs from the write of its temp file to the flush of the directory."""
    write_temp = call_pattern(WRITE_TEMP, job)
    fsync_directory = call_pattern(FSYNC_DIRECTORY, job)
    rename_state = call_pattern(RENAME_STATE, job)
    seen: Counter[str] = Counter()
    saves = 0
    in_save = renamed = False
    calls: list[tuple[str, int, bool]] = []
    for line in traced.log:
        match = _CALL_NAME.match(line)
        if match is None:
            continue
        seen[match[1]] += 1
        if write_temp.search(line) and not in_save:
            saves += 1
            in_save, renamed = True, False
        if in_save and saves == save:
            calls.append((match[1], seen[match[1]], renamed))
        renamed = renamed or bool(rename_state.search(line))
        if fsync_directory.search(line):
            in_save = False
    return calls


def test_kill9_at_every_system_call_of_one_save_keeps_the_old_or_new_state(
    tmp_path: Path,
) -> None:
    """kill -9 on entering each system call of one save in turn, the calls read from a
    run without faults (so a call added to the save is swept too): the state file holds
    the save before until the rename ran, and this save after it, never from the backup;
    the next run removes what the killed save left and finishes the job."""
    clean_job = Job(tmp_path / "clean")
    clean_job.directory.mkdir()
    clean = run_traced(clean_job, ["-e", f"trace={TRACED}"])
    assert clean.returncode == 0, clean.describe("the run without faults failed")
    calls = calls_of_save(clean, clean_job, SWEPT_SAVE)
    # At least the write, fsync, link, rename and directory fsync that docs/state-file.md
    # describes; whatever else the save does is swept as well.
    assert len(calls) >= 5, clean.describe(f"save {SWEPT_SAVE} made only {calls}")
    for index, (name, nth, renamed) in enumerate(calls):
        job = Job(tmp_path / f"kill-{index}")
        job.directory.mkdir()
        inject = ["-e", f"trace={TRACED}", "-e", f"inject={name}:signal=SIGKILL:when={nth}"]
        traced = run_traced(job, inject)
        context = f"kill at {name} #{nth}, call {index + 1} of save {SWEPT_SAVE}"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        traced.check_is_nth(traced.killed_call(), re.compile(rf"^\d+\s+{name}\("), nth, context)
        snapshot = resumable.inspect(job.state)
        expected = (SWEPT_SAVE if renamed else SWEPT_SAVE - 1, False, False)
        actual = (snapshot.position, snapshot.finished, snapshot.from_backup)
        assert actual == expected, traced.describe(context)
        finish_job(job, job.temp_files())


def _syscall_names(syscalls: str) -> str:
    return "|".join(re.escape(name.lstrip("?")) for name in syscalls.split(","))


@pytest.mark.slow
@pytest.mark.parametrize(
    "syscalls", ["write", "fsync", LINK, RENAME], ids=["write", "fsync", "link", "rename"]
)
def test_kill9_at_every_call_of_every_save_keeps_exactly_the_last_completed_save(
    tmp_path: Path, syscalls: str
) -> None:
    """kill -9 on entering each call of the set, one run per call, over all four saves:
    the state file holds exactly the last save whose final rename ran (none before the
    first), its backup is readable, and a run without faults then finishes the job."""
    calls = re.compile(rf"^\d+\s+(?:{_syscall_names(syscalls)})\(")
    clean = run_traced(Job(tmp_path), ["-e", f"trace={syscalls}"])
    assert clean.returncode == 0, clean.describe("the run without faults failed")
    total = len(clean.matching(calls))
    # Each save makes each call at least once, but a new job's first save links no backup.
    assert total >= ITEMS - (syscalls == LINK), clean.describe("fewer calls than saves")
    for when in range(1, total + 1):
        directory = tmp_path / f"{when}"
        directory.mkdir()
        job = Job(directory)
        options = ["-e", f"trace={TRACED}", "-e", f"inject={syscalls}:signal=SIGKILL:when={when}"]
        traced = run_traced(job, options)
        context = f"kill at call {when} of {syscalls}"
        assert traced.returncode == -signal.SIGKILL, traced.describe(context)
        renamed = [
            line
            for line in traced.matching(call_pattern(RENAME_STATE, job))
            if line.endswith(" = 0")
        ]
        if renamed:
            snapshot = resumable.inspect(job.state)
            expected = (len(renamed), len(renamed) == ITEMS, False)
            actual = (snapshot.position, snapshot.finished, snapshot.from_backup)
            assert actual == expected, traced.describe(context)
        else:
            assert not job.state.exists(), traced.describe(context)
        if backup_of(job).exists():  # the save before, or the same when killed before its rename
            backup = resumable.inspect(backup_of(job)).position
            assert backup in (len(renamed) - 1, len(renamed)), traced.describe(context)
        finish_job(job, job.temp_files())


# -- I/O errors during a save ----------------------------------------------------------


@dataclass(frozen=True)
class IoFault:
    """An error that fails the second save and every later one, and the call it hits first."""

    name: str
    errno_name: str
    inject: tuple[str, ...]  # strace -e inject= expressions
    first: str  # template of the first failing call's regular expression
    nth: int  # its number among the log lines matching `first`
    job_options: tuple[str, ...] = ()


IO_FAULTS = [
    IoFault("enospc-write-temp", "ENOSPC", ("write:error=ENOSPC:when=3+",), WRITE_TEMP, 2),
    IoFault("eio-fsync-temp", "EIO", ("fsync:error=EIO:when=3+",), FSYNC_TEMP, 2),
    # Every rename from the second on: a save renames once, its temp file over the state.
    IoFault("exdev-rename-state", "EXDEV", (f"{RENAME}:error=EXDEV:when=2+",), RENAME_STATE, 2),
    IoFault("eacces-rename-state", "EACCES", (f"{RENAME}:error=EACCES:when=2+",), RENAME_STATE, 2),
    # A real error: the file size limit. The first write stops short at the limit (64 of
    # about 250 bytes), the second fails; both are the second write to that temp file.
    IoFault("efbig-rlimit-fsize", "EFBIG", (), WRITE_TEMP, 3, ("--fsize-limit", "64")),
    # A file system without hard links (FAT, some network shares): the backup is copied
    # into its own temp file, and the disk is full.
    IoFault(
        "enospc-copying-backup",
        "ENOSPC",
        (f"{LINK}:error=EPERM:when=1+", "write:error=ENOSPC:when=4+"),
        WRITE_BACKUP_TEMP,
        1,
    ),
]


def check_error_message(report: object, job: Job, errno_name: str) -> None:
    """A `StateWriteError` report names the state file and the errno, and says the
    previous state file is intact."""
    assert isinstance(report, dict), report
    message = report["message"]
    assert report["errno"] == errno_name, message
    assert str(job.state) in message, message
    assert f"[{errno_name}]" in message, message
    assert "The previous state file is intact" in message, message


@pytest.mark.parametrize("fault", IO_FAULTS, ids=[fault.name for fault in IO_FAULTS])
def test_a_failed_save_raises_state_write_error_and_keeps_the_previous_state(
    tmp_path: Path, fault: IoFault
) -> None:
    """An I/O error in the second save and every later one: the job gets StateWriteError
    naming the file and the errno, the state file is byte for byte the first save, no temp
    file is left, and the unsaved items are not counted as saved."""
    job = Job(tmp_path)
    options = ["-e", f"trace={TRACED}"]
    for expression in fault.inject:
        options += ["-e", f"inject={expression}"]
    traced = run_traced(job, options, "--digest", *fault.job_options)
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    traced.check_is_nth(
        traced.first_failure(fault.errno_name), call_pattern(fault.first, job), fault.nth, "fault"
    )
    assert len(traced.stdout) == 3, traced.describe("unexpected output")
    assert traced.stdout[0] == "ready 0 1", traced.describe("unexpected output")
    before = traced.stdout[1].removeprefix("digest ")
    kind, _, payload = traced.stdout[2].partition(" ")
    assert kind == "error", traced.describe("the job saw no StateWriteError")
    report = json.loads(payload)

    # The save of position 2 failed (the context), then the save on leaving the with block.
    check_error_message(report, job, fault.errno_name)
    check_error_message(report.get("context"), job, fault.errno_name)
    assert report["saves"] == 1, report
    assert digest(job.state) == before, traced.describe("the state file changed")
    assert job.temp_files() == [], traced.describe(f"temp files left: {job.temp_files()}")
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (1, False, False)


def test_an_fsync_that_fails_is_not_retried(tmp_path: Path) -> None:
    """EIO from the fsync of the temp file: that save calls fsync exactly once, then only
    removes the temp file (no second fsync, no rename), and so does the save on exit."""
    job = Job(tmp_path)
    inject = "fsync:error=EIO:when=3+"
    traced = run_traced(job, ["-e", f"trace={TRACED}", "-e", f"inject={inject}"])
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    fsync_temp = call_pattern(r"fsync\(\d+<({temp})>\)", job)
    fsyncs = Counter(m[1] for line in traced.log if (m := fsync_temp.search(line)))
    # The first save's temp file, the failed save's, and the failed save on exit.
    assert list(fsyncs.values()) == [1, 1, 1], traced.describe(f"fsync calls: {fsyncs}")
    failed = traced.first_failure("EIO")
    assert failed.endswith("(INJECTED)"), traced.describe("")
    match = fsync_temp.search(failed)
    assert match is not None, traced.describe(f"the EIO hit {failed!r}")
    after = traced.log[traced.log.index(failed) + 1 :]
    touching = [line for line in after if match[1] in line]
    assert len(touching) == 1, traced.describe(f"calls on the temp file after EIO: {touching}")
    assert re.search(r"unlink(?:at)?\(", touching[0]), traced.describe("")
    assert touching[0].endswith(" = 0"), traced.describe("")


def test_eio_on_the_directory_fsync_does_not_claim_a_replaced_state_file_is_intact(
    tmp_path: Path,
) -> None:
    """EIO from the fsync of the directory, the last step of a save, after the rename:
    either the state file is still byte for byte the previous save, or the StateWriteError
    does not say that it is (nor that the saved items will run again)."""
    job = Job(tmp_path)
    options = ["-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=2+"]
    traced = run_traced(job, [*options, "-P", str(job.directory)], "--digest")
    assert traced.returncode == 0, traced.describe("the job did not end by itself")
    traced.check_is_nth(traced.first_failure("EIO"), call_pattern(FSYNC_DIRECTORY, job), 2, "fault")
    assert traced.stdout[0] == "ready 0 1", traced.describe("unexpected output")
    before = traced.stdout[1].removeprefix("digest ")
    kind, _, payload = traced.stdout[2].partition(" ")
    assert kind == "error", traced.describe("the job saw no StateWriteError")
    report = json.loads(payload)
    assert report["errno"] == "EIO", report
    assert job.temp_files() == []
    position = resumable.inspect(job.state).position
    intact = digest(job.state) == before
    assert intact or "previous state file is intact" not in report["message"], (
        f"the state file was replaced (it holds position {position}, not 1), yet the "
        f"error says: {report['message']}"
    )


# -- kill -9 during the first save after a fallback to the backup ------------------------

# The call that gives the damaged state file its name job.state.corrupt-<time>.
NAME_DAMAGED = rf'(?:link|rename)(?:at2?)?\({_AT}"{{state}}", {_AT}"{{state}}\.corrupt-[0-9T-]+"'


@dataclass(frozen=True)
class FallbackKillPoint:
    """A system call of the first save of a run that resumed from the backup, and what a
    kill -9 there leaves for the next run: a position and whether it is the backup's."""

    name: str
    syscalls: str
    when: int
    call: str
    position: int
    from_backup: bool
    on_directory: bool = False

    def strace_options(self, job: Job) -> list[str]:
        options = ["-e", f"trace={TRACED}"]
        options += ["-e", f"inject={self.syscalls}:signal=SIGKILL:when={self.when}"]
        return [*options, "-P", str(job.directory)] if self.on_directory else options


FALLBACK_KILL_POINTS = [
    FallbackKillPoint("fsync-temp", "fsync", 1, FSYNC_TEMP, 1, True),
    FallbackKillPoint("name-damaged-file", f"{LINK},{RENAME}", 1, NAME_DAMAGED, 1, True),
    # strace counts `when` per system call, not over the set.
    FallbackKillPoint("rename-state", RENAME, 1, RENAME_STATE, 1, True),
    FallbackKillPoint("fsync-directory", "fsync", 1, FSYNC_DIRECTORY, 2, False, True),
]


@pytest.mark.parametrize(
    "point", FALLBACK_KILL_POINTS, ids=[point.name for point in FALLBACK_KILL_POINTS]
)
def test_kill9_in_the_first_save_after_a_fallback_never_loses_the_backup_s_progress(
    tmp_path: Path, point: FallbackKillPoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job.state damaged, job.state.bak at position 1: the run resumes from the backup and
    is killed in its first save. At every call the next run finds the damaged file beside
    the backup (and resumes from the backup again) or the new save, never no state file;
    the damaged bytes are kept under some name; and the job then finishes."""
    job = Job(tmp_path)
    monkeypatch.setattr(progress_log, "MAX_RECORDS", 0)  # each save rewrites the state file
    with resumable.Resumable(job.state, policy=resumable.NPolicy(1)) as r:
        for item in r.iterate(range(ITEMS)):
            if item == 2:
                break  # saved positions 1 (now the backup) and 2
    damaged = job.state.read_bytes().replace(b'"position":2', b'"position":9')
    job.state.write_bytes(damaged)

    traced = run_traced(job, point.strace_options(job))
    assert traced.returncode == -signal.SIGKILL, traced.describe("the job was not killed")
    assert traced.stdout == ["ready 1 2"], traced.describe("it did not resume from the backup")
    traced.check_is_nth(traced.killed_call(), call_pattern(point.call, job), 1, "kill")

    if point.from_backup:
        with pytest.warns(resumable.ResumableWarning, match="resuming from the backup"):
            snapshot = resumable.inspect(job.state)
    else:
        snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.from_backup) == (point.position, point.from_backup)
    kept = [job.state, *tmp_path.glob("job.state.corrupt-*")]
    assert damaged in [path.read_bytes() for path in kept], traced.describe("damage lost")

    with Child("save_job.py", job.state, "--items", str(ITEMS)) as child:
        line = child.read_line()
        assert line is not None
        assert line.startswith(f"ready {point.position} "), line
        result = child.finish()
    assert result.stdout == [f"done {ITEMS} True {ITEMS - point.position}"], result
    snapshot = resumable.inspect(job.state)
    assert (snapshot.position, snapshot.finished, snapshot.from_backup) == (ITEMS, True, False)
    assert damaged in [path.read_bytes() for path in tmp_path.glob("job.state.corrupt-*")]
