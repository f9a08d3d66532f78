"""The scripts in examples/, run for real: stopped by a real signal, run again to the end, and
compared byte for byte with the output of one uninterrupted run.

The scraper fetches from a `ThreadingHTTPServer` in a thread of the test, which holds one
page back until the test has sent its signal: the scraper is then inside that page, so where
it stops is known exactly. `process_lines.py` reads its input from a named pipe that the test
fills a few hundred lines at a time: the job waits for the next line where the test stopped
filling. No sleep stands in for synchronisation.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import resumable

from jobs.harness import TIMEOUT, Child, Finished, child_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OUT = "out.txt"
STATE = "job.state"

# The examples reach the test's server directly even where a proxy is configured.
ENV = {**child_env(), "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}

STOPS = [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),  # the examples catch KeyboardInterrupt
    pytest.param(signal.SIGTERM, -signal.SIGTERM, id="SIGTERM"),  # re-delivered after the save
    pytest.param(signal.SIGKILL, -signal.SIGKILL, id="SIGKILL"),
]

PAGES = 40
HELD_PAGE = 25  # the site holds this page back until the test has sent its signal
SCRAPER_SAVE_EVERY = 7  # so a kill -9 inside page 25 finds pages 1-21 saved, 22-24 not
# --workers 2: r.map's window is then 8 (4 per worker), so at most pages 25-32 are in flight
# when page 25 is held, and the first ctrl+c ends the job before its last page (40).
WORKERS = 2
WINDOW = 4 * WORKERS

LINES = 2000
FED_LINES = 300  # lines in the pipe when the test sends its signal
LINES_SAVE_EVERY = 250  # so a kill -9 after line 300 finds 250 lines saved, 50 not
WORDS = ["alpha", "brown", "café", "dog", "élan", "fox", "jumps", "lazy", "quick", "straße"]


@dataclass(frozen=True)
class Example:
    """An example script with its options, and the directory of one uninterrupted run."""

    script: Path
    options: tuple[str, ...]
    finished: Path

    @property
    def reference(self) -> bytes:
        """The output of one uninterrupted run."""
        return (self.finished / OUT).read_bytes()

    def start(self, directory: Path, *options: str) -> Child:
        """Start the example on the job whose output and state file are in `directory`."""
        return Child(
            self.script,
            *self.options,
            "--out",
            directory / OUT,
            "--state",
            directory / STATE,
            *options,
            env=ENV,
        )

    def run(self, directory: Path, *options: str) -> Finished:
        """Run the example on the job in `directory` until it exits."""
        with self.start(directory, *options) as child:
            return child.finish()


def run_once(script: Path, options: tuple[str, ...], directory: Path) -> Example:
    """Run `script` uninterrupted in `directory`; the `Example` that remembers its output."""
    example = Example(script, options, directory)
    ended = example.run(directory)
    assert ended.returncode == 0, ended.stderr
    return example


def read_until(child: Child, expected: str) -> None:
    """Read the child's stdout up to the line `expected`."""
    while (line := child.read_line()) != expected:
        if line is None:
            raise AssertionError(child.describe(f"stdout ended before {expected!r}"))


def read_until_page(child: Child, number: int) -> None:
    """Read the scraper's stdout up to its line for page `number` (written and flushed)."""
    while True:
        line = child.read_line()
        if line is None:
            raise AssertionError(child.describe(f"stdout ended before page {number}"))
        if line.startswith(f"page {number}: "):
            return


def output_lines(directory: Path) -> list[bytes]:
    """The lines of the output in `directory`, with their line ends."""
    return (directory / OUT).read_bytes().splitlines(keepends=True)


def append_half_a_line(directory: Path) -> None:
    """Append to the output in `directory` what a kill inside a write of a line leaves."""
    with (directory / OUT).open("ab") as output:
        output.write(b"half a li")


def copy_job(source: Path, destination: Path) -> None:
    """Copy the output and state file of the job in `source` into `destination`."""
    for name in (OUT, STATE):
        shutil.copyfile(source / name, destination / name)


# -- the web site -----------------------------------------------------------------------


def page(number: int) -> tuple[int, str]:
    """The site's /page/<number>: every 20th page is missing, the others differ in words."""
    if number % 20 == 0:
        return 404, "<html><head><title>Not found</title></head></html>"
    words = " ".join(WORDS[(number * k) % len(WORDS)] for k in range(number % 13 + 2))
    title = f"Page {number}: {WORDS[number % len(WORDS)]}"
    return 200, f"<html><head><title>{title}</title></head><body><p>{words}</p></body></html>"


class Site:
    """The test's web site on 127.0.0.1, served from a thread; it can hold one page back."""

    def __init__(self) -> None:
        self.held: int | None = None
        self.requested = threading.Event()  # the held page was asked for
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @contextmanager
    def holding(self, number: int) -> Iterator[None]:
        """While the block runs, a request for page `number` waits; it is answered after."""
        self.requested.clear()
        self.release.clear()
        self.held = number
        try:
            yield
        finally:
            self.held = None
            self.release.set()

    def wait_until_requested(self) -> None:
        """Return once the held page has been asked for: the scraper is inside that page."""
        assert self.requested.wait(TIMEOUT), "the held page was never requested"


def handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    """The request handler class of `site`."""

    class PageHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            match = re.fullmatch(r"/page/(\d+)", self.path)
            status, html = (404, "") if match is None else page(int(match[1]))
            if match is not None and int(match[1]) == site.held:
                site.requested.set()
                site.release.wait(TIMEOUT)
            body = html.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the scraper was killed while its page was held

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output quiet

    return PageHandler


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The test's web site, running for the tests of this module."""
    served = Site()
    served.thread.start()
    try:
        yield served
    finally:
        served.release.set()
        served.server.shutdown()
        served.server.server_close()
        served.thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def scraper(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Example:
    """examples/scraper.py on the test's site, and one uninterrupted run of it."""
    pages, every = str(PAGES), str(SCRAPER_SAVE_EVERY)
    options = ("--base-url", site.url, "--pages", pages, "--delay", "0", "--save-every", every)
    return run_once(EXAMPLES / "scraper.py", options, tmp_path_factory.mktemp("scraped"))


@pytest.fixture(scope="module")
def threaded(scraper: Example) -> Example:
    """examples/scraper.py fetching with r.map in WORKERS threads; the same reference."""
    return replace(scraper, options=(*scraper.options, "--workers", str(WORKERS)))


# -- the text file ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file of a few thousand lines of 0 to 12 words, some of them not ASCII."""
    chosen = random.Random(5)
    lines = (" ".join(chosen.choices(WORDS, k=chosen.randrange(13))) for _ in range(LINES))
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def lines_options(source: Path) -> tuple[str, ...]:
    """The options of examples/process_lines.py for the input `source`."""
    every = ("--save-every", str(LINES_SAVE_EVERY), "--report-every", "50")
    return (str(source), "--delay", "0", *every)


@pytest.fixture(scope="module")
def process_lines(text: Path, tmp_path_factory: pytest.TempPathFactory) -> Example:
    """examples/process_lines.py on the test's text file, and one uninterrupted run of it."""
    script = EXAMPLES / "process_lines.py"
    return run_once(script, lines_options(text), tmp_path_factory.mktemp("processed"))


# -- the tests --------------------------------------------------------------------------


def test_the_reference_runs_wrote_one_line_per_item(
    scraper: Example, process_lines: Example, text: Path
) -> None:
    """What the other tests compare with is the whole job, as the examples document it."""
    scraped = output_lines(scraper.finished)
    assert len(scraped) == PAGES
    # Six words: the title's three, and "alpha brown café".
    assert scraped[0] == b'{"page": 1, "status": 200, "title": "Page 1: brown", "words": 6}\n'
    assert scraped[19] == b'{"page": 20, "status": 404}\n'
    lines = text.read_text(encoding="utf-8").splitlines()
    expected = "".join(
        f"{n}\t{len(line.split())}\t{line.upper()}\n" for n, line in enumerate(lines, 1)
    )
    assert process_lines.reference == expected.encode()
    assert "CAFÉ".encode() in process_lines.reference


@pytest.mark.parametrize(("signum", "status"), STOPS)
def test_the_scraper_stopped_by_a_signal_then_run_again_writes_what_one_run_writes(
    signum: int, status: int, site: Site, scraper: Example, tmp_path: Path
) -> None:
    with scraper.start(tmp_path) as child:
        with site.holding(HELD_PAGE):
            child.expect(f"Starting: {PAGES} pages from {site.url}.")
            site.wait_until_requested()
            child.send_signal(signum)
        stopped = child.finish()
    assert stopped.returncode == status, stopped.stderr
    saved = resumable.inspect(tmp_path / STATE).position
    if signum == signal.SIGKILL:
        assert saved == 21  # the last save; pages 22-24 were written after it
        # The sink holds what the last save counts (and perhaps some of what came after).
        assert output_lines(tmp_path)[:saved] == output_lines(scraper.finished)[:saved]
        append_half_a_line(tmp_path)
    else:
        assert saved == HELD_PAGE  # the page in flight finished, then the job stopped
        assert stopped.stdout[-1].startswith(f"page {HELD_PAGE}: 200")
        assert f"stopped by {signal.Signals(signum).name} after {saved} items" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        assert output_lines(tmp_path) == output_lines(scraper.finished)[:saved]

    resumed = scraper.run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout[0] == f"Resuming at page {saved + 1} of {PAGES} (run 2)."
    assert (tmp_path / OUT).read_bytes() == scraper.reference


def test_the_scraper_with_workers_writes_what_one_page_at_a_time_writes(
    threaded: Example, tmp_path: Path
) -> None:
    ended = threaded.run(tmp_path)
    assert ended.returncode == 0, ended.stderr
    assert (tmp_path / OUT).read_bytes() == threaded.reference


@pytest.mark.parametrize(("signum", "status"), STOPS)
def test_the_scraper_with_workers_stopped_by_a_signal_then_run_again_writes_what_one_run_writes(
    signum: int, status: int, site: Site, threaded: Example, tmp_path: Path
) -> None:
    """r.map fetches ahead of the body: page 25 held, pages after it may be fetched
    already. The body has written page 24 and waits for 25 when the signal comes."""
    with threaded.start(tmp_path) as child:
        with site.holding(HELD_PAGE):
            child.expect(f"Starting: {PAGES} pages from {site.url}.")
            read_until_page(child, HELD_PAGE - 1)
            site.wait_until_requested()
            child.send_signal(signum)
        stopped = child.finish()
    assert stopped.returncode == status, stopped.stderr
    saved = resumable.inspect(tmp_path / STATE).position
    if signum == signal.SIGKILL:
        assert saved == 21  # the last save; pages 22-24 were written after it
        assert output_lines(tmp_path)[:saved] == output_lines(threaded.finished)[:saved]
        append_half_a_line(tmp_path)
    else:
        # The pages in flight finished and were written: page 25 and those submitted
        # after it before the signal came, at most the window.
        assert HELD_PAGE <= saved < HELD_PAGE + WINDOW
        assert stopped.stdout[-1].startswith(f"page {saved}: ")
        assert f"stopped by {signal.Signals(signum).name} after {saved} items" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        assert output_lines(tmp_path) == output_lines(threaded.finished)[:saved]

    resumed = threaded.run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout[0] == f"Resuming at page {saved + 1} of {PAGES} (run 2)."
    assert (tmp_path / OUT).read_bytes() == threaded.reference


def test_the_scraper_with_workers_stopped_many_times_writes_what_one_run_writes(
    site: Site, threaded: Example, tmp_path: Path
) -> None:
    """kill -9, ctrl+c, kill -9, ctrl+c, each inside a later page, then a run to the end."""
    # Each held page is past where the stop before may have left the job (a ctrl+c: up to
    # the window past its held page), and the last ctrl+c leaves pages to do.
    stops = [(9, signal.SIGKILL), (16, signal.SIGINT), (25, signal.SIGKILL), (32, signal.SIGINT)]
    saved = 0
    for run, (held, signum) in enumerate(stops, 1):
        with threaded.start(tmp_path) as child:
            with site.holding(held):
                read_until_page(child, held - 1)
                site.wait_until_requested()
                child.send_signal(signum)
            stopped = child.finish()
        if run > 1:
            # (A run killed before its first save is not counted in the runs.)
            assert child.seen[0].startswith(f"Resuming at page {saved + 1} of {PAGES} (run ")
        saved = resumable.inspect(tmp_path / STATE).position
        assert output_lines(tmp_path)[:saved] == output_lines(threaded.finished)[:saved]
        if signum == signal.SIGKILL:
            assert stopped.returncode == -signal.SIGKILL
            assert len(output_lines(tmp_path)) >= saved
            append_half_a_line(tmp_path)
        else:
            assert stopped.returncode == 130, stopped.stderr
            assert held <= saved < held + WINDOW
    resumed = threaded.run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout[0].startswith(f"Resuming at page {saved + 1} of {PAGES} (run ")
    assert (tmp_path / OUT).read_bytes() == threaded.reference


def test_a_job_started_one_page_at_a_time_is_refused_with_workers_and_left_alone(
    scraper: Example, threaded: Example, tmp_path: Path
) -> None:
    copy_job(scraper.finished, tmp_path)
    refused = threaded.run(tmp_path)
    assert refused.returncode == 1
    assert "a job keeps the kind of progress it started with" in refused.stderr
    assert (tmp_path / OUT).read_bytes() == scraper.reference


@pytest.mark.parametrize(("signum", "status"), STOPS)
def test_process_lines_stopped_by_a_signal_then_run_again_writes_what_one_run_writes(
    signum: int, status: int, text: Path, process_lines: Example, tmp_path: Path
) -> None:
    source = tmp_path / "input.txt"
    os.mkfifo(source)
    lines = text.read_bytes().splitlines(keepends=True)
    example = Example(process_lines.script, lines_options(source), process_lines.finished)
    # Opened read-write, the pipe never blocks the test and never ends for the job.
    feeder = os.open(source, os.O_RDWR)
    try:
        os.write(feeder, b"".join(lines[:FED_LINES]))
        with example.start(tmp_path) as child:
            child.expect(f"Starting: {source} into {tmp_path / OUT}.")
            read_until(child, f"{FED_LINES} lines done")
            child.send_signal(signum)
            os.write(feeder, lines[FED_LINES])  # for the job, if it waits for that line
            stopped = child.finish()
    finally:
        os.close(feeder)
    assert stopped.returncode == status, stopped.stderr
    saved = resumable.inspect(tmp_path / STATE).position
    if signum == signal.SIGKILL:
        assert saved == 250  # the last save; lines 251-300 were written after it
        assert output_lines(tmp_path)[:saved] == output_lines(process_lines.finished)[:saved]
        append_half_a_line(tmp_path)
    else:
        # The signal came in the tail of line 300 or while the job waited for line 301:
        # either way that line finished, then the job stopped.
        assert saved in (FED_LINES, FED_LINES + 1)
        assert f"stopped by {signal.Signals(signum).name} after {saved} items" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        assert output_lines(tmp_path) == output_lines(process_lines.finished)[:saved]

    source.unlink()  # the same text, now as a plain file
    shutil.copyfile(text, source)
    resumed = example.run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout[0] == f"Resuming after line {saved} of {source} (run 2)."
    assert (tmp_path / OUT).read_bytes() == process_lines.reference


@pytest.mark.parametrize("name", ["scraper", "process_lines"])
def test_a_finished_job_run_again_changes_nothing(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    example: Example = request.getfixturevalue(name)
    copy_job(example.finished, tmp_path)
    again = example.run(tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout[0].startswith("Already finished:")
    assert (tmp_path / OUT).read_bytes() == example.reference


def test_a_finished_process_lines_job_given_another_shorter_file_is_refused(
    process_lines: Example, text: Path, tmp_path: Path
) -> None:
    copy_job(process_lines.finished, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("".join(text.read_text(encoding="utf-8").splitlines(True)[1:50]))
    refused = Example(process_lines.script, lines_options(other), tmp_path).run(tmp_path)
    assert refused.returncode == 1
    assert "was saved for another input" in refused.stderr
    assert not any(line.startswith("Already finished") for line in refused.stdout)
    assert (tmp_path / OUT).read_bytes() == process_lines.reference  # left alone


@pytest.mark.parametrize("name", ["scraper", "process_lines"])
def test_an_output_shorter_than_the_state_says_is_refused_and_restart_redoes_it(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    example: Example = request.getfixturevalue(name)
    copy_job(example.finished, tmp_path)
    kept = output_lines(tmp_path)[:-3]
    shorter = b"".join(kept) + b"half a line"
    (tmp_path / OUT).write_bytes(shorter)

    refused = example.run(tmp_path)
    assert refused.returncode == 1
    assert f"sink {tmp_path / OUT} holds {len(shorter):,} bytes, but" in refused.stderr
    assert f"records {len(example.reference):,} bytes of output in it" in refused.stderr
    assert (tmp_path / OUT).read_bytes() == shorter  # left as it was

    redone = example.run(tmp_path, "--restart")
    assert redone.returncode == 0, redone.stderr
    assert (tmp_path / OUT).read_bytes() == example.reference
    (aside,) = tmp_path.glob(f"{OUT}.reset-*")  # the old output, kept
    assert aside.read_bytes() == shorter


def test_a_second_run_of_a_job_in_progress_is_refused_and_leaves_the_output_alone(
    site: Site, scraper: Example, tmp_path: Path
) -> None:
    with scraper.start(tmp_path) as first:
        with site.holding(3):
            site.wait_until_requested()  # pages 1 and 2 are written (to the sink's buffer)
            before = (tmp_path / OUT).read_bytes()
            second = scraper.run(tmp_path)
            assert second.returncode == 1
            assert f"{tmp_path / STATE} is in use by process {first.pid}" in second.stderr
            assert (tmp_path / OUT).read_bytes() == before
        finished = first.finish()
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / OUT).read_bytes() == scraper.reference
