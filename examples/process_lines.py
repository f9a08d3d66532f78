"""Transform a large text file line by line; stop it and run it again.

    python examples/process_lines.py big.txt --out counted.tsv --state lines.state

For each line of the input it appends one line to ``--out``: the line's number, its number
of words and the line upper-cased, separated by tabs. The loop runs over the open file
itself (``r.iterate(lines)``): on a rerun the library reads and discards the lines already
done, without running the loop body for them. Press ctrl+c, or kill it any way you like,
and run the same command again: the output ends up the same, byte for byte, as that of one
uninterrupted run. Change neither the input nor the output between runs.

The output is a sink (``r.sink``): each save flushes it to the disk and records its length
beside the progress, and each run cuts it back to that length before the loop starts. So
whatever stopped the last run, the output holds one line per line done, and the lines that
run again are written once (docs/output-files.md). An output shorter than the state says
(deleted, edited, restored from an older copy) stops the script with an error that names
both lengths; run it with ``--restart`` to start over (the old output is moved aside).

Exit status: 0 when the file is done, 130 after ctrl+c; a SIGTERM ends it as SIGTERM does (a
shell shows 143), after the save. Either way one line on stderr says how far it got. The
first ctrl+c or SIGTERM lets the line in flight finish; a second one stops at once. More in
docs/examples.md.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--restart", action="store_true", help="start over (the old output is moved aside)"
    )
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
        open(source, encoding="utf-8") as lines,
    ):
        output = r.sink(out)  # cut back to the lines done, before the loop
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
            output.write(f"{number}\t{len(text.split())}\t{text.upper()}\n")
            if number % report_every == 0:
                print(f"{number} lines done", flush=True)
    print(f"Done: {r.position} lines in {out}, over {r.runs} run(s).")


if __name__ == "__main__":
    sys.exit(main())
