"""A job that writes its output to a sink, for kill -9 campaigns and stops inside an item.

    python sink_job.py STATE OUT --items N --every K [--loop iterate|keyed|map|amap]
        [--pause-at I] [--raise-at I]

Per item it writes ``<item>:`` and then one JSON line of a length that varies with the item
(up to 3 KiB, so that the sink's buffer reaches the file in the middle of items), in two
writes. It prints one flushed line per event: ``ready <position>`` inside the with block,
``end <i>`` after each item's output; ``done <position> <finished>`` after the with block.
``--pause-at I``: at item I, between the two writes, it prints ``half <I>`` and reads lines
from stdin, answering ``pong`` to each ``ping``, until another line comes (the test sends
signals meanwhile; a ``pong`` says the Python handler of a signal sent before the ``ping``
has run, even when the signal went to another thread, as with ``map``). ``--raise-at I``:
it raises RuntimeError there instead. SIGINT, SIGTERM and SIGHUP start at Python's defaults.
``--loop amap`` runs ``r.amap`` under ``asyncio.run`` (the body the same; no ``--pause-at``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import resumable


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="policy NPolicy(EVERY)")
    parser.add_argument("--loop", choices=["iterate", "keyed", "map", "amap"], default="iterate")
    parser.add_argument("--pause-at", type=int, default=-1)
    parser.add_argument("--raise-at", type=int, default=-1)
    parsed = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

    if parsed.loop == "amap":
        asyncio.run(amap_job(parsed))
        return
    with resumable.Resumable(parsed.state, policy=resumable.NPolicy(parsed.every)) as job:
        out = job.sink(parsed.out)
        print(f"ready {job.position}", flush=True)
        for item in _loop(job, parsed.loop, range(parsed.items)):
            out.write(f"{item}:")
            if item == parsed.pause_at:
                print(f"half {item}", flush=True)
                while sys.stdin.readline() == "ping\n":
                    print("pong", flush=True)  # Python's handlers ran before this call
            if item == parsed.raise_at:
                raise RuntimeError(f"item {item} fails")
            out.write_json({"item": item, "pad": "x" * (item * 397 % 3000)})
            print(f"end {item}", flush=True)
    print(f"done {job.position} {job.finished}", flush=True)


async def amap_job(parsed: argparse.Namespace) -> None:
    """The job with r.amap: results in input order, written by the body in its task."""

    async def same(item: int) -> int:
        await asyncio.sleep(0)
        return item

    policy = resumable.NPolicy(parsed.every)
    async with resumable.Resumable(parsed.state, policy=policy) as job:
        out = job.sink(parsed.out)
        print(f"ready {job.position}", flush=True)
        async for item in job.amap(same, range(parsed.items), concurrency=4):
            out.write(f"{item}:")
            if item == parsed.raise_at:
                raise RuntimeError(f"item {item} fails")
            out.write_json({"item": item, "pad": "x" * (item * 397 % 3000)})
            print(f"end {item}", flush=True)
    print(f"done {job.position} {job.finished}", flush=True)


def _loop(job: resumable.Resumable, loop: str, items: range) -> Iterator[int]:
    if loop == "iterate":
        return job.iterate(items)
    if loop == "keyed":
        return job.iterate(items, key=int)
    return job.map(abs, items, workers=2)


if __name__ == "__main__":
    main()
