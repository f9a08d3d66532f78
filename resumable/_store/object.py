"""A job kept on object storage (S3 and the like, ``memory://``, ``file://``): `ObjectStore`.

For the state object ``s3://bucket/crawl/job.state`` the store uses these objects:

| object | what it holds |
| --- | --- |
| ``crawl/job.state`` | the state document (`resumable._store.document`) |
| ``crawl/job.state.bak`` | the previous generation, resumed from when the state is damaged |
| ``crawl/job.state.lease`` | who has the job open, until when (`resumable._store.lease`) |
| ``crawl/job.state.corrupt-<time>`` | a damaged state object, kept at the next save |
| ``crawl/job.state.reset-<time>`` (``.bak``) | a job set aside: `reset`, ``restart=True`` |

A save is two puts, in this order: the state object's current bytes (which this run read
or wrote last) to the backup, then the new document to the state object, conditional on
its ETag being the one this run last saw. A crash between the two leaves the backup equal
to the state object: both the last save, a consistent pair. A reader sees the old object
or the new, never a part (each put is whole). The conditional put is the fence: if
another run took the job over (this run paused past its lease) and saved, this run's
save fails with `StateLockedError` instead of overwriting the other's progress.

A damaged state object is never overwritten silently: the run resumes from the backup,
and its first save copies the damaged bytes to ``<key>.corrupt-<time>`` before the new
state replaces them (the backup, the state resumed from, stays as it is).

Journals: keyed progress (``key=``) and failure records (``on_error=``) keep journals of
appended records; objects have no append, so they are kept as chunk objects, one per save
that adds entries (`resumable._store.object_journal`), each put before the state object
that commits it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from resumable._errors import StateFileError, StateLockedError, StateWriteError, warn
from resumable._store import document
from resumable._store.document import MAX_BYTES, Loaded, NotDamagedError, StateDocument
from resumable._store.journal_api import JournalChange, JournalRead, JournalReference
from resumable._store.journal_codec import Kind
from resumable._store.lease import LEASE_SECONDS, Lease, LeaseHolder
from resumable._store.object_backend import Blob, TooLargeError, describe, open_objects
from resumable._store.object_journal import ObjectJournals
from resumable._store.url import JobURL

logger = logging.getLogger("resumable")


class ObjectStore:
    """A job's state object with its backup and lease, at a store URL; every save is one
    atomic put, fenced by the ETag this run last saw."""

    def __init__(self, url: str, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.url = JobURL(url)
        self._objects, self._key = open_objects(url)
        self._name = self._key.rsplit("/", 1)[-1]
        self._backup_key = self._key + ".bak"
        self._lease = Lease(self._objects, self._key + ".lease", url, lease_seconds)
        self._journals = ObjectJournals(self._objects, self._key, url)
        # The state object as this run last read or wrote it: its ETag (the next save's
        # condition; None: there is none) and, when it is intact, its bytes (the next
        # save keeps them as the backup).
        self._etag: str | None = None
        self._previous: bytes | None = None
        self._damaged = False  # the state object is damaged: this run resumed from the backup
        self._fresh = False  # a new job, whose first save sets an earlier job's objects aside
        self._fenced = False  # a save found the state object changed by another run

    @property
    def path(self) -> JobURL:
        """The state object's URL, as given: what messages name."""
        return self.url

    @property
    def backup(self) -> JobURL:
        """The backup object's URL."""
        return JobURL(self.url + ".bak")

    @property
    def lock_lost(self) -> bool:
        """Whether this run lost the job: its lease taken over, or its save fenced off."""
        return self._lease.lost or self._fenced

    # -- the lease -------------------------------------------------------------------------

    def holder(self) -> LeaseHolder | None:
        """Who holds the job's lease right now (host, pid, expiry); None when nobody does."""
        with self._reading():
            return self._lease.holder()

    def lock(self) -> None:
        """Take the job's lease, or raise `StateLockedError` naming its holder; a thread
        renews it until `unlock`."""
        with self._writing("could not take the lease of"):
            self._lease.acquire()
        self._fenced = False
        self._lease.keep_renewed()

    def unlock(self) -> None:
        """Release the job's lease (marked released: the next run takes it at once)."""
        with self._writing("could not release the lease of"):
            self._lease.release()

    def check_lock(self) -> None:
        """Raise `StateLockedError` unless this run still holds the lease, renewing it
        when a third of it has passed. Call it before a save."""
        with self._writing("could not renew the lease of"):
            self._lease.check()

    def remove_stale_temp_files(self) -> None:
        """Nothing to remove: a put leaves no temp object behind."""

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> Loaded | None:
        """The saved state (or the backup's) without the lease, changing nothing; None for
        a fresh job."""
        return self._read_state()

    def load(self) -> Loaded | None:
        """Read the state (or its backup) for the run holding the lease; None for a fresh
        job."""
        return self._read_state(remember=True)

    def check_exists(self) -> None:
        """Raise `FileNotFoundError` unless there is a state object."""
        with self._reading():
            found = self._objects.etag(self._key)
        if found is None:
            raise FileNotFoundError(f"no state object at {self.url}: nothing to reset")

    def _read_state(self, remember: bool = False) -> Loaded | None:
        """The state object's document, or its backup's when it is damaged; None when
        there is no state object. `StateFileError` when neither can be used."""
        main = self._get(self._key)
        if main is None:
            return None
        found = self._decode(main, self.url)
        if isinstance(found, StateDocument):
            if remember:
                assert isinstance(main, Blob)  # an object too large is no document
                self._etag, self._previous, self._damaged = main.etag, main.data, False
            return Loaded(found, from_backup=False)
        backup_url = self.url + ".bak"
        backup = self._get(self._backup_key)
        fallback = (
            StateFileError(f"there is no backup ({backup_url})")
            if backup is None
            else self._decode(backup, backup_url)
        )
        if not isinstance(fallback, StateDocument):
            raise StateFileError(
                f"{found}, and {fallback}. Nothing was changed. Restore the object, or start "
                f"over with restart=True: the old object is kept as {self._name}.reset-<time>."
            )
        warn(
            f"{found}; resuming from the backup {backup_url}. The damaged object is kept as "
            f"{self._name}.corrupt-<time> at the first save.",
        )
        if remember:
            self._etag, self._previous, self._damaged = main.etag, None, True
            self._journals.from_backup = True
        return Loaded(fallback, from_backup=True)

    def _get(self, key: str) -> Blob | TooLargeError | None:
        with self._reading():
            try:
                return self._objects.get(key, MAX_BYTES)
            except TooLargeError as error:
                return error

    @staticmethod
    def _decode(blob: Blob | TooLargeError, where: str) -> StateDocument | StateFileError:
        if isinstance(blob, TooLargeError):
            return StateFileError(
                f"{where} is larger than any state object ({MAX_BYTES // 2**20} MiB at most)"
            )
        try:
            return document.decode(blob.data, where)
        except NotDamagedError:
            raise
        except StateFileError as error:
            return error

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A failed request says nothing about the bytes: `NotDamagedError`, never damage
        that would send the job to its backup."""
        try:
            yield
        except self._objects.failures as error:
            raise NotDamagedError(
                f"{self.url} cannot be read: {describe(error)}. That says nothing about its "
                "content, so the backup is not used and nothing was changed. Check the "
                "credentials, the endpoint and the network, then run again."
            ) from error

    # -- writing ---------------------------------------------------------------------------

    def start_fresh(self) -> None:
        """This run is a new job: its first save sets any earlier job's objects aside."""
        self._fresh = True

    def save(self, data: bytes) -> None:
        """Replace the state object with `data` in one put, if it is still the one this run
        last saw; the previous one becomes the backup. `StateLockedError` when another run
        changed it (this run lost the job)."""
        with self._writing("could not save progress to"):
            if self._fresh:
                # An earlier job's objects must not become this job's backup: were this
                # job's state damaged, the fallback would resume the other job.
                self._set_aside_objects()
                self._etag, self._previous, self._damaged = None, None, False
            elif self._damaged:
                self._objects.copy(self._key, self._aside_key("corrupt"))
            elif self._previous is not None:
                self._objects.put(self._backup_key, self._previous)
            etag = (
                self._objects.create(self._key, data)
                if self._etag is None
                else self._objects.replace(self._key, data, self._etag)
            )
        if etag is None:
            self._fenced = True
            raise StateLockedError(
                f"{self.url} was changed by another run since this run read it: that run "
                "holds the job now, and this run stopped without overwriting its progress. "
                "Items finished since this run's last save will run again in the other."
            )
        self._etag, self._previous = etag, data
        self._fresh = self._damaged = False
        try:
            self._journals.saved()
        except self._objects.failures as error:
            # The save is made; chunks left behind cost storage only.
            logger.warning("%s: could not delete journal chunks: %s", self.url, describe(error))

    def set_aside(self) -> JobURL:
        """Copy the state object and its backup aside, then delete them, under the lease;
        return the URL where the state object went. `FileNotFoundError`
        when there is no state object, and nothing is changed then."""
        self.check_exists()
        with self._writing("could not set aside"):
            aside = self._set_aside_objects()
        return JobURL(self.url[: -len(self._name)] + aside.rsplit("/", 1)[-1])

    def _set_aside_objects(self) -> str:
        """Copy the state object and its backup to ``<name>.reset-<time>`` (and ``.bak``),
        then delete the backup and the state object, in that order: a crash leaves the job
        as it was (less its backup, kept aside), never a fresh job beside the old
        job's backup. Returns the key of the aside state object."""
        aside = self._aside_key("reset")
        found = False
        if self._objects.etag(self._key) is not None:
            self._objects.copy(self._key, aside)
            found = True
        if self._objects.etag(self._backup_key) is not None:
            self._objects.copy(self._backup_key, aside + ".bak")
            found = True
        if found:
            self._objects.delete(self._backup_key)
            self._objects.delete(self._key)
        return aside

    def _aside_key(self, reason: str) -> str:
        """A free key ``<key>.<reason>-<UTC time>``, with ``-2``, ``-3``... when taken."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside, count = f"{self._key}.{reason}-{stamp}", 1
        while any(self._objects.etag(key) is not None for key in (aside, aside + ".bak")):
            count += 1
            aside = f"{self._key}.{reason}-{stamp}-{count}"
        return aside

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._objects.failures as error:
            raise StateWriteError(
                f"{what} {self.url}: {describe(error)}. The saved state object is as it was before "
                "this request; items finished since the last save will run again next time."
            ) from error

    # -- journals: chunk objects (`resumable._store.object_journal`) ---------------------

    def new_journal(self, kind: Kind) -> JournalReference:
        """A new journal of `kind`; nothing is written yet."""
        return self._journals.new_journal(kind)

    def read_journal(self, kind: Kind, reference: JournalReference) -> JournalRead:
        """The committed entries of the journal `reference` names."""
        with self._reading():
            return self._journals.read_journal(kind, reference)

    def write_journal(self, change: JournalChange) -> JournalReference:
        """Put what `change` adds, before the state object that commits it."""
        with self._writing(f"could not save the {change.kind.name} of"):
            return self._journals.write_journal(change)

    def remove_retired_journals(self) -> None:
        """Nothing to do here: a save deletes the chunks no state names any more."""

    def close_journals(self) -> None:
        """Nothing to close: every chunk is a whole put."""
