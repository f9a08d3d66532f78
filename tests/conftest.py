from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """A state file path in a fresh directory (the file itself does not exist yet)."""
    return tmp_path / "job.state"
