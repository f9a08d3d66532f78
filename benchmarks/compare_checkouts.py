"""Two checkouts of resumable side by side: per-item overhead, one save, one resume.

For a change to the loop or the save path, measure the commit before it and the change in
one run, alternating between them, so that the machine's drift hits both alike:

    git worktree add /tmp/before <commit>
    python benchmarks/compare_checkouts.py /tmp/before .

Each sample runs in a fresh child process that imports resumable from one checkout's
directory (PYTHONPATH), so the two never share a module. A figure is the best sample of
each side; the ratio is new / old (below 1: the new one is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# One child's measurement: prints a JSON object of ns figures.
CHILD = textwrap.dedent(
    """
    import gc, json, os, sys, tempfile, time
    from resumable import NPolicy, Resumable

    N = int(sys.argv[1])
    out = {}

    def timed(run):
        gc.collect(); gc.disable()
        try:
            start = time.perf_counter_ns(); run(); return time.perf_counter_ns() - start
        finally:
            gc.enable()

    def plain_loop(items):
        for _ in items:
            pass

    def per_item(make_input, key=None):
        # Wrapped and plain alternated three times, each side's best taken; a fresh job
        # each time, since a finished one yields nothing.
        looped, plain = [], []
        with tempfile.TemporaryDirectory() as folder:
            for repeat in range(3):
                path = os.path.join(folder, "job%d.state" % repeat)
                def run():
                    with Resumable(path, policy=NPolicy(10**9)) as r:
                        for _ in r.iterate(make_input(), key=key):
                            pass
                looped.append(timed(run))
                plain.append(timed(lambda: plain_loop(make_input())))
        return (min(looped) - min(plain)) / N

    list_input = list(range(N))
    out["list ns/item"] = per_item(lambda: list_input)
    out["generator ns/item"] = per_item(lambda: (i for i in range(N)))
    out["keyed ns/item"] = per_item(lambda: list_input, key=int) if N <= 10**6 else 0.0

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "job.state")
        with Resumable(path) as r:
            r.state["payload"] = {"k%d" % i: i for i in range(100)}
            r.save()
            samples = []
            for _ in range(30):
                r.state["n"] = len(samples)
                samples.append(timed(r.save))
        out["save ns"] = sorted(samples)[len(samples) // 2]

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "job.state")
        data = list(range(N))
        with Resumable(path) as r:
            for i in r.iterate(data):
                if i == N // 2:
                    break
        def resume():
            with Resumable(path) as r:
                for _ in r.iterate(data):
                    break
        out["resume ns"] = timed(resume)
    print(json.dumps(out))
    """
)


def measure(checkout: Path, items: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    # `python -c` puts its working directory first on sys.path: run in an empty one, or a
    # checkout it was started from would be imported for both sides.
    with tempfile.TemporaryDirectory() as empty:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(items)],
            env=env,
            cwd=empty,
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the checkout before the change")
    parser.add_argument("new", type=Path, help="the checkout with the change")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    samples: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for round_number in range(args.rounds):
        order = ["old", "new"] if round_number % 2 == 0 else ["new", "old"]
        for side in order:
            samples[side].append(measure(sides[side], args.items))
        print(f"  round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"old: {sides['old']}\nnew: {sides['new']}\n{args.items:,} items, best of {args.rounds}")
    print(f"{'figure':<22}{'old':>14}{'new':>14}{'new/old':>10}")
    for figure in samples["old"][0]:
        old = min(sample[figure] for sample in samples["old"])
        new = min(sample[figure] for sample in samples["new"])
        ratio = new / old if old else float("nan")
        print(f"{figure:<22}{old:>14,.1f}{new:>14,.1f}{ratio:>10.3f}")


if __name__ == "__main__":
    main()
