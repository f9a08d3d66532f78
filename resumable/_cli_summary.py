"""``resumable status PREFIX``: every job under a folder, summed (the shards of one job).

A folder is a URL that ends in ``/`` (``s3://bucket/crawl/``, or a bucket alone) or a
local directory (shards on a mount). Its jobs are found by their lock: a name ``X`` is a
job when ``X.lease`` (object storage) or ``X.lock`` (a local folder) is there, or when
``X`` has a backup ``X.bak`` beside it; the files of a job (``X.bak``, ``X.reset-<time>``,
journals...) are never jobs of their own. Each job is read as `inspect` reads it, and its
lock probed as ``status`` probes it, a few at a time.

| total | what it counts |
| --- | --- |
| jobs | the jobs found |
| finished | jobs whose input ran out |
| running | jobs a run holds now (on object storage: a lease not released, not expired) |
| no state yet | jobs with a lock and no saved state yet (running, or never saved) |
| items done | the sum of every job's items done |
| failed | failed items recorded, over every job |
| problems | jobs whose state cannot be read (each named) |
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from resumable._errors import ResumableError, ResumableWarning
from resumable._inspect import StateSnapshot, inspect
from resumable._store import open_store
from resumable._store.flock import LockHolder
from resumable._store.lease import LeaseHolder
from resumable._store.url import JobName, JobURL, is_url
from resumable._text import counted, printable

_LOOKS = 16  # jobs read at a time: each look is a few requests to the store


def is_folder(text: str) -> bool:
    """Whether `text` names a folder of jobs: a URL ending in ``/`` or naming a bucket
    alone, or a local directory."""
    if is_url(text):
        rest = text.split("://", 1)[1]
        return text.endswith("/") or "/" not in rest
    return os.path.isdir(text)


@dataclass
class JobSummary:
    """One job under the folder, as status found it."""

    name: JobName
    snapshot: StateSnapshot | None = None
    holder: LockHolder | None = None
    error: str | None = None


def find_jobs(folder: str) -> list[JobName]:
    """The jobs under `folder`, sorted by name."""
    if is_url(folder):
        from resumable._store.object_backend import open_prefix

        objects, prefix, base = open_prefix(folder)
        names = {key for key, _ in objects.list(prefix)}
        return [JobURL(base + key) for key in sorted(_jobs_among(names, ".lease"))]
    root = Path(folder)
    found = {os.path.relpath(path, root) for path in _files_under(root)}
    return [root / name for name in sorted(_jobs_among(found, ".lock"))]


def _files_under(root: Path) -> Iterator[str]:
    for directory, _, files in os.walk(root):
        for name in files:
            yield os.path.join(directory, name)


def _jobs_among(names: set[str], lock: str) -> set[str]:
    """The job names among object (or file) names: those with a `lock` (``.lease``,
    ``.lock``) or a backup beside them, less the files of another job
    (``job.state.reset-<time>`` has a backup beside it too)."""
    candidates = {
        name[: -len(suffix)]
        for name in names
        for suffix in (lock, ".bak")
        if name.endswith(suffix) and not name.endswith("/" + suffix) and name != suffix
    }
    candidates = {name for name in candidates if name in names or name + lock in names}
    return {
        name
        for name in candidates
        if not any(name.startswith(other + ".") for other in candidates if other != name)
    }


# The files a job keeps beside its state file X, by how their names end.
_FILE_OF_A_JOB = re.compile(r"(.+)\.(bak|lock|lease|log|keys-[0-9]+|failed-[0-9]+)")
_WHAT_IT_IS = {
    "bak": "backup",
    "lock": "lock file",
    "lease": "lease",
    "log": "progress log",
    "keys": "key journal",
    "failed": "failure journal",
}


def file_of_a_job(name: str) -> tuple[str, str] | None:
    """(the job, what the file is to it) when `name` is one of the files a job keeps
    beside its state file (``X.bak``, ``X.lock``, ``X.log``, ``X.keys-<g>``...) and that
    job is there (its state file or its lock); None otherwise."""
    match = _FILE_OF_A_JOB.fullmatch(name)
    if match is None or is_url(name):
        return None
    job, ending = match.groups()
    if not (os.path.exists(job) or os.path.exists(job + ".lock")):
        return None  # a job of its own that happens to be named so
    return job, _WHAT_IT_IS[ending.split("-")[0]]


def look(name: JobName) -> JobSummary:
    """What the job `name` says: its state (as `inspect` reads it) and who holds it."""
    summary = JobSummary(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResumableWarning)  # a backup read: still counted
            summary.snapshot = inspect(name)
    except FileNotFoundError:
        pass  # a lock, no state yet: a run started and has not saved
    except (ResumableError, OSError) as error:
        summary.error = f"{name}: {error}"
    try:
        summary.holder = open_store(name).holder()
    except (ResumableError, OSError) as error:
        summary.error = summary.error or f"cannot tell whether a run holds {name}: {error}"
    return summary


@dataclass
class FolderSummary:
    """Every job of a folder, and their totals."""

    folder: str
    jobs: list[JobSummary]

    def totals(self) -> dict[str, int]:
        """The counts of the module's table."""
        return _totals(self.jobs)

    def as_json(self) -> dict[str, Any]:
        """The totals, and one object per job (``states``)."""
        return {"folder": self.folder, **self.totals(), "states": list(map(_as_json, self.jobs))}

    def as_text(self) -> str:
        """The totals as rows, then one line per job."""
        return _as_text(self.folder, self.totals(), self.jobs)

    def problems(self) -> list[str]:
        """Why a job could not be read, for each one that could not."""
        return [job.error for job in self.jobs if job.error is not None]


def summarise(folder: str) -> FolderSummary:
    """Find the jobs of `folder` and look at each, a few at a time."""
    jobs = find_jobs(folder)
    with ThreadPoolExecutor(_LOOKS) as pool:
        return FolderSummary(folder, list(pool.map(look, jobs)))


def _totals(summaries: list[JobSummary]) -> dict[str, int]:
    snapshots = [s.snapshot for s in summaries if s.snapshot is not None]
    return {
        "jobs": len(summaries),
        "finished": sum(snapshot.finished for snapshot in snapshots),
        "running": sum(s.holder is not None for s in summaries),
        "not_started": sum(s.snapshot is None and s.error is None for s in summaries),
        "items_done": sum(snapshot.position for snapshot in snapshots),
        "failed": sum(len(snapshot.failed) for snapshot in snapshots),
        "problems": sum(s.error is not None for s in summaries),
    }


def _as_text(folder: str, totals: dict[str, int], summaries: list[JobSummary]) -> str:
    rows = [
        ("jobs", f"{totals['jobs']:,}"),
        ("finished", f"{totals['finished']:,}"),
        ("running", f"{totals['running']:,}"),
        ("no state yet", f"{totals['not_started']:,}"),
        ("items done", f"{totals['items_done']:,}"),
        ("failed", counted(totals["failed"], "item")),
        ("problems", f"{totals['problems']:,}"),
    ]
    lines = [printable(folder), *(f"  {label:<13} {value}" for label, value in rows)]
    if summaries:
        lines.append("")
    lines.extend(printable(_job_line(folder, summary)) for summary in summaries)
    return "\n".join(lines)


def _job_line(folder: str, summary: JobSummary) -> str:
    """``part-7.state  1,200 done, finished, 2 failed, running: pid 42 on w-1 ...``, the
    name relative to the folder."""
    snapshot = summary.snapshot
    if summary.error is not None:
        what = f"cannot be read: {summary.error}"
    elif snapshot is None:
        what = "no state yet"
    else:
        what = f"{snapshot.position:,} done, {'finished' if snapshot.finished else 'not finished'}"
        if snapshot.failed:
            what += f", {len(snapshot.failed):,} failed"
    holder = summary.holder
    if isinstance(holder, LeaseHolder):
        what += f", running: {holder.describe()}"
    elif holder is not None:
        what += f", running: pid {holder.pid if holder.pid is not None else 'unknown'}"
    name = str(summary.name)
    if is_url(folder):
        name = name.removeprefix(folder.rstrip("/") + "/")
    else:
        name = os.path.relpath(name, folder)
    return f"  {name}  {what}"


def _as_json(summary: JobSummary) -> dict[str, Any]:
    snapshot, holder = summary.snapshot, summary.holder
    return {
        "path": str(summary.name),
        "error": summary.error,
        "position": snapshot.position if snapshot else None,
        "finished": snapshot.finished if snapshot else None,
        "failed": len(snapshot.failed) if snapshot else None,
        "saved_at": _utc(snapshot.saved_at) if snapshot else None,
        "running": holder is not None,
        "pid": holder.pid if holder else None,
        "host": holder.host if isinstance(holder, LeaseHolder) else None,
        "lease_until": _lease_until(holder),
    }


def _utc(moment: datetime) -> str:
    aware = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    return aware.astimezone(timezone.utc).isoformat()


def _lease_until(holder: LockHolder | None) -> str | None:
    if not isinstance(holder, LeaseHolder):
        return None
    return datetime.fromtimestamp(holder.expires_at, timezone.utc).isoformat()
