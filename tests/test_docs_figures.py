"""The figures in docs/ are what their scripts draw from real runs of this version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs.harness import TIMEOUT, child_env

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_the_from_n_to_t_figure_is_up_to_date() -> None:
    """docs/figures/from-n-to-t.svg shows the saves the library makes today; after a
    change of when it saves, run python tools/figure_from_n_to_t.py and commit the file."""
    done = subprocess.run(
        [sys.executable, str(TOOLS / "figure_from_n_to_t.py"), "--check"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
