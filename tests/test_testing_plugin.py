"""resumable.testing: the pytest plugin (fake_clock) and run_loop, as a user's suite sees
them: run by pytester in a pytest of its own, which finds the plugin by its entry point."""

from __future__ import annotations

import math
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from resumable import NPolicy, TimePolicy
from resumable.testing import FakeClock, run_loop


@pytest.fixture
def plugin_installed() -> None:
    """The plugin is found through the installed package's entry point: an editable
    install made before the entry point existed lacks it. Skip then, but fail under
    ``CI=true``, where the package is always installed afresh."""
    if any(point.value == "resumable.testing" for point in entry_points(group="pytest11")):
        return
    message = "the pytest11 entry point of resumable.testing is not installed: pip install -e ."
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


USER_TESTS = """
import time

import pytest
from freezegun import freeze_time

from resumable import NPolicy, Resumable, TimePolicy
from resumable.testing import run_loop


def test_fake_clock(tmp_path, fake_clock):
    with Resumable(tmp_path / "job.state", policy=TimePolicy(60), clock=fake_clock) as r:
        for _ in r.iterate(range(200)):
            fake_clock.advance(1)
    assert [save.position for save in r.save_log] == [60, 120, 180, 200]


def test_run_loop_with_the_fixture(tmp_path, fake_clock):
    saves = run_loop(
        tmp_path / "job.state",
        range(300),
        policy=NPolicy(100) | TimePolicy(60),
        clock=fake_clock,
        seconds_per_item=lambda item: 1.0 if item < 150 else 0.1,
    )
    assert [(save.position, save.reason) for save in saves] == [
        (60, "policy"), (120, "policy"), (220, "policy"), (300, "completion")
    ]
    assert fake_clock.now == pytest.approx(165.0)


def test_freezegun(tmp_path):
    with freeze_time("2026-01-01", tick=False) as frozen:
        with Resumable(tmp_path / "job.state", policy=TimePolicy(60)) as r:
            for _ in r.iterate(range(200)):
                frozen.tick(1)
    assert [save.position for save in r.save_log] == [60, 120, 180, 200]


def test_time_machine(tmp_path):
    time_machine = pytest.importorskip("time_machine")
    with time_machine.travel("2026-01-01", tick=False) as traveller:
        with Resumable(tmp_path / "job.state", policy=TimePolicy(60), clock=time.time) as r:
            for _ in r.iterate(range(200)):
                traveller.shift(1)
    assert [save.position for save in r.save_log] == [60, 120, 180, 200]
"""


@pytest.mark.usefixtures("plugin_installed")
def test_the_plugin_serves_a_users_suite_under_each_clock(pytester: pytest.Pytester) -> None:
    pytest.importorskip("time_machine")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=4)


@pytest.mark.usefixtures("plugin_installed")
def test_the_fixture_comes_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixtures="def test_listed(fake_clock):\n    assert fake_clock() == 0.0\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    result.stdout.fnmatch_lines(["*fake_clock*", "*A `FakeClock` at 0 s*"])


def test_a_fake_clock_moves_exactly_and_only_forward() -> None:
    clock = FakeClock(start=10)
    for _ in range(10):
        clock.advance(0.1)
    assert clock() == clock.now == pytest.approx(11.0)
    clock.advance(0)
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="finite"):
        clock.advance(math.inf)
    with pytest.raises(TypeError, match="number of seconds"):
        clock.advance("1")  # type: ignore[arg-type]
    assert repr(FakeClock(5)) == "FakeClock(now=5)"


def test_run_loop_makes_its_own_clock_and_passes_iterate_options(tmp_path: Path) -> None:
    saves = run_loop(tmp_path / "job.state", ["a", "b", "c", "d"], policy=NPolicy(2), key=str.upper)
    # Keyed: the policy saves the last key; the finished flag alone waits for the exit.
    assert [(save.position, save.reason) for save in saves] == [
        (2, "policy"),
        (4, "policy"),
        (4, "exit"),
    ]


def test_run_loop_exact_checks_saves_at_the_first_item_after_the_interval(tmp_path: Path) -> None:
    """Fast items, then slow ones: predicted checks come late; exact ones do not."""

    def pace(item: int) -> float:
        return 0.001 if item < 5_000 else 30.0

    predicted = run_loop(
        tmp_path / "a.state", range(5_020), policy=TimePolicy(60), seconds_per_item=pace
    )
    exact = run_loop(
        tmp_path / "b.state",
        range(5_020),
        policy=TimePolicy(60),
        seconds_per_item=pace,
        exact_checks=True,
    )
    assert exact[0].seconds == pytest.approx(65.0)
    assert predicted[0].seconds > exact[0].seconds


def test_run_loop_body_sees_the_run(tmp_path: Path) -> None:
    def body(r: object, item: int) -> None:
        if item == 2:
            r.save()  # type: ignore[attr-defined]

    saves = run_loop(tmp_path / "job.state", range(5), policy=NPolicy(100), body=body)
    assert [(save.position, save.reason) for save in saves] == [
        (2, "explicit"),
        (5, "completion"),
    ]


@pytest.mark.usefixtures("plugin_installed")
def test_the_example_test_file_passes_as_a_user_would_run_it(pytester: pytest.Pytester) -> None:
    """examples/test_my_job.py, copied into a project of its own, passes there."""
    example = Path(__file__).resolve().parents[1] / "examples" / "test_my_job.py"
    pytester.makepyfile(test_my_job=example.read_text(encoding="utf-8"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=4)
