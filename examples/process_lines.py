"""Transform a large text file line by line; stop it and run it again.

    python examples/process_lines.py big.txt --out counted.tsv --state lines.state

For each line of the input it appends one line to ``--out``: the line's number, its number
of words and the line upper-cased, separated by tabs. The loop runs over the open file
itself (``r.iterate(lines)``): on a rerun the library reads and discards the lines already
done, without running the loop body for them. Press ctrl+c, or kill it any way you like,
and run the same command again: the output ends up the same, byte for byte, as that of one
uninterrupted run. Change neither the input nor the output between runs.

Keeping the output and the state in agreement
---------------------------------------------
The state file says how many lines are done; the output file holds their results. After
``kill -9`` the state holds the last *save*, and lines processed after it have their
results in the output but run again on the next run: appended again, they would be in the
output twice. A second ctrl+c can likewise stop after a result was written, or half
written, but before its line counted as done.

The rule this script follows: **the output holds one line per input line, in order, and
every line reaches the operating system (`flush`) before its input line counts as done.**
(Without the flush, Python's buffer could hold results of lines a save already counts, and
``kill -9`` would lose them.) So whatever stopped the last run, the output begins with one
complete line for each of the ``r.position`` lines done, and anything after them belongs to
lines that will run again. On start, inside the ``with`` block (so with the job's lock
held), `open_after_lines` keeps the first ``r.position`` lines of the output and cuts off
the rest.

A byte offset kept in ``r.state`` would spare reading the output's done part on resume,
but ``r.state`` is changed by the loop body while the position moves when the loop takes
the next line: a second ctrl+c between the two would save an offset that counts a line
that is not done. Counting lines ties the output to the position the library saved.

If the output has *fewer* complete lines than the state counts done, it lost lines (it was
deleted or edited, or a power cut dropped writes never flushed to the disk: the library
fsyncs its state file, this script does not fsync the output). The script then stops with
an error; run it with ``--restart``.

Exit status: 0 when the file is done, 130 after ctrl+c; a SIGTERM ends it as SIGTERM does (a
shell shows 143), after the save. Either way one line on stderr says how far it got. The
first ctrl+c or SIGTERM lets the line in flight finish; a second one stops at once. More in
docs/examples.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from resumable import NPolicy, Resumable, ResumableError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job with the command line `argv`; return the exit status."""
    parser = argparse.ArgumentParser(description="Transform a text file line by line, resumably.")
    parser.add_argument("input", type=Path, help="a UTF-8 text file")
    parser.add_argument("--out", type=Path, default=Path("counted.tsv"))
    parser.add_argument("--state", type=Path, default=Path("lines.state"))
    parser.add_argument("--delay", type=float, default=0.001, help="seconds of 'work' per line")
    parser.add_argument("--save-every", type=int, default=1000, help="save after N lines")
    parser.add_argument("--report-every", type=int, default=1000, help="print every N lines")
    parser.add_argument("--restart", action="store_true", help="start over, output included")
    args = parser.parse_args(argv)
    try:
        process(
            args.input,
            args.out,
            args.state,
            delay=args.delay,
            save_every=args.save_every,
            report_every=args.report_every,
            restart=args.restart,
        )
    except KeyboardInterrupt:
        return 130  # the library saved and said so on stderr; 130 is ctrl+c's exit status
    except ResumableError as error:  # e.g. another run holds the job, or the input shrank
        print(error, file=sys.stderr)
        return 1
    return 0


def process(
    source: Path,
    out: Path,
    state: Path,
    *,
    delay: float,
    save_every: int,
    report_every: int,
    restart: bool,
) -> None:
    """Write one result line per line of `source` to `out`, continuing the job in `state`."""
    with (
        Resumable(state, policy=NPolicy(save_every), restart=restart) as r,
        open_after_lines(out, r.position, state) as output,
        open(source, encoding="utf-8") as lines,
    ):
        # Asked for before anything is said: it checks that this is the job's input (a
        # finished job's too), and raises InputChangedError for another file.
        todo = r.iterate(lines)
        if r.finished:
            print(f"Already finished: {r.position} lines in {out}. Use --restart to redo.")
            return
        if r.position:
            print(f"Resuming after line {r.position} of {source} (run {r.runs}).", flush=True)
        else:
            print(f"Starting: {source} into {out}.", flush=True)
        for number, line in enumerate(todo, start=r.position + 1):
            time.sleep(delay)  # stands for real work
            text = line.rstrip("\n")
            output.write(f"{number}\t{len(text.split())}\t{text.upper()}\n".encode())
            output.flush()  # in the operating system before the line counts as done
            if number % report_every == 0:
                print(f"{number} lines done", flush=True)
    print(f"Done: {r.position} lines in {out}, over {r.runs} run(s).")


def open_after_lines(path: Path, keep: int, state: Path) -> io.BufferedRandom:
    """Open `path` to append after its first `keep` lines, cutting off whatever follows.

    Raises SystemExit when the file has fewer than `keep` complete lines.
    """
    output = open(path, "a+b")  # noqa: SIM115 (returned open, closed by the caller's with)
    try:
        output.seek(0)
        # Reads the done part of the output once per run, as iterating the input file
        # reads its done part.
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
