"""A sharded job on a real local Ray cluster: a worker killed with SIGKILL in the middle of a
shard costs at most the policy's bound, and the job completes (Ray runs the task again,
which resumes the shard from its saved state).

Ray is heavy (a wheel of some 80 MB, seconds to start): these tests run in a nox session
of their own, ``nox -s ray`` (Python 3.11, part of every ``nox`` run); the tests session
leaves this file out, and a plain ``pytest`` where Ray is not installed skips it.
The campaign is tests/jobs/shard_campaign.py's, as for Dask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import resumable.ray
from resumable import ShardFailedError, inspect, shards

from jobs.harness import JOBS_DIR
from jobs.shard_campaign import check_redone_within_the_bound, kill_at_gates
from jobs.shard_work import LoggedWork, first_item

ray: Any = pytest.importorskip("ray", reason="Ray runs in its own session: nox -s ray")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for this module; its workers import ``jobs``."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": str(JOBS_DIR.parent)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def is_ray_worker(pid: int) -> bool:
    """Whether `pid` runs a Ray worker (its command line names Ray's worker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"ray::" in command or b"default_worker.py" in command


def test_a_worker_killed_in_a_shard_costs_at_most_the_policy_bound(tmp_path: Path) -> None:
    items = list(range(8 * 200))
    parts = shards(items, 8, job=tmp_path / "job")
    gate_at = parts[5].items[33]
    lines, killed = kill_at_gates(
        lambda work: resumable.ray.run(work, parts), tmp_path, parts, [gate_at], is_ray_worker
    )
    redone = check_redone_within_the_bound(lines, items, killed, [gate_at])
    assert redone <= set(parts[5].items)
    assert len(killed) == 1


def test_a_shard_that_fails_after_its_retries_is_named(tmp_path: Path) -> None:
    parts = shards(range(40), 4, job=tmp_path / "job")
    log = tmp_path / "effects.log"
    failing = parts[1].items[3]
    with pytest.raises(
        ShardFailedError, match=r"shard 1 of 4 .*ValueError: item 13 fails"
    ) as caught:
        resumable.ray.run(LoggedWork(str(log), fail_at=failing), parts, retries=1)
    assert [shard.index for shard in caught.value.failed] == [1]
    assert isinstance(caught.value.__cause__, ValueError)  # Ray's RayTaskError(ValueError)
    assert inspect(parts[1].state).position == 3
    assert all(inspect(part.state).finished for part in parts if part.index != 1)


def test_results_come_in_shard_order(tmp_path: Path) -> None:
    parts = shards(["a", "b", "c", "d", "e"], 3, job=tmp_path / "job")
    assert resumable.ray.run(first_item, parts, retries=0) == ["a", "b", "c"]
