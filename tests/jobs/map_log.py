"""The log of tests/jobs/map_job.py: ``called <i>`` when a call ran to its effect, ``done
<i>`` when a body did, one fsynced line each, in the order they happened."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from jobs.harness import Job


def log_of(job: Job) -> Path:
    """The ``called <i>`` / ``done <i>`` log of the job."""
    return job.directory / "calls.log"


def log_lines(job: Job) -> list[tuple[str, int]]:
    """The log's lines, as (``called`` or ``done``, item), in the order they were written."""
    path = log_of(job)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(what, int(item)) for what, item in (line.split() for line in lines)]


def counted(lines: list[tuple[str, int]], what: str) -> Counter[int]:
    """How many times each item has a `what` (``called`` or ``done``) line in `lines`."""
    return Counter(item for kind, item in lines if kind == what)
