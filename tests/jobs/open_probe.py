"""Try once to open a job, as a second run of it would, and report the outcome as JSON.

    python open_probe.py STATE

Prints one line: ``{"opened": true, "position": P}`` when the job opened (it is closed
again at once, without running anything), or ``{"opened": false, "error": NAME,
"holder": PID, "message": TEXT}`` when it was refused with `StateLockedError`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import resumable


def main() -> None:
    """Open the job once and print what happened."""
    state = Path(sys.argv[1])
    outcome: dict[str, object]
    try:
        with resumable.Resumable(state, signals=()) as job:
            outcome = {"opened": True, "position": job.position}
    except resumable.StateLockedError as error:
        outcome = {
            "opened": False,
            "error": type(error).__name__,
            "holder": error.pid,
            "message": str(error),
        }
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
