"""A job on object storage (`open_store` with a URL): saves, the backup, the lease.

Every test runs against three backends: ``memory://``, ``file://`` (a local folder), and
a real S3-compatible server (moto's server mode) that the tests start on localhost, with
the endpoint, keys and region from the environment, as a user configures obstore (the
fixtures `job_url`, `shared_job_url` and `s3_server` are in conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from freezegun import freeze_time

from resumable import ResumableWarning, StateFileError, StateLockedError, UsageError
from resumable._store import Store, open_store
from resumable._store.document import NotDamagedError
from resumable._store.file import FileStore
from resumable._store.lease import CLOCK_SKEW_SECONDS, LEASE_SECONDS
from resumable._store.object import ObjectStore
from resumable._store.object_backend import Objects, open_objects

from jobs.documents import checksummed, document
from jobs.object_storage import BUCKET


def state(position: int) -> bytes:
    """A state document at `position`, as a save writes it."""
    return checksummed(document({"kind": "position", "position": position, "finished": False}))


def position(store: Store) -> int:
    loaded = store.read()
    assert loaded is not None
    return int(loaded.document.progress["position"])


def raw(url: str) -> tuple[Objects, str]:
    """The objects behind `url` and its state object's key, to read and damage by hand."""
    return open_objects(url)


def opened(url: str) -> Store:
    """A run's store with the job locked and loaded, as `Resumable` opens it."""
    store = open_store(url)
    store.lock()
    if store.load() is None:
        store.start_fresh()
    return store


def test_open_store_picks_the_object_store_for_a_url_and_local_files_for_a_path(
    tmp_path: Path,
) -> None:
    assert isinstance(open_store(tmp_path / "job.state"), FileStore)
    assert isinstance(open_store(str(tmp_path / "job.state")), FileStore)
    assert not isinstance(open_store("memory://x/job.state"), FileStore)


@pytest.mark.parametrize(
    "url", ["memory://x/", "s3://bucket", "s3:///job.state", "memory://x/job.state?v=1"]
)
def test_a_url_that_names_no_state_object_is_refused_with_an_example(url: str) -> None:
    with pytest.raises(UsageError, match=r"e\.g\. \w+://"):
        open_store(url)


def test_a_save_is_read_back_and_the_save_before_it_is_the_backup(job_url: str) -> None:
    run = opened(job_url)
    run.save(state(10))
    run.save(state(20))
    run.unlock()
    assert position(open_store(job_url)) == 20
    assert position(open_store(job_url + ".bak")) == 10


def test_a_save_over_an_earlier_jobs_objects_sets_them_aside_first(job_url: str) -> None:
    objects, key = raw(job_url)
    objects.put(key, state(5))
    objects.put(key + ".bak", state(4))
    run = open_store(job_url)
    run.lock()
    run.start_fresh()  # restart=True
    run.save(state(1))
    assert position(open_store(job_url)) == 1
    assert objects.etag(key + ".bak") is None  # the other job's backup is not this one's
    run.unlock()


def test_a_damaged_state_object_resumes_from_the_backup_and_is_kept_at_the_first_save(
    job_url: str,
) -> None:
    objects, key = raw(job_url)
    objects.put(key, state(20)[:-7])  # cut short
    objects.put(key + ".bak", state(10))
    run = open_store(job_url)
    run.lock()
    with pytest.warns(ResumableWarning, match="resuming from the backup"):
        loaded = run.load()
    assert loaded is not None
    assert loaded.from_backup
    assert loaded.document.progress["position"] == 10
    run.save(state(11))
    run.unlock()
    assert position(open_store(job_url)) == 11
    assert position(open_store(job_url + ".bak")) == 10
    kept = [name for name in listed(objects, key) if ".corrupt-" in name]
    assert len(kept) == 1
    blob = objects.get(kept[0], 1 << 20)
    assert blob is not None
    assert blob.data == state(20)[:-7]


def listed(objects: Objects, key: str) -> list[str]:
    """The keys beside `key` whose names start with its name."""
    import obstore

    prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else None
    found = [meta["path"] for batch in obstore.list(objects._backend, prefix) for meta in batch]
    return [path for path in found if path.startswith(key)]


def test_a_damaged_state_object_and_backup_are_named_both_and_nothing_is_changed(
    job_url: str,
) -> None:
    objects, key = raw(job_url)
    objects.put(key, b"{not json")
    objects.put(key + ".bak", state(10).replace(b'"position":10', b'"position":11'))
    with pytest.raises(StateFileError) as raised:
        open_store(job_url).read()
    assert "not valid JSON" in str(raised.value)
    assert "checksum" in str(raised.value)
    assert job_url in str(raised.value)
    assert f"{job_url}.bak" in str(raised.value)
    blob = objects.get(key, 1 << 20)
    assert blob is not None
    assert blob.data == b"{not json"


def test_create_if_absent_and_update_if_etag_matches_refuse_a_stale_writer(
    job_url: str,
) -> None:
    objects, key = raw(job_url)
    first = objects.create(key, b"one")
    assert first is not None
    assert objects.create(key, b"two") is None
    second = objects.replace(key, b"three", first)
    assert second is not None
    assert objects.replace(key, b"four", first) is None  # stale
    assert objects.replace(key + ".missing", b"five", second) is None
    blob = objects.get(key, 100)
    assert blob is not None
    assert (blob.data, blob.etag) == (b"three", second)


def test_a_second_run_is_refused_naming_the_holder_host_pid_and_expiry(job_url: str) -> None:
    with freeze_time("2030-01-02 03:04:00", tick=False):
        first = opened(job_url)
        second = open_store(job_url)
        with pytest.raises(StateLockedError) as raised:
            second.lock()
        message = str(raised.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "lease until 2030-01-02T03:05:00Z" in message
        assert raised.value.pid == os.getpid()
        holder = second.holder()
        assert holder is not None
        assert holder.pid == os.getpid()
        first.unlock()
        assert second.holder() is None


def test_a_released_lease_is_taken_at_once(job_url: str) -> None:
    first = opened(job_url)
    first.save(state(3))
    first.unlock()
    second = opened(job_url)
    second.save(state(4))
    second.check_lock()
    second.unlock()
    assert position(open_store(job_url)) == 4


def test_a_run_that_renews_its_lease_keeps_the_job(job_url: str) -> None:
    with freeze_time("2030-01-02 03:04:00", tick=False) as frozen:
        first = opened(job_url)
        frozen.tick(LEASE_SECONDS / 2)
        first.check_lock()  # renews: half the lease has passed
        frozen.tick(LEASE_SECONDS * 0.9)  # past the first expiry, not the renewed one
        with pytest.raises(StateLockedError):
            open_store(job_url).lock()
        first.check_lock()
        first.save(state(1))
        first.unlock()


def test_the_renewal_thread_renews_the_lease_of_a_run_that_does_not_save(
    job_url: str,
) -> None:
    """An item that runs longer than the lease keeps the job: the thread renews once a
    third of the lease has passed (a 0.6 s lease here, which it looks at every 0.1 s:
    the test waits for its renewal, not for a time), and a second run is refused past the
    first expiry. freezegun leaves threads on the real clock, so only the second run's
    clock is moved."""
    run = ObjectStore(job_url, lease_seconds=0.6)
    run.lock()
    first = run.holder()
    assert first is not None
    assert run._lease.renewed_by_thread.wait(timeout=60)
    renewed = run.holder()
    assert renewed is not None
    assert renewed.expires_at >= first.expires_at + 0.2
    past_first = first.expires_at + CLOCK_SKEW_SECONDS + 0.1
    with (
        freeze_time(datetime.fromtimestamp(past_first, timezone.utc), tick=False),
        pytest.raises(StateLockedError),
    ):
        ObjectStore(job_url, lease_seconds=0.6).lock()
    run.unlock()


def test_the_renewal_thread_of_a_run_that_lost_its_lease_ends_at_its_next_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run finds at its check that a second run took its lease over: its renewal thread
    (a 6 s lease: it looks every second, by the real clock, and renews after 2 s) ends at
    its next turn, quietly, instead of renewing a lease this run no longer holds. The
    test waits for the thread to end (join), not for a time; the lease's logic is the
    same on every backend, so on memory:// only (a second each)."""
    job_url = f"memory://{uuid.uuid4().hex}/job.state"
    failed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: failed.append(hook.exc_value))
    run = ObjectStore(job_url, lease_seconds=6)
    run.lock()
    renewer = run._lease._renewer
    assert renewer is not None
    second = ObjectStore(job_url, lease_seconds=6)
    with freeze_time("2100-01-01", tick=False):  # long past any expiry of this lease
        second.lock()
        with pytest.raises(StateLockedError, match="taken over by another run"):
            run.check_lock()
    renewer.join(timeout=60)
    assert not renewer.is_alive()
    assert failed == []
    run.unlock()
    second.unlock()  # its renewal thread too: none outlives the test


def test_an_expired_lease_is_taken_over_and_its_run_stops_at_its_next_check(
    job_url: str,
) -> None:
    with freeze_time("2030-01-02 03:04:00", tick=False) as frozen:
        first = opened(job_url)
        first.save(state(1))
        frozen.tick(LEASE_SECONDS + CLOCK_SKEW_SECONDS - 1)  # within the clock allowance
        with pytest.raises(StateLockedError):
            open_store(job_url).lock()
        frozen.tick(2)
        second = opened(job_url)
        assert not lost(first)
        with pytest.raises(StateLockedError, match="taken over by another run"):
            first.check_lock()
        assert lost(first)
        second.check_lock()
        first.unlock()  # lost already: it leaves the other run's lease alone
        with pytest.raises(StateLockedError):
            open_store(job_url).lock()
        second.unlock()


def lost(store: Store) -> bool:
    """Whether the run of `store` knows it lost the job (read anew at every call)."""
    return store.lock_lost


def test_a_paused_run_that_lost_its_lease_does_not_overwrite_the_new_owner(
    job_url: str,
) -> None:
    with freeze_time("2030-01-02 03:04:00", tick=False) as frozen:
        paused = opened(job_url)
        paused.save(state(1))
        paused.check_lock()  # then it pauses before its save, past its lease
        frozen.tick(LEASE_SECONDS + CLOCK_SKEW_SECONDS + 1)
        owner = opened(job_url)
        owner.save(state(50))
        with pytest.raises(StateLockedError, match="changed by another run"):
            paused.save(state(2))
        assert paused.lock_lost
        owner.check_lock()
        owner.save(state(51))
        owner.unlock()
    assert position(open_store(job_url)) == 51
    assert position(open_store(job_url + ".bak")) == 50


def test_a_paused_run_that_saves_before_the_new_owners_first_save_stops_the_new_owner(
    job_url: str,
) -> None:
    """The window the docs describe: neither save is lost silently, one run stops."""
    with freeze_time("2030-01-02 03:04:00", tick=False) as frozen:
        paused = opened(job_url)
        paused.save(state(1))
        paused.check_lock()
        frozen.tick(LEASE_SECONDS + CLOCK_SKEW_SECONDS + 1)
        owner = opened(job_url)  # has read position 1, not saved yet
        paused.save(state(2))  # lands: the state object is still the one it saw
        with pytest.raises(StateLockedError, match="changed by another run"):
            owner.save(state(40))
        assert lost(owner)
        owner.unlock()
        with pytest.raises(StateLockedError, match="taken over"):
            paused.check_lock()
    assert position(open_store(job_url)) == 2


def test_two_runs_racing_for_one_job_exactly_one_wins_in_100_trials(job_url: str) -> None:
    for trial in range(100):
        outcomes = race(job_url.replace("job.state", f"job-{trial}.state"))
        winners = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
        losers = [outcome for outcome in outcomes if isinstance(outcome, StateLockedError)]
        assert (len(winners), len(losers)) == (1, 1), f"trial {trial}: {outcomes}"
        assert f"pid {os.getpid()}" in str(losers[0])


def race(url: str) -> list[Store | Exception]:
    """Two threads take the lease of job `url` at once: the store of each that won it,
    and the error of each that did not."""
    start = threading.Barrier(2)
    outcomes: list[Store | Exception] = []

    def run() -> None:
        store = open_store(url)
        start.wait()
        try:
            store.lock()
        except Exception as error:
            outcomes.append(error)
        else:
            outcomes.append(store)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_reset_sets_the_job_aside_and_the_next_run_starts_fresh(job_url: str) -> None:
    run = opened(job_url)
    run.save(state(7))
    run.save(state(8))
    aside = run.set_aside()
    run.unlock()
    assert ".reset-" in str(aside)
    assert open_store(job_url).read() is None
    with pytest.raises(FileNotFoundError):
        open_store(job_url).check_exists()
    objects, key = raw(job_url)
    kept = sorted(name for name in listed(objects, key) if ".reset-" in name)
    assert len(kept) == 2
    blob = objects.get(kept[0], 1 << 20)
    assert blob is not None
    assert orjson.loads(blob.data)["progress"]["position"] == 8


HOLDER = """
import sys
from resumable._store import open_store
store = open_store(sys.argv[1])
store.lock()
store.start_fresh()
store.save(bytes.fromhex(sys.argv[2]))
print("saved", flush=True)
sys.stdin.read()  # holds the lease until it is killed
"""


def hold(url: str) -> subprocess.Popen[str]:
    """A process that opens job `url`, saves position 5 and holds the lease until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, state(5).hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "saved\n"
    return holder


def kill9(holder: subprocess.Popen[str]) -> None:
    holder.kill()  # SIGKILL: the lease stays, marked held
    holder.wait()
    for pipe in (holder.stdout, holder.stdin):
        assert pipe is not None
        pipe.close()


def test_a_run_killed_with_its_lease_held_on_this_host_is_taken_over_at_once_and_resumed(
    shared_job_url: str,
) -> None:
    """While the holder lives a run is refused, naming it; once it is killed with SIGKILL
    (its lease left held, far from expiry) a run of the same host takes the job at once."""
    holder = hold(shared_job_url)
    try:
        run = open_store(shared_job_url)
        with pytest.raises(StateLockedError, match=f"pid {holder.pid} on {socket.gethostname()}"):
            run.lock()
    finally:
        kill9(holder)
    objects, key = raw(shared_job_url)
    blob = objects.get(key + ".lease", 1 << 16)
    assert blob is not None
    lease = orjson.loads(blob.data)
    assert lease["pid"] == holder.pid
    assert lease["expires_at"] > datetime.now(timezone.utc).timestamp()  # not expired
    assert run.holder() is None  # dead: status shows no run holding the job
    run.lock()
    loaded = run.load()
    assert loaded is not None
    assert loaded.document.progress["position"] == 5
    run.save(state(6))
    run.unlock()
    assert position(open_store(shared_job_url)) == 6


def test_a_killed_holder_its_parent_has_not_reaped_yet_is_dead_and_its_lease_taken_at_once(
    shared_job_url: str,
) -> None:
    """A zombie still answers ``kill(pid, 0)``: a nanny that has not yet waited for its
    killed worker must not hold the job up for the lease's minute."""
    holder = hold(shared_job_url)
    try:
        os.kill(holder.pid, signal.SIGKILL)
        # Not waited for: a zombie once /proc says so (waitid with WNOWAIT reaps nothing).
        os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)
        run = open_store(shared_job_url)
        run.lock()
        run.unlock()
    finally:
        kill9(holder)


def dead_lease(url: str) -> tuple[Objects, str, dict[str, object]]:
    """Job `url` with the lease of a killed holder: its objects, the lease's key, and the
    lease as the holder wrote it."""
    kill9(hold(url))
    objects, key = raw(url)
    blob = objects.get(key + ".lease", 1 << 16)
    assert blob is not None
    return objects, key + ".lease", orjson.loads(blob.data)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"boot_id": None, "pid_namespace": None}, id="an-earlier-version's"),
        pytest.param({"host": "another-host"}, id="another-host's"),
        pytest.param({"boot_id": "an-earlier-boot"}, id="an-earlier-boot's"),
        pytest.param({"pid_namespace": "pid:[1]"}, id="another-pid-namespace's"),
    ],
)
def test_a_dead_holders_lease_it_cannot_tell_is_dead_is_taken_over_only_after_expiry(
    shared_job_url: str, change: dict[str, str | None]
) -> None:
    objects, key, lease = dead_lease(shared_job_url)
    for name, value in change.items():
        if value is None:
            del lease[name]
        else:
            lease[name] = value
    objects.put(key, orjson.dumps(lease))
    run = open_store(shared_job_url)
    with pytest.raises(StateLockedError, match=f"pid {lease['pid']} "):
        run.lock()
    assert isinstance(lease["expires_at"], float)
    with freeze_time(
        datetime.fromtimestamp(lease["expires_at"] + CLOCK_SKEW_SECONDS + 1, timezone.utc),
        tick=False,
    ):
        run.lock()
        run.unlock()


def test_two_runs_racing_for_a_dead_holders_lease_exactly_one_wins_in_20_trials(
    shared_job_url: str,
) -> None:
    objects, key, lease = dead_lease(shared_job_url)
    for trial in range(20):
        url = shared_job_url.replace("job.state", f"job-{trial}.state")
        objects.put(key.replace("job.state", f"job-{trial}.state"), orjson.dumps(lease))
        outcomes = race(url)
        winners = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
        losers = [outcome for outcome in outcomes if isinstance(outcome, StateLockedError)]
        assert (len(winners), len(losers)) == (1, 1), f"trial {trial}: {outcomes}"
        assert f"pid {os.getpid()}" in str(losers[0])  # the winner, not the dead holder


def test_a_store_that_cannot_be_reached_is_no_damage_and_says_what_failed_in_a_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(NotDamagedError) as raised:
        open_store(f"s3://{BUCKET}/job.state").read()
    message = str(raised.value)
    assert message.startswith(f"s3://{BUCKET}/job.state cannot be read: ")
    assert "the backup is not used and nothing was changed" in message
    assert "Debug source" not in message
    assert "\n" not in message
    assert f"Error performing GET http://127.0.0.1:1/{BUCKET}/job.state" in message
