"""Fetch numbered pages from a web site, one JSON line per page; stop it and run it again.

    python examples/scraper.py --base-url http://127.0.0.1:8000 --pages 200 \\
        --out results.jsonl --state scrape.state

It fetches ``BASE_URL/page/1`` to ``BASE_URL/page/PAGES`` with the standard library
(`urllib.request`) and appends one line per page to ``--out``:
``{"page": 17, "status": 200, "title": "...", "words": 42}``, or the HTTP status alone for a
page that failed with one; with ``--workers N``, N pages at once, in threads, by ``r.map``.
Press ctrl+c, or kill it any way you like, and run the same command again: it carries on
with the first page not done, and the output ends up the same, byte for byte, as that of one
uninterrupted run.

Keeping the output and the state in agreement
---------------------------------------------
The state file says how many pages are done; the output file holds their lines. The two
are written at different moments, so after a stop they can disagree, and the output must
be brought back to what the state says:

- ``kill -9``, a crash: the state file holds the last *save*. Pages finished after it have
  their lines in the output, but they are not done as far as the state knows, so they run
  again on the next run and would be written twice.
- A second ctrl+c stops inside a page: its line may be in the output, or half of it,
  while the page is not done.

The rule this script follows: **the output holds one line per page, in page order, and every
line reaches the operating system (`flush`) before its page counts as done.** (Without the
flush, Python's buffer could hold lines of pages a save already counts, and ``kill -9``
would lose them.) So whatever stopped the last run, the output begins with one complete line
for each of the ``r.position`` pages done, and anything after those lines belongs to pages
that will run again. On start, inside the ``with`` block (so with the job's lock held),
`open_after_lines` keeps the first ``r.position`` lines and cuts off the rest; the loop then
appends from there.

Counting lines ties the output to the position the library saved itself. Keeping a byte
offset in ``r.state`` instead is cheaper on resume, but ``r.state`` is changed by your loop
body while the position moves when the loop takes the next item: a second ctrl+c landing
between the two saves an offset that already counts a page that is not done.

With ``--workers``, ``r.map`` runs the fetches in a pool of threads and hands their
results to the loop body in page order (its default, ``ordered=True``), so the body writes
the lines in page order, as one page at a time does, and the rule holds unchanged. Results
as the fetches finish (``ordered=False``) would break it: the pages done would no longer be
the first ``r.position`` lines. A job goes on the way it started: ``r.map`` keeps its
progress as a watermark, which ``r.iterate`` refuses, and the other way round; run it again
with ``--workers`` if it started with it, without if not (any number of workers will do),
or start over with ``--restart``.

If the output has *fewer* complete lines than pages done, it lost lines the state counts
(it was deleted or edited, or a power cut dropped writes that were never flushed to the
disk: the library fsyncs its state file, this script does not fsync the output). The
script then stops with an error instead of guessing; run it with ``--restart``.

Exit status: 0 when the job is finished, 130 after ctrl+c; a SIGTERM ends it as SIGTERM does
(a shell shows 143), after the save. Either way one line on stderr says how far it got. The
first ctrl+c or SIGTERM lets the pages in flight finish; a second one stops at once. More in
docs/examples.md.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from resumable import NPolicy, Resumable, ResumableError

TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
TAG = re.compile(r"<[^>]*>")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scraper with the command line `argv`; return the exit status."""
    parser = argparse.ArgumentParser(description="Fetch numbered pages, resumably.")
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--pages", type=int, default=200, help="fetch pages 1 to PAGES")
    parser.add_argument("--out", type=Path, default=Path("results.jsonl"))
    parser.add_argument("--state", type=Path, default=Path("scrape.state"))
    parser.add_argument("--delay", type=float, default=0.2, help="seconds between requests")
    parser.add_argument("--save-every", type=int, default=10, help="save after N pages")
    parser.add_argument(
        "--workers", type=int, default=0, help="fetch N pages at once, in threads (r.map)"
    )
    parser.add_argument("--restart", action="store_true", help="start over, output included")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers takes a number >= 0, got {args.workers}")
    try:
        scrape(
            args.base_url.rstrip("/"),
            args.pages,
            args.out,
            args.state,
            delay=args.delay,
            save_every=args.save_every,
            workers=args.workers,
            restart=args.restart,
        )
    except KeyboardInterrupt:
        return 130  # the library saved and said so on stderr; 130 is ctrl+c's exit status
    except ResumableError as error:  # e.g. another run holds the job
        print(error, file=sys.stderr)
        return 1
    return 0


def scrape(
    base_url: str,
    pages: int,
    out: Path,
    state: Path,
    *,
    delay: float,
    save_every: int,
    workers: int,
    restart: bool,
) -> None:
    """Fetch pages 1 to `pages` into `out`, continuing the job saved in `state`; `workers`
    pages at once with ``r.map`` (0: one at a time with ``r.iterate``)."""

    def fetch_page(page: int) -> tuple[int, dict[str, Any]]:
        time.sleep(delay)  # be polite to the server (with --workers: each thread is)
        return page, fetch(f"{base_url}/page/{page}")

    with (
        Resumable(state, policy=NPolicy(save_every), restart=restart) as r,
        open_after_lines(out, r.position, state) as output,
    ):
        # Asked for before anything is said: it checks that this is the job's input (a
        # finished job's too), and raises InputChangedError for another --pages.
        fetched: Iterator[tuple[int, dict[str, Any]]]
        if workers:
            # Results in page order (map's default): see "Keeping the output and the state
            # in agreement" above.
            fetched = r.map(fetch_page, range(1, pages + 1), workers=workers)
        else:
            # One page at a time, fetched in this thread (the built-in map, lazy).
            fetched = map(fetch_page, r.iterate(range(1, pages + 1)))
        if r.finished:
            print(f"Already finished: {r.position} pages in {out}. Use --restart to redo.")
            return
        if r.position:
            print(f"Resuming at page {r.position + 1} of {pages} (run {r.runs}).", flush=True)
        else:
            print(f"Starting: {pages} pages from {base_url}.", flush=True)
        for page, result in fetched:
            output.write(json.dumps({"page": page, **result}).encode() + b"\n")
            output.flush()  # in the operating system before the page counts as done
            print(f"page {page}: {result['status']} {result.get('title', '')}", flush=True)
    print(f"Done: {pages} pages in {out}, over {r.runs} run(s).")


def fetch(url: str) -> dict[str, Any]:
    """Fetch `url`: its status, title and number of words, or the status of an HTTP error.

    Any other failure (the server is down, a timeout) raises: the loop stops, the page
    is not done, and the next run fetches it again.
    """
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            html = response.read().decode(response.headers.get_content_charset() or "utf-8")
            status = response.status
    except urllib.error.HTTPError as error:
        return {"status": error.code}
    title = TITLE.search(html)
    return {
        "status": status,
        "title": title[1].strip() if title else None,
        "words": len(TAG.sub(" ", html).split()),
    }


def open_after_lines(path: Path, keep: int, state: Path) -> io.BufferedRandom:
    """Open `path` to append after its first `keep` lines, cutting off whatever follows.

    Raises SystemExit when the file has fewer than `keep` complete lines.
    """
    output = open(path, "a+b")  # noqa: SIM115 (returned open, closed by the caller's with)
    try:
        output.seek(0)
        # Reads the done part of the output once per run, as iterating a file reads the
        # done part of the input.
        for complete in range(keep):
            if not output.readline().endswith(b"\n"):
                raise SystemExit(
                    f"{path} has {complete} complete lines, but {state} counts {keep} done: "
                    "the output lost lines the state counts (deleted, edited, or not on the "
                    "disk after a power cut). Run again with --restart to start over."
                )
        output.truncate(output.tell())
    except BaseException:
        output.close()
        raise
    return output


if __name__ == "__main__":
    sys.exit(main())
