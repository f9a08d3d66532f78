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

The output is a sink (``r.sink``): each save flushes it to the disk and records its length
beside the progress, and each run cuts it back to that length before the loop starts. So
whatever stopped the last run (ctrl+c, a second ctrl+c inside a page, ``kill -9``), the
output holds one line per page done, and the pages that run again are written once
(docs/output-files.md).

With ``--workers``, ``r.map`` runs the fetches in a pool of threads and hands their
results to the loop body in page order (its default, ``ordered=True``); the body writes
the lines, in this thread, as one page at a time does. (``ordered=False`` would keep the
output exact too, in the order the pages finished.) A job goes on the way it started:
``r.map`` keeps its progress as a watermark, which ``r.iterate`` refuses, and the other way
round; run it again with ``--workers`` if it started with it, without if not (any number
of workers will do), or start over with ``--restart``.

An output shorter than the state says (deleted, edited, restored from an older copy) stops
the script with an error that names both lengths; run it with ``--restart`` to start over
(the old output is moved aside).

Exit status: 0 when the job is finished, 130 after ctrl+c; a SIGTERM ends it as SIGTERM does
(a shell shows 143), after the save. Either way one line on stderr says how far it got. The
first ctrl+c or SIGTERM lets the pages in flight finish; a second one stops at once. More in
docs/examples.md.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--restart", action="store_true", help="start over (the old output is moved aside)"
    )
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

    with Resumable(state, policy=NPolicy(save_every), restart=restart) as r:
        output = r.sink(out)  # cut back to the pages done, before the loop
        # Asked for before anything is said: it checks that this is the job's input (a
        # finished job's too), and raises InputChangedError for another --pages.
        fetched: Iterator[tuple[int, dict[str, Any]]]
        if workers:
            # Results in page order (map's default), written by the body in this thread.
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
            output.write(json.dumps({"page": page, **result}) + "\n")
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


if __name__ == "__main__":
    sys.exit(main())
