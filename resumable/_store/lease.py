"""One run per job on object storage: a lease object, taken and renewed by conditional puts.

There is no flock on a bucket. The run that has the job open holds ``<key>.lease``, a
small JSON object that names it and says until when it holds the job::

    {"host": "worker-7", "pid": 4242, "boot_id": "6f1e...", "pid_namespace": "pid:[4026531836]",
     "token": "9f0c...", "expires_at": 1796432460.5, "released": false}

| step | the put | when another run got there first |
| --- | --- | --- |
| take a free job | create-if-absent | it holds the lease: refuse, naming it |
| take a released, expired or dead holder's lease | update-if-ETag-matches (ETag read) | refuse |
| renew (`check`, before a save) | update-if-ETag-matches (this run's ETag) | job lost |
| release (the end of the run) | update-if-ETag-matches, ``"released": true`` | nothing |

Each write carries a new random token, so two writes never have the same bytes (an S3
ETag is the MD5 of the bytes). The conditional put decides every race: of runs that read
the same lease, exactly one writes the next.

Clocks: ``expires_at`` is the holder's wall clock (`time.time`) plus `LEASE_SECONDS`, and
another run compares it with its own wall clock. This assumes the machines' clocks agree
within `CLOCK_SKEW_SECONDS` (NTP keeps them within milliseconds); a run takes over only
once its clock is that much past the expiry.

A dead holder on this machine: a run killed with SIGKILL cannot release its lease, and
waiting for it to expire would refuse an engine's immediate retry (Dask's) for a minute.
So a lease names the holder's process unambiguously on its machine: its pid, the kernel's
boot id (``/proc/sys/kernel/random/boot_id``: a reboot reuses pids) and its pid namespace
(containers on one kernel share the boot id, not their pids). A run that finds the lease
held by a pid of its own host, boot and pid namespace that no longer exists
(``os.kill(pid, 0)`` raises ProcessLookupError, or it is a zombie) takes it over at once,
with the same conditional put as for an expired lease. A pid reused since by another
process reads as alive, and the run waits for the expiry (the safe side). A holder of
another host, or a lease without a boot id (another system, or written by an earlier
version), is only ever taken over after its expiry.

Renewal: a holder renews once a third of its lease has passed, by its wall clock, in two
places: `check`, before every save, and a renewal thread (`keep_renewed`) that looks every
sixth of the lease, so that an item that runs longer than the lease keeps the job too.
A paused process pauses its thread as well: a run stopped past its lease (SIGSTOP, a
stopped VM) may lose the job to a second run, and then stops at its next save with
`StateLockedError` instead of overwriting (the saves are conditional too: see
`resumable._store.object`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from resumable._errors import StateLockedError
from resumable._store.flock import LockHolder
from resumable._store.object_backend import Objects, TooLargeError, describe

logger = logging.getLogger("resumable")

LEASE_SECONDS = 60.0  # how long a lease lasts from its last renewal
CLOCK_SKEW_SECONDS = 5.0  # how far apart two machines' clocks may be


@dataclass(frozen=True)
class LeaseHolder(LockHolder):
    """A run that holds a job's lease: its process, its host, and when the lease expires
    (seconds since the epoch, by the holder's clock)."""

    host: str = ""
    expires_at: float = 0.0
    # Which machine and pid space `pid` is of ("" where unknown: never taken over early).
    boot_id: str = ""
    pid_namespace: str = ""

    def describe(self) -> str:
        """``pid 4242 on worker-7, lease until 2026-12-05T00:41:00Z``."""
        until = datetime.fromtimestamp(self.expires_at, timezone.utc)
        return (
            f"pid {self.pid} on {self.host or 'an unnamed host'}, lease until "
            f"{until.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )


@dataclass(frozen=True)
class _Record:
    holder: LeaseHolder | None  # None: released, or not a lease any run wrote
    etag: str


class Lease:
    """The lease on one job's state object: `acquire`, `check` (renews), `release`."""

    def __init__(self, objects: Objects, key: str, job: str, seconds: float) -> None:
        self._objects = objects
        self._key = key
        self._job = job  # the state object's URL, as messages name it
        self._seconds = seconds
        self._etag: str | None = None  # this run's lease, while it holds one
        self._renewed_at = 0.0
        self.lost = False
        # The renewal thread and the run's own thread both renew: one at a time.
        self._guard = threading.RLock()
        self._stop_renewing: threading.Event | None = None
        self._renewer: threading.Thread | None = None
        self.renewed_by_thread = threading.Event()  # set at each renewal the thread makes

    @property
    def held(self) -> bool:
        """Whether this run holds the lease (as far as it knows until its next `check`)."""
        return self._etag is not None

    def holder(self) -> LeaseHolder | None:
        """Who holds the lease now; None when it is free, released, expired, or its holder
        died on this machine (the next run takes it at once)."""
        record = self._read()
        if (
            record is None
            or record.holder is None
            or self._expired(record.holder)
            or _died_on_this_machine(record.holder)
        ):
            return None
        return record.holder

    def acquire(self) -> None:
        """Take the lease, or raise `StateLockedError` naming the run that holds it."""
        now = time.time()
        body = self._body(now, released=False)
        etag = self._objects.create(self._key, body)
        if etag is None:
            record = self._read()
            if record is None:  # released and deleted by hand between the two requests
                etag = self._objects.create(self._key, body)
            elif (
                record.holder is None
                or self._expired(record.holder)
                or _died_on_this_machine(record.holder)
            ):
                etag = self._objects.replace(self._key, body, record.etag)
            if etag is None:
                raise self._locked("is open in another run")
        self._etag, self._renewed_at, self.lost = etag, now, False

    def check(self) -> None:
        """Raise `StateLockedError` unless this run still holds the lease; renew it once a
        third of it has passed (one request; none before that)."""
        with self._guard:
            if self._etag is None:
                raise self._taken_over() if self.lost else self._locked("is not held by this run")
            if not self._renew_if_due():
                raise self._taken_over()

    def _renew_if_due(self) -> bool:
        """Renew the lease if a third of it has passed; False when it was taken over."""
        assert self._etag is not None
        now = time.time()
        # A clock set back (now < renewed_at) renews too: the elapsed time is unknown.
        if self._renewed_at <= now < self._renewed_at + self._seconds / 3:
            return True
        etag = self._objects.replace(self._key, self._body(now, released=False), self._etag)
        if etag is None:
            self._etag, self.lost = None, True
            return False
        self._etag, self._renewed_at = etag, now
        return True

    def _taken_over(self) -> StateLockedError:
        return self._locked(
            "was taken over by another run while this run held it (its lease expired: "
            f"it was not renewed for {self._seconds:g} s)"
        )

    def keep_renewed(self) -> None:
        """Start a thread that renews the lease while this run holds it (a daemon: it
        never keeps the process alive); `release` stops it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._renew_until, args=(stop,), name="resumable-lease", daemon=True
        )
        self._stop_renewing, self._renewer = stop, thread
        thread.start()

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self._seconds / 6):
            with self._guard:
                if self._etag is None or stop.is_set():
                    return
                renewed_at = self._renewed_at
                try:
                    if not self._renew_if_due():
                        return  # lost: the run's next save raises (`check`)
                    if self._renewed_at != renewed_at:
                        self.renewed_by_thread.set()
                except self._objects.failures as error:
                    # The store cannot be reached now: try again at the next turn; the
                    # run's next save tries too, and raises if it fails there.
                    logger.debug("%s: could not renew the lease: %s", self._job, describe(error))

    def _stop_renewal(self) -> None:
        stop, thread = self._stop_renewing, self._renewer
        self._stop_renewing = self._renewer = None
        if stop is not None:
            stop.set()
        # Not from the thread itself: a finaliser (an abandoned run) may run on any thread.
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def release(self) -> None:
        """Stop the renewal thread and mark the lease released, if this run still holds
        it; safe to call twice."""
        self._stop_renewal()
        with self._guard:
            etag, self._etag = self._etag, None
        if etag is not None:
            # None back: taken over already, and the lease is the new holder's to keep.
            self._objects.replace(self._key, self._body(time.time(), released=True), etag)

    def _expired(self, holder: LeaseHolder) -> bool:
        return time.time() > holder.expires_at + CLOCK_SKEW_SECONDS

    def _body(self, now: float, released: bool) -> bytes:
        return orjson.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "boot_id": _this_boot_id(),
                "pid_namespace": _this_pid_namespace(),
                "token": uuid.uuid4().hex,
                "expires_at": now + self._seconds,
                "released": released,
            }
        )

    def _read(self) -> _Record | None:
        try:
            blob = self._objects.get(self._key, max_bytes=1 << 16)
        except TooLargeError as error:
            return _Record(None, error.etag)
        if blob is None:
            return None
        try:
            data = orjson.loads(blob.data)
            holder = LeaseHolder(
                pid=int(data["pid"]),
                host=str(data["host"]),
                expires_at=float(data["expires_at"]),
                # Absent from the leases of earlier versions.
                boot_id=str(data.get("boot_id", "")),
                pid_namespace=str(data.get("pid_namespace", "")),
            )
            released = data["released"] is True
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Every put is whole, so no run wrote this: it holds nobody, and a run may
            # take it over with a conditional put like any expired lease.
            return _Record(None, blob.etag)
        return _Record(None if released else holder, blob.etag)

    def _locked(self, what: str) -> StateLockedError:
        holder = self.holder()
        named = f" (held by {holder.describe()})" if holder is not None else ""
        return StateLockedError(
            f"{self._job} {what}{named}. Only one run at a time may work on a job: wait for "
            f"that run to end, or, if it died on another machine, for its lease to expire "
            f"({self._seconds:g} s after its last renewal), then run again.",
            pid=holder.pid if holder is not None else None,
        )


def _died_on_this_machine(holder: LeaseHolder) -> bool:
    """Whether `holder` was a process of this host, boot and pid namespace that no longer
    exists; False whenever that is not certain."""
    if not holder.boot_id or not holder.pid_namespace or holder.pid is None or holder.pid <= 0:
        return False
    if (holder.host, holder.boot_id, holder.pid_namespace) != (
        socket.gethostname(),
        _this_boot_id(),
        _this_pid_namespace(),
    ):
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, as another user's process
        return False
    # A zombie (killed, not yet reaped by its parent: a Dask nanny, say) is dead, and its
    # pid cannot be reused until it is reaped.
    return _is_zombie(holder.pid)  # else alive, or its pid reused: wait for the expiry


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    # ``4242 (name) Z ...``: the state follows the name, which may hold any character.
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


@functools.cache
def _this_boot_id() -> str:
    """The kernel's boot id (Linux): new at each boot; "" elsewhere."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return ""


@functools.cache
def _this_pid_namespace() -> str:
    """This process's pid namespace (Linux: ``pid:[4026531836]``); "" elsewhere."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
