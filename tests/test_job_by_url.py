"""A job named by the URL of a state object: `Resumable`, `inspect` and `reset` by URL.

The backends are those of tests/test_object_store.py (``memory://``, ``file://``, and a
moto S3 server on localhost: the `job_url` fixtures in conftest.py). Time is frozen and
moved, never waited for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

from resumable import (
    NPolicy,
    Resumable,
    ResumableWarning,
    StateFileError,
    StateLockedError,
    inspect,
    reset,
)
from resumable._store.object_backend import open_objects

from jobs.documents import key_frames
from jobs.harness import Child

LEASE = 60.0  # the lease a run takes (docs/object-storage.md)
SKEW = 5.0  # the clock skew allowed before a lease is taken over
NEVER = NPolicy(1000)  # no policy save during these short loops


def test_a_job_named_by_a_url_stops_at_an_exception_and_resumes_where_it_stopped(
    job_url: str,
) -> None:
    done: list[int] = []
    with pytest.raises(RuntimeError), Resumable(job_url, quiet=True) as r:
        r.state["seen"] = 0
        for item in r.iterate(range(10)):
            if item == 6:
                raise RuntimeError("item 6 fails")
            done.append(item)
            r.state["seen"] += 1
    assert inspect(job_url).position == 6
    with Resumable(job_url, quiet=True) as r:
        assert (r.position, r.runs, r.state) == (6, 2, {"seen": 6})
        for item in r.iterate(range(10)):
            done.append(item)
    assert done == list(range(10))
    snapshot = inspect(job_url)
    assert (snapshot.path, snapshot.position, snapshot.finished) == (job_url, 10, True)


def test_map_by_url_runs_every_item_once_across_a_stop(job_url: str) -> None:
    calls: list[int] = []
    stopped: list[int] = []

    def square(item: int) -> int:
        calls.append(item)
        # The first run stops here. Not by the count of calls: the workers may have
        # called items above 7 before it.
        if item == 7 and not stopped:
            stopped.append(item)
            raise KeyboardInterrupt
        return item * item

    with pytest.raises(KeyboardInterrupt), Resumable(job_url, quiet=True) as r:
        for _ in r.map(square, range(12)):
            pass
    with Resumable(job_url, quiet=True) as r:
        results = list(r.map(square, range(12)))
    assert sorted(set(calls)) == list(range(12))
    assert results == [item * item for item in range(7, 12)]


def test_a_url_job_names_itself_as_given_in_repr_and_path(job_url: str) -> None:
    job = Resumable(job_url)
    assert job.path == job_url
    assert job.path.name == "job.state"
    assert job.path.parent == job_url.removesuffix("/job.state")  # memory://<name>, ...
    assert job.path.parent.name == job_url.removesuffix("/job.state").rpartition("/")[2]
    assert repr(job).startswith(f"Resumable({job_url!r}, position=0")


def test_a_second_run_of_a_url_job_is_refused_naming_host_and_pid(job_url: str) -> None:
    with Resumable(job_url, quiet=True), pytest.raises(StateLockedError) as refused:
        Resumable(job_url).__enter__()
    message = str(refused.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert refused.value.pid == os.getpid()
    with Resumable(job_url, quiet=True) as r:  # released at the end of the first run
        assert r.runs == 2


def test_a_long_run_keeps_its_lease_through_its_saves_and_no_other_run_takes_it(
    job_url: str,
) -> None:
    """Each item takes half a lease (time moved, not waited for): the saves between them
    renew the lease, so a second run is refused all along, well past the first lease."""
    with freeze_time("2026-12-05 03:00:00", tick=False) as frozen:
        with Resumable(job_url, quiet=True) as r:
            for _ in r.iterate(range(8)):
                frozen.tick(LEASE / 2)
                with pytest.raises(StateLockedError):
                    Resumable(job_url).__enter__()
        assert inspect(job_url).position == 8


def test_a_run_that_lost_its_lease_stops_before_its_next_save_and_overwrites_nothing(
    job_url: str,
) -> None:
    """A run paused past its lease (time moved past it in the body, no save in between)
    finds another run holding the job: its next save raises, and the other's progress is
    what the state object keeps."""
    with freeze_time("2026-12-05 03:00:00", tick=False) as frozen:
        first = Resumable(job_url, policy=NEVER, quiet=True)
        with pytest.raises(StateLockedError, match="taken over by another run"), first:
            for item in first.iterate(range(10)):
                if item == 3:
                    frozen.tick(LEASE + SKEW + 1)  # paused: the lease expires
                    with Resumable(job_url, quiet=True) as second:
                        for _ in second.iterate(range(5)):
                            pass
                        assert second.runs == 1
                if item == 4:
                    first.save()
        snapshot = inspect(job_url)
        assert (snapshot.position, snapshot.runs) == (5, 1)  # the second run's


def test_a_killed_run_of_a_url_job_on_this_host_is_taken_over_at_once_and_resumed(
    shared_job_url: str, tmp_path: Path
) -> None:
    """kill -9 of a real process with the job by URL: its lease stays on the store, held,
    but a run of the same host sees its pid is gone, takes the job over at once (no
    waiting for the expiry) and resumes from its last save; every item's effect is in the
    log at least once, the redone ones since the last save only.

    The child's input is long enough that it cannot end before the kill (100 items did,
    under load, on the file backend: the lease was released, and the refusal not raised)."""
    effects = tmp_path / "effects.log"
    items = 100_000  # some 20,000 saves for the child; the resuming run saves by time
    arguments = ("--items", str(items), "--every", "5")
    with Child("fast_job.py", shared_job_url, effects, *arguments) as job:
        while job.read_line() != "saved 20":
            pass
        with pytest.raises(StateLockedError, match=f"pid {job.pid} on {socket.gethostname()}"):
            Resumable(shared_job_url).__enter__()
        job.kill9()
    saved = inspect(shared_job_url).position
    assert saved >= 20
    with Resumable(shared_job_url, quiet=True) as r, effects.open("a") as log:
        assert r.position == saved
        for item in r.iterate(range(items)):
            log.write(f"{item}\n")
    logged = [int(line) for line in effects.read_text().split()]
    assert sorted(set(logged)) == list(range(items))
    redone = len(logged) - items
    assert redone <= 5  # at most the items since the last save (NPolicy(5))


def test_reset_by_url_sets_the_job_aside_and_the_next_run_starts_fresh(job_url: str) -> None:
    with Resumable(job_url, quiet=True) as r:
        for _ in r.iterate(range(4)):
            pass
    aside = reset(job_url)
    assert str(aside).startswith(job_url + ".reset-")
    assert inspect(aside).position == 4
    with Resumable(job_url, quiet=True) as r:
        assert (r.position, r.runs) == (0, 1)


def test_a_plain_path_job_imports_no_object_storage_library(tmp_path: Path) -> None:
    code = (
        "import sys, resumable\n"
        f"with resumable.Resumable({str(tmp_path / 'job.state')!r}) as r:\n"
        "    for _ in r.iterate(range(3)): pass\n"
        "print(resumable.inspect(r.path).position, 'obstore' in sys.modules)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout == "3 False\n"


def test_a_url_job_without_obstore_is_refused_naming_the_extra_to_install() -> None:
    """In a process where obstore cannot be imported (None in sys.modules: as if not
    installed), a job by URL raises UsageError saying which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['obstore'] = None  # import obstore raises ImportError\n"
        "import resumable\n"
        "try:\n"
        "    resumable.Resumable('s3://bucket/crawl/job.state').__enter__()\n"
        "except resumable.UsageError as error:\n"
        "    print(error)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout == (
        "s3://bucket/crawl/job.state is on object storage, which needs obstore: "
        "pip install 'resumable-loop[s3]'\n"
    )


def test_a_keyed_job_by_url_resumes_by_key_in_another_order(job_url: str) -> None:
    items = [f"page-{n}" for n in range(40)]
    done: list[str] = []
    with pytest.raises(RuntimeError), Resumable(job_url, policy=NPolicy(3), quiet=True) as r:
        for item in r.iterate(items, key=str):
            if len(done) == 25:
                raise RuntimeError("stop")
            done.append(item)
    snapshot = inspect(job_url)
    assert (snapshot.progress_kind, snapshot.position) == ("keys", 25)
    with Resumable(job_url, quiet=True) as r:
        for item in r.iterate(reversed(items), key=str):
            done.append(item)
    assert sorted(done) == sorted(items)


def test_failed_items_of_a_url_job_are_recorded_shown_and_retried(job_url: str) -> None:
    with Resumable(job_url, quiet=True) as r:
        for item in r.iterate(range(10), on_error="record"):
            with r.attempt():
                if item % 4 == 0:
                    raise ValueError(f"item {item} fails")
    failed = inspect(job_url).failed
    assert [record.position for record in failed] == [0, 4, 8]
    retried: list[int] = []
    with Resumable(job_url, quiet=True) as r:
        for item in r.iterate(range(10), on_error="record"):
            with r.attempt():
                retried.append(item)
    assert retried == [0, 4, 8]
    assert inspect(job_url).failed == ()


def test_many_saves_of_a_keyed_url_job_fold_its_chunks_and_delete_those_no_save_names(
    job_url: str,
) -> None:
    """One chunk object per save that adds keys; a generation is folded into one chunk
    every 32, and the chunks a fold replaced go two saves later: the objects stay few."""
    with Resumable(job_url, policy=NPolicy(1), quiet=True) as r:
        for _ in r.iterate(range(100), key=int):
            pass
    with Resumable(job_url, quiet=True) as r:
        assert list(r.iterate(range(105), key=int)) == [100, 101, 102, 103, 104]
    objects, key = open_objects(job_url)
    chunks = [name for name, _ in objects.list(key.rpartition("/")[0]) if ".keys-" in name]
    assert 0 < len(chunks) <= 2 * 32 + 1


def test_a_keyed_url_job_resumed_from_its_backup_deletes_no_chunk_of_before(
    tmp_path: Path,
) -> None:
    """The state object is damaged; the next run resumes from the backup and saves on,
    past a fold and two saves: the chunks written before the damage all stay, since the
    damaged object, kept aside, may name any of them (docs/object-storage.md, "Folds"). On the
    file backend only: the journal's logic is the same on every backend."""
    job_url = f"file://{tmp_path}/job.state"
    with Resumable(job_url, policy=NPolicy(1), quiet=True) as r:
        for _ in r.iterate(range(40), key=int):
            pass
    objects, key = open_objects(job_url)
    before = {name for name, _ in objects.list(key.rpartition("/")[0]) if ".keys-" in name}
    objects.put(key, b"not a state document")
    with (
        pytest.warns(ResumableWarning, match="resuming from the backup"),
        Resumable(job_url, policy=NPolicy(1), quiet=True) as r,
    ):
        assert list(r.iterate(range(80), key=int)) == list(range(40, 80))
    after = {name for name, _ in objects.list(key.rpartition("/")[0]) if ".keys-" in name}
    assert before <= after
    assert len(after - before) >= 1  # the second run wrote chunks of its own, and folded
    assert inspect(job_url).position == 80


def test_a_state_object_over_256_mib_is_refused_unread_naming_the_limit(
    tmp_path: Path,
) -> None:
    """A sparse file of 256 MiB and a byte on the file backend: its size is checked
    before a byte is read, and with no backup the run is refused naming the limit."""
    with Resumable(f"file://{tmp_path}/job.state", quiet=True) as r:
        list(r.iterate(range(3)))
    with (tmp_path / "job.state").open("r+b") as file:
        file.truncate(256 * 2**20 + 1)
    assert not (tmp_path / "job.state.bak").exists()  # one save: no backup yet
    with pytest.raises(StateFileError) as refused:
        Resumable(f"file://{tmp_path}/job.state", quiet=True).__enter__()
    assert "job.state is larger than any state object (256 MiB at most)" in str(refused.value)
    assert (tmp_path / "job.state").stat().st_size == 256 * 2**20 + 1


def journal_reference(job_url: str) -> tuple[int, int]:
    """The (generation, length in chunks) of the key journal the state object commits."""
    objects, key = open_objects(job_url)
    blob = objects.get(key, 1 << 20)
    assert blob is not None
    journal = orjson.loads(blob.data)["progress"]["journal"]
    return journal["generation"], journal["length"]


def test_each_run_of_a_keyed_url_job_writes_a_generation_of_its_own_folded_at_32_chunks() -> None:
    """docs/object-storage.md: a run's first save that adds keys puts them into chunk 0 of
    a new generation; each later save adds a chunk, and once a generation has 32 chunks
    the next save folds it into a new one. Seen by each body (NPolicy(1)), on memory://
    (the journal's logic is the same on every backend)."""
    job_url = f"memory://{uuid.uuid4().hex}/job.state"

    def run(items: range) -> list[tuple[int, int]]:
        seen = []
        with Resumable(job_url, policy=NPolicy(1), quiet=True) as r:
            for item in r.iterate(items, key=int):
                if item > items.start:  # the save of the item before is in
                    seen.append(journal_reference(job_url))
        return seen

    first = run(range(40))
    generations = [generation for generation, _ in first]
    lengths = [length for _, length in first]
    # Saves 1 to 32 fill the first generation, save 33 folds: one chunk of all 33 keys.
    assert lengths == [*range(1, 33), *range(1, 8)]
    assert len(set(generations[:32])) == 1
    assert len(set(generations[32:])) == 1
    assert generations[32] != generations[0]
    second = run(range(40, 45))
    assert [length for _, length in second] == [1, 2, 3, 4]
    assert len({generation for generation, _ in second}) == 1
    assert second[0][0] not in generations  # a generation of its own from its first save


def test_a_chunk_0_without_its_job_record_is_damage_named_and_nothing_is_changed() -> None:
    """Chunk 0 of a generation starts with the job record, which ties the journal to its
    job: one written without it (by hand, by another tool) is refused, naming it."""
    job_url = f"memory://{uuid.uuid4().hex}/job.state"
    with Resumable(job_url, policy=NPolicy(1), quiet=True) as r:
        for _ in r.iterate(range(3), key=int):
            pass
    objects, key = open_objects(job_url)
    chunk = next(name for name, _ in objects.list(key.rpartition("/")[0]) if name.endswith(".0"))
    objects.put(chunk, b"".join(key_frames([[0, 1, 2]])))
    with pytest.raises(StateFileError, match="chunk 0 does not start with the job record"):
        Resumable(job_url, quiet=True).__enter__()
    assert inspect(job_url).position == 3


def test_a_keyed_run_that_lost_its_lease_leaves_the_new_owners_keys_whole(
    job_url: str,
) -> None:
    """The paused run writes its chunks in a generation of its own: the new owner's
    journal is never overwritten, and its next run skips what it did."""
    with freeze_time("2026-12-05 03:00:00", tick=False) as frozen:
        first = Resumable(job_url, policy=NPolicy(1), quiet=True)
        with pytest.raises(StateLockedError), first:
            for item in first.iterate(range(20), key=int):
                if item == 5:
                    frozen.tick(LEASE + SKEW + 1)
                    with Resumable(job_url, policy=NPolicy(1), quiet=True) as second:
                        for _ in second.iterate(range(10, 20), key=int):
                            pass
        with Resumable(job_url, quiet=True) as third:
            left = list(third.iterate(range(20), key=int))
    assert left == [5, 6, 7, 8, 9]  # 0-4 the first run saved, 10-19 the second did
    assert inspect(job_url).position == 20


def test_a_missing_journal_chunk_is_named_and_nothing_is_changed(job_url: str) -> None:
    with Resumable(job_url, policy=NPolicy(2), quiet=True) as r:
        for _ in r.iterate(range(6), key=int):
            pass
    objects, key = open_objects(job_url)
    (chunk, *_) = sorted(n for n, _ in objects.list(key.rpartition("/")[0]) if ".keys-" in n)
    objects.delete(chunk)
    with pytest.raises(StateFileError, match=r"key journal chunk .* is missing"):
        Resumable(job_url, quiet=True).__enter__()
    assert inspect(job_url).position == 6
