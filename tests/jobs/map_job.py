"""A job that runs ``r.map`` in a pool as fast as its saves allow, for kill -9 and signals.

    python map_job.py STATE LOG --items N --every K --workers T --window W
        [--ordered] [--keyed] [--record] [--gates DIR]
        [--processes METHOD [--orphans] [--ignore-ctrl-c]] [--asyncio]

It maps over ``range(N)`` with ``NPolicy(K)``, ``workers=T``, ``window=W``, results as the
calls finish (``ordered=False``) unless ``--ordered``, progress by key (the item itself)
with ``--keyed``, failed calls recorded (``on_error="record"``) with ``--record``. The
function appends ``called <i>`` to LOG and fsyncs it before it returns; the body appends
``done <i>`` and fsyncs it, then prints ``end <i>``. Each process writes through an
O_APPEND descriptor of its own, so each line is one write, whole, in the order the writes
happened. It prints one line per event, each in one write (`say`):
``ready <position> <runs>`` once inside the with block; per result, ``saved <position>``
first when a save completed since the previous result (the file then holds `position`
items), then ``end <i>``; after the with block ``done <position> <finished>``; a stop by
ctrl+c prints ``stopped <position>`` as it leaves the with block, before the
KeyboardInterrupt goes on.

The pool is T threads, or with ``--processes`` a ``ProcessPoolExecutor(T)`` the job makes
with that multiprocessing start method ("fork", "spawn", "forkserver") and passes as
``executor=``. Each worker process prints ``worker <pid>`` as it starts, and exits as soon
as the job has died (`exit_with_job`, a recipe of docs/concurrent.md) unless ``--orphans``;
with ``--ignore-ctrl-c`` it ignores SIGINT (the other recipe there). With ``--gates DIR``,
the call for an item that has a gate ``DIR/<i>`` (a FIFO the test made) prints ``call <i>``
and waits, before its effect, until the test holds the gate open for writing.

With ``--asyncio`` the job runs ``r.amap`` under ``asyncio.run``, ``concurrency=T``, its
function an async one that awaits one turn of the event loop and then makes `call`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path

import resumable

# The log's descriptor in this process, and the folder of the gates: set by `open_log`, in
# the job and in each worker process (a function sent to a process pool cannot carry them).
_log = -1
_gates: Path | None = None


def say(line: str) -> None:
    """Print `line` in one write, so that it stays whole beside the lines of the pool's
    processes (print writes the newline apart when PYTHONUNBUFFERED is set)."""
    os.write(1, f"{line}\n".encode())


def cut_torn_line(path: Path, log: int) -> None:
    """Cut off a line the last run's kill tore: a write that crosses a page boundary can
    stop at it under SIGKILL. Its call never returned (its fsync never ran), so it is not
    a line of the log, and the next line must not be appended to it."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.ftruncate(log, data.rfind(b"\n") + 1)


def open_log(path: Path, gates: Path | None) -> None:
    """Open the log for `call` in this process, and note where its gates are."""
    global _log, _gates
    _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _gates = gates


def call(item: int) -> int:
    """The function mapped: wait at the item's gate if it has one, then log the effect."""
    if _gates is not None and (gate := _gates / str(item)).exists():
        say(f"call {item}")
        os.close(os.open(gate, os.O_RDONLY))  # returns once the test holds it open to write
    os.write(_log, f"called {item}\n".encode())
    os.fsync(_log)
    return item


def exit_with_job() -> None:
    """Run in each worker process as it starts: exit as soon as the job that made the pool
    has died. A worker does not on its own: it waits for the next call forever."""
    job = multiprocessing.parent_process()
    assert job is not None

    def watch() -> None:
        wait([job.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def start_worker(log: Path, gates: Path | None, orphans: bool, calm: bool) -> None:
    """The pool's initializer: announce the worker, open the log, watch the job, and
    leave a ctrl+c to the job if `calm`."""
    say(f"worker {os.getpid()}")
    open_log(log, gates)
    if not orphans:
        exit_with_job()
    if calm:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def process_pool(parsed: argparse.Namespace) -> Iterator[Executor | None]:
    """The process pool of ``--processes``, shut down after the job; None for threads."""
    if parsed.processes is None:
        yield None
        return
    with ProcessPoolExecutor(
        parsed.workers,
        mp_context=multiprocessing.get_context(parsed.processes),
        initializer=start_worker,
        initargs=(parsed.log, parsed.gates, parsed.orphans, parsed.ignore_ctrl_c),
    ) as executor:
        yield executor


def main() -> None:
    """Run the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="policy NPolicy(EVERY)")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--ordered", action="store_true", help="results in input order")
    parser.add_argument("--keyed", action="store_true", help="map(..., key=int)")
    parser.add_argument("--record", action="store_true", help='on_error="record"')
    parser.add_argument("--gates", type=Path, help="calls wait at DIR/<item> if it exists")
    parser.add_argument("--processes", choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--orphans", action="store_true", help="workers outlive the job")
    parser.add_argument("--ignore-ctrl-c", action="store_true", help="workers ignore SIGINT")
    parser.add_argument("--asyncio", action="store_true", help="r.amap under asyncio.run")
    parsed = parser.parse_args()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

    open_log(parsed.log, parsed.gates)
    cut_torn_line(parsed.log, _log)

    if parsed.asyncio:
        asyncio.run(amap_job(parsed))
        return
    job = resumable.Resumable(parsed.state, policy=resumable.NPolicy(parsed.every))
    with process_pool(parsed) as executor:
        try:
            with job:
                say(f"ready {job.position} {job.runs}")
                saves = job.saves
                results = job.map(
                    call,
                    range(parsed.items),
                    window=parsed.window,
                    ordered=parsed.ordered,
                    key=int if parsed.keyed else None,
                    on_error="record" if parsed.record else "raise",
                    workers=None if executor else parsed.workers,
                    executor=executor,
                )
                for item in results:
                    if job.saves != saves:
                        saves = job.saves
                        say(f"saved {job.position}")
                    os.write(_log, f"done {item}\n".encode())
                    os.fsync(_log)
                    say(f"end {item}")
        except KeyboardInterrupt:
            say(f"stopped {job.position}")
            raise
    say(f"done {job.position} {job.finished}")


async def amap_job(parsed: argparse.Namespace) -> None:
    """The job with r.amap: the calls are awaited in worker tasks."""

    async def call_async(item: int) -> int:
        await asyncio.sleep(0)  # the calls interleave
        return call(item)

    async with resumable.Resumable(parsed.state, policy=resumable.NPolicy(parsed.every)) as job:
        say(f"ready {job.position} {job.runs}")
        saves = job.saves
        results = job.amap(
            call_async,
            range(parsed.items),
            concurrency=parsed.workers,
            window=parsed.window,
            ordered=parsed.ordered,
            key=int if parsed.keyed else None,
        )
        async for item in results:
            if job.saves != saves:
                saves = job.saves
                say(f"saved {job.position}")
            os.write(_log, f"done {item}\n".encode())
            os.fsync(_log)
            say(f"end {item}")
    say(f"done {job.position} {job.finished}")


if __name__ == "__main__":
    main()
