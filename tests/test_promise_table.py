"""The promise table of docs/reliability.md names tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RELIABILITY = TESTS.parent / "docs" / "reliability.md"


def test_every_test_the_promise_table_names_exists() -> None:
    """A test renamed or removed must take its row in the table with it."""
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", RELIABILITY.read_text()))
    assert len(named) > 100
    missing = [
        f"{module}::{test}"
        for module, test in sorted(named)
        if not (TESTS / module).exists()
        or not re.search(rf"^def {test}\(", (TESTS / module).read_text(), re.MULTILINE)
    ]
    assert missing == []
