"""A job named by a store URL (``s3://bucket/crawl/job.state``), beside jobs named by path.

A URL is kept as the text it was given: a `Path` would fold its ``//`` (``s3:/bucket``).
`JobURL` is that text with the few parts of a path that messages and displays use
(`name`, `parent`); `is_url` tells a URL from a local path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeGuard

# A scheme of two letters or more, then "://": a Windows drive ("C:\\...") is no URL.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(name: object) -> TypeGuard[str]:
    """Whether `name` is a store URL (a str with a scheme), not a local path."""
    return isinstance(name, str) and _URL.match(name) is not None


class JobURL(str):
    """The URL of a job's state object, as given: a str, with `name` and `parent`."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The state object's last part: ``job.state``."""
        return self.rsplit("/", 1)[-1]

    @property
    def parent(self) -> JobURL:
        """The URL of the prefix that holds it: ``s3://bucket/crawl``."""
        return JobURL(self.rsplit("/", 1)[0])


# What a job is named by: a local path (symlinks followed), or a store URL.
JobName = Path | JobURL


def local_anchor(job: JobName) -> Path:
    """A local path that stands for the job where local files are named relative to its
    state file (the sinks): the state file itself, or, for a URL, a name in the root
    folder, so that a URL job's sinks are recorded by their absolute paths."""
    if isinstance(job, JobURL):
        return Path(os.path.abspath(os.sep)) / job.name
    return job
