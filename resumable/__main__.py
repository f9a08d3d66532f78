"""The command line: ``python -m resumable demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from resumable._demo import run_demo
from resumable._version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="resumable", description="Make long for-loops resumable.")
    parser.add_argument("--version", action="version", version=f"resumable-loop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run a slow job you can stop with ctrl+c and run again to continue"
    )
    demo.add_argument("--state", type=Path, default=Path("resumable-demo.state"))
    demo.add_argument("--items", type=int, default=300)
    demo.add_argument("--delay", type=float, default=0.04, help="seconds per item")
    demo.add_argument("--restart", action="store_true", help="start the job over")
    arguments = parser.parse_args(argv)
    try:
        return run_demo(arguments.state, arguments.items, arguments.delay, arguments.restart)
    except KeyboardInterrupt:
        print()
        return 130


if __name__ == "__main__":
    sys.exit(main())
