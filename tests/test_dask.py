"""A sharded job on a real Dask cluster of worker processes: a worker killed with SIGKILL in
the middle of a shard costs at most the policy's bound, and the job completes.

The cluster is a ``distributed.LocalCluster`` of 2 worker processes of one thread each,
each under a nanny that starts a new worker process when one dies. The work
(tests/jobs/shard_work.py) logs ``done <item> <pid>`` with an fsync per item. The kill
lands where the test knows the worker is: the first run to reach a chosen item writes its
pid to a FIFO the test reads, then waits to be killed (a gate); no sleep stands in for it.

The bound per kill, and why it holds: the killed run's bodies that its state file does not
count are the items to redo. ``NPolicy(n)`` saves as soon as n items are counted since the
last save, before the next body starts, so at most n - 1 counted items wait for a save,
plus the body the kill landed in: at most n items are done twice per kill, all of them in
the killed worker's shard, and nothing is lost.
"""

from __future__ import annotations

import os
import pickle
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest

import resumable.dask
from resumable import Shard, ShardFailedError, inspect, shards

from jobs import shard_campaign
from jobs.harness import campaign_seed
from jobs.object_storage import BUCKET
from jobs.shard_campaign import check_redone_within_the_bound, logged
from jobs.shard_work import LoggedWork, first_item


@pytest.fixture(scope="module")
def client(s3_server: str) -> Iterator[distributed.Client]:
    """A client of a 2-worker LocalCluster of processes, one thread each, for this module.
    Started after the S3 server: the workers inherit its address from the environment."""
    # distributed leaves LocalCluster and Client untyped.
    with (
        distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",  # a free port: other test runs may hold 8787
            silence_logs=50,  # logging.CRITICAL: a killed worker is expected here
        ) as cluster,
        distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def kill_at_gates(
    client: distributed.Client,
    tmp_path: Path,
    parts: list[Shard[int]],
    gate_items: list[int],
    lease_patience: float = 0.0,
) -> tuple[list[tuple[int, int]], list[int]]:
    """`shard_campaign.kill_at_gates` with resumable.dask.run on the client's cluster."""

    def is_worker(pid: int) -> bool:
        # A worker killed a moment ago may still be listed: it answers nothing.
        return pid in client.run(os.getpid, on_error="ignore").values()

    return shard_campaign.kill_at_gates(
        lambda work: resumable.dask.run(work, parts, client=client),
        tmp_path,
        parts,
        gate_items,
        is_worker,
        lease_patience,
    )


def test_a_worker_killed_in_a_shard_costs_at_most_the_policy_bound(
    client: distributed.Client, tmp_path: Path
) -> None:
    items = list(range(8 * 200))
    parts = shards(items, 8, job=tmp_path / "job")
    gate_at = parts[3].items[57]  # in the middle of a shard, between two saves
    lines, killed = kill_at_gates(client, tmp_path, parts, [gate_at])
    redone = check_redone_within_the_bound(lines, items, killed, [gate_at])
    assert redone <= set(parts[3].items), "an item of a shard that was not killed was redone"
    assert len(killed) == 1


@pytest.mark.slow
def test_workers_killed_at_random_items_of_many_shards_cost_at_most_the_bound_each(
    client: distributed.Client, tmp_path: Path
) -> None:
    rng = random.Random(campaign_seed())
    items = list(range(16 * 500))
    parts = shards(items, 16, job=tmp_path / "job")
    gate_items = [rng.choice(part.items) for part in rng.sample(parts, 8)]
    lines, killed = kill_at_gates(client, tmp_path, parts, gate_items)
    check_redone_within_the_bound(lines, items, killed, gate_items)
    assert len(set(killed)) == len(gate_items)


@pytest.mark.parametrize("store", ["file", "s3"])
def test_on_object_storage_a_worker_killed_in_a_shard_is_retried_at_once_and_completes(
    client: distributed.Client, tmp_path: Path, store: str
) -> None:
    """A killed run leaves its lease on the store, held, for up to 65 s; Dask retries at
    once on a worker of the same host, which sees the holder's pid is gone and takes the
    shard over (docs/object-storage.md): the job completes within the policy's bound."""
    prefix = f"file://{tmp_path}" if store == "file" else f"s3://{BUCKET}/{uuid.uuid4().hex}"
    items = list(range(4 * 50))
    parts = shards(items, 4, job=f"{prefix}/job/")
    gate_at = parts[1].items[25]
    lines, killed = kill_at_gates(client, tmp_path, parts, [gate_at])
    redone = check_redone_within_the_bound(lines, items, killed, [gate_at])
    assert redone <= set(parts[1].items), "an item of a shard that was not killed was redone"
    assert len(killed) == 1


@pytest.mark.slow
def test_on_object_storage_a_work_function_that_waits_for_the_lease_completes_the_job(
    client: distributed.Client, tmp_path: Path
) -> None:
    """docs/distributed.md's recipe, for a worker lost on another host: the retry waits (up
    to 70 s) for the dead run's lease to expire. On this one host the retry finds the
    holder dead and needs no wait; the recipe must still complete the job within the
    policy's bound."""
    items = list(range(4 * 100))
    parts = shards(items, 4, job=f"file://{tmp_path}/job/")
    gate_at = parts[2].items[44]
    lines, killed = kill_at_gates(client, tmp_path, parts, [gate_at], lease_patience=70.0)
    redone = check_redone_within_the_bound(lines, items, killed, [gate_at])
    assert redone <= set(parts[2].items)


def test_a_shard_that_fails_after_its_retries_is_named(
    client: distributed.Client, tmp_path: Path
) -> None:
    parts = shards(range(40), 4, job=tmp_path / "job")
    log = tmp_path / "effects.log"
    failing = parts[2].items[5]
    message = r"shard 2 of 4 .*ValueError: item 22 fails"
    with pytest.raises(ShardFailedError, match=message) as caught:
        resumable.dask.run(LoggedWork(str(log), fail_at=failing), parts, client=client, retries=2)
    assert [shard.index for shard in caught.value.failed] == [2]
    assert isinstance(caught.value.__cause__, ValueError)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.failed) == (str(caught.value), caught.value.failed)
    times = Counter(item for item, _ in logged(log))
    # One first run and two retries, each resumed after the items the first run saved.
    assert times[failing] == 0
    assert all(times[item] == 1 for part in parts if part.index != 2 for item in part.items)
    assert inspect(parts[2].state).position == 5  # the failed run saved what it did
    # The other shards ran to their end.
    assert all(inspect(part.state).finished for part in parts if part.index != 2)


def test_results_come_in_shard_order(client: distributed.Client, tmp_path: Path) -> None:
    parts = shards(["a", "b", "c", "d", "e"], 3, job=tmp_path / "job")
    assert resumable.dask.run(first_item, parts, client=client, retries=0) == ["a", "b", "c"]


def test_run_refuses_what_shards_did_not_make(client: distributed.Client) -> None:
    with pytest.raises(resumable.UsageError, match="what shards\\(\\) returns"):
        resumable.dask.run(first_item, ["not a shard"], client=client)  # type: ignore[list-item]
