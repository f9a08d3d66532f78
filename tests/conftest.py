from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.object_storage import BUCKET


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """A state file path in a fresh directory (the file itself does not exist yet)."""
    return tmp_path / "job.state"


@pytest.fixture(autouse=True, scope="session")
def outside_the_source_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests, and the processes they start, work in an empty folder of their own.

    ``python -c`` and ``python -m`` put the working directory first on the child's
    ``sys.path``: started from the repository root, such a child would import the source
    tree beside the tests instead of the package installed for `sys.executable`, which
    the test process imports (under nox, a copy in site-packages).
    """
    previous = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_as_at_a_terminal() -> Iterator[None]:
    """SIGINT handled as Python handles it at a terminal, however the run was started.

    A shell without job control starts background jobs with SIGINT ignored (nohup, `&` in
    a script, some CI runners), and Python then leaves it ignored; the library keeps an
    ignored signal ignored, as it should. The tests are about ctrl+c at a terminal, so
    they run with Python's own handler, and so do the programs they start (exec resets a
    caught signal to its default, from which Python installs its handler again).
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(autouse=True, scope="session")
def hangup_as_at_a_terminal() -> Iterator[None]:
    """SIGHUP with its default action for the programs the tests start, however the run
    was started.

    ``nohup`` (and some runners of background jobs) starts the run with SIGHUP ignored,
    and an ignored signal stays ignored across exec: a child stopped by SIGHUP would go on,
    and the library keeps an ignored signal ignored, as it should. The tests are about a
    hangup at a terminal, so the run and the programs it starts take it by default.
    """
    previous = signal.getsignal(signal.SIGHUP)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


@pytest.fixture(autouse=True)
def strace_or_skip(request: pytest.FixtureRequest) -> None:
    """A test marked `strace` needs strace on Linux: without it, skip; under ``CI=true``,
    fail, so that CI never passes without running the fault tests (.ci/run installs it)."""
    if request.node.get_closest_marker("strace") is None:
        return
    if shutil.which("strace") is not None and sys.platform.startswith("linux"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("strace is missing, and CI=true: CI must run the fault-injection tests")
    pytest.skip("needs strace, on Linux")


# -- object storage: a moto S3 server on localhost, and job URLs on each backend --------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free localhost port, with one bucket; obstore reaches it
    through the environment (``AWS_ENDPOINT_URL``...) as a user's would."""
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    endpoint = None
    for line in server.stdout:  # the server says where it listens once it does
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            endpoint = found.group(1)
            break
    assert endpoint is not None, "the moto server ended before it listened"
    # Its request log must not fill the pipe and stop it.
    drain = threading.Thread(target=server.stdout.read)
    drain.start()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }.items():
            env.setenv(name, value)
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")):
            pass
        try:
            yield endpoint
        finally:
            server.terminate()
            server.wait()
            drain.join()
            server.stdout.close()


@pytest.fixture(params=["memory", "file", "s3"])
def job_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new job's state object on each backend."""
    unique = uuid.uuid4().hex
    if request.param == "memory":
        return f"memory://{unique}/job.state"
    if request.param == "file":
        return f"file://{tmp_path}/job.state"
    request.getfixturevalue("s3_server")
    return f"s3://{BUCKET}/{unique}/job.state"


@pytest.fixture(params=["file", "s3"])
def shared_job_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new job on a backend that other processes see."""
    if request.param == "file":
        return f"file://{tmp_path}/job.state"
    request.getfixturevalue("s3_server")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}/job.state"
