"""The processes the tests start import the same ``resumable`` as the tests themselves.

Under nox that is the package installed in site-packages, under tools/mutants.py the
mutated copy first on ``PYTHONPATH``: a child that imported the source tree instead would
test other code than the test process does, and pass or fail for the wrong reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import resumable

from jobs.harness import TIMEOUT, Child, child_env

PRINT_FILE = "import resumable; print(resumable.__file__)"
PARENT = Path(resumable.__file__).resolve()


def test_a_job_script_run_by_the_harness_imports_the_package_the_tests_import(
    tmp_path: Path,
) -> None:
    script = tmp_path / "print_file.py"
    script.write_text(PRINT_FILE + "\n")
    with Child(script) as child:
        line = child.read_line()
        assert line is not None, child.describe("no line")
        assert Path(line).resolve() == PARENT
        assert child.finish().returncode == 0


def test_python_c_in_the_tests_working_folder_imports_the_package_the_tests_import() -> None:
    """``python -c`` and ``python -m`` put the working folder first on ``sys.path``:
    conftest.py keeps the tests out of the source tree."""
    printed = subprocess.run(
        [sys.executable, "-c", PRINT_FILE],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=TIMEOUT,
        check=True,
    )
    assert Path(printed.stdout.strip()).resolve() == PARENT
