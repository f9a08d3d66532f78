"""A job whose items each run a child process, for the ctrl+c tests.

    python subprocess_job.py STATE OUTPUT_DIR [--new-session]

Item ``i`` of ``range(3)`` runs ``sh``, which prints ``running <i>``, waits for a line on
its stdin (this job's stdin, so the test steps it) and writes ``OUTPUT_DIR/<i>``. The
body runs it with ``subprocess.run(..., check=True)``, with ``start_new_session=True``
when asked. SIGINT starts at Python's default handler.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import resumable


def main() -> None:
    """Run the job."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    state, output = Path(sys.argv[1]), Path(sys.argv[2])
    new_session = sys.argv[3:] == ["--new-session"]
    with resumable.Resumable(state, policy=resumable.NPolicy(1)) as r:
        for item in r.iterate(range(3)):
            script = f'echo running {item}; read line && echo ok > "{output / str(item)}"'
            subprocess.run(["sh", "-c", script], check=True, start_new_session=new_session)


if __name__ == "__main__":
    main()
