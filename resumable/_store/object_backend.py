"""The objects behind a store URL, and the few operations on them that the store needs.

`open_objects` turns a URL into a backend of obstore (imported here, and only when a URL
is opened: it is the ``s3`` extra) and the key of the state object:

| URL | backend | key |
| --- | --- | --- |
| ``s3://bucket/crawl/job.state`` (``gs://``, ``az://``...) | `from_url` (1) | ``crawl/job.state`` |
| ``memory://name/job.state`` | one ``MemoryStore`` per name, per process | ``job.state`` |
| ``file:///data/crawl/job.state`` | a ``LocalStore`` on ``/data/crawl`` | ``job.state`` |

(1) obstore's ``from_url`` for the bucket, configured from the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... as obstore documents).

Every put is of a whole object and atomic for readers. `create` and `replace` are the
conditional puts (create-if-absent, update-if-ETag-matches) that the lease and the saves
stand on. obstore has both for memory and object stores, but its local store has no
update-if-ETag: `LocalObjects` makes the test and the put one step under an OS lock on a
file beside the objects, which every conditional put there takes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from resumable._errors import UsageError

if TYPE_CHECKING:
    from obstore.store import ObjectStore as Backend

if sys.platform == "win32":  # pragma: no cover - Windows only
    import msvcrt

    def _lock_exclusive(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises OSError

else:
    import fcntl

    def _lock_exclusive(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the ETag they were read under."""

    data: bytes
    etag: str


class TooLargeError(Exception):
    """An object larger than a reader accepts; its bytes were not read."""

    def __init__(self, key: str, etag: str) -> None:
        super().__init__(key)
        self.etag = etag


# One MemoryStore per memory://<name>, so that two stores opened on one URL in this
# process (two runs racing for a job, in a test) see the same objects.
_memory: dict[str, Backend] = {}
_memory_guard = threading.Lock()


class Objects:
    """One bucket (or memory store, or folder): get, put, the conditional puts, copy,
    delete. Raises what obstore raises; `failures` lists those types for the callers."""

    def __init__(self, backend: Backend) -> None:
        import obstore.exceptions

        self._backend = backend
        self.failures: tuple[type[Exception], ...] = (obstore.exceptions.BaseError, OSError)

    def get(self, key: str, max_bytes: int) -> Blob | None:
        """The object at `key`; None when there is none. `TooLargeError` when it holds
        more than `max_bytes`, checked before its bytes are read."""
        import obstore

        try:
            result = obstore.get(self._backend, key)
        except FileNotFoundError:
            return None
        etag = result.meta["e_tag"] or ""
        if result.meta["size"] > max_bytes:
            raise TooLargeError(key, etag)
        return Blob(bytes(result.bytes()), etag)

    def etag(self, key: str) -> str | None:
        """The ETag of the object at `key`; None when there is none."""
        import obstore

        try:
            return obstore.head(self._backend, key)["e_tag"] or ""
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> str:
        """Write `data` at `key`, whatever is there; return its ETag."""
        import obstore

        return obstore.put(self._backend, key, data, use_multipart=False)["e_tag"] or ""

    def create(self, key: str, data: bytes) -> str | None:
        """Write `data` at `key` if no object is there; its ETag, or None when one was."""
        import obstore
        import obstore.exceptions

        try:
            return obstore.put(self._backend, key, data, mode="create")["e_tag"] or ""
        except (obstore.exceptions.AlreadyExistsError, obstore.exceptions.PreconditionError):
            return None

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write `data` at `key` if the object there has ETag `etag`; its new ETag, or
        None when the object changed or is gone."""
        import obstore
        import obstore.exceptions

        try:
            result = obstore.put(self._backend, key, data, mode={"e_tag": etag})
        except (obstore.exceptions.PreconditionError, FileNotFoundError):
            return None  # S3 says 404 for a missing object, some servers 412
        return result["e_tag"] or ""

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        """The keys under `prefix` (a folder: ``crawl/`` or ``""``), with their ETags."""
        import obstore

        for batch in obstore.list(self._backend, prefix or None):
            for meta in batch:
                yield meta["path"], meta["e_tag"] or ""

    def copy(self, source: str, target: str) -> None:
        """Copy the object at `source` to `target` (on the server: no bytes come here)."""
        import obstore

        obstore.copy(self._backend, source, target)

    def delete(self, key: str) -> None:
        """Delete the object at `key`; nothing when there is none."""
        import obstore

        with suppress(FileNotFoundError):
            obstore.delete(self._backend, key)


class LocalObjects(Objects):
    """Objects in a local folder: the conditional puts run under an OS lock on
    ``.resumable-objects.lock`` in the folder, since obstore's local store has no
    update-if-ETag. Processes on other machines sharing the folder are not covered."""

    def __init__(self, backend: Backend, folder: str) -> None:
        super().__init__(backend)
        self._lock_file = os.path.join(folder, ".resumable-objects.lock")

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_exclusive(fd)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def create(self, key: str, data: bytes) -> str | None:
        """Write `data` at `key` if no object is there (under the folder's lock)."""
        with self._exclusive():
            return super().create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write `data` at `key` if its ETag is `etag`: the test and the put under the
        folder's lock."""
        with self._exclusive():
            if self.etag(key) != etag:
                return None
            return self.put(key, data)


def describe(error: Exception) -> str:
    """What went wrong in a request, in a line: obstore's message without the debug dump
    it appends (``Debug source: ...``, dozens of lines)."""
    return str(error).split("\n\nDebug source:", 1)[0].strip()


def open_objects(url: str) -> tuple[Objects, str]:
    """The objects of store URL `url`, and the key of its state object in them."""
    parts = urlsplit(url)
    scheme, name = parts.scheme.lower(), parts.path.lstrip("/")
    if not name or name.endswith("/") or parts.query or parts.fragment:
        raise UsageError(
            f"{url} does not name a state object: give its full name, e.g. "
            f"{scheme}://{parts.netloc or 'bucket'}/crawl/job.state"
        )
    if scheme == "file":
        folder, name = os.path.split(os.path.abspath(parts.path))
        return _open(url, folder), name
    return _open(url), name


def open_prefix(url: str) -> tuple[Objects, str, str]:
    """The objects under the store URL `url` of a folder (``s3://bucket/crawl/``), the key
    prefix of that folder in them, and the URL that a key is appended to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise UsageError(f"{url} is not a folder of jobs: e.g. {scheme}://bucket/crawl/")
    if scheme == "file":
        folder = os.path.abspath(parts.path)
        return _open(url, folder, create=False), "", f"file://{folder.rstrip('/')}/"
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return _open(url), prefix, f"{scheme}://{parts.netloc}/"


def _open(url: str, folder: str | None = None, create: bool = True) -> Objects:
    """The backend of `url`'s bucket (or memory store, or local `folder`)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        import obstore.store
    except ImportError:
        raise UsageError(
            f"{url} is on object storage, which needs obstore: pip install 'resumable-loop[s3]'"
        ) from None
    if scheme == "memory":
        with _memory_guard:
            backend = _memory.setdefault(parts.netloc, obstore.store.MemoryStore())
        return Objects(backend)
    if folder is not None:
        if create:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            raise FileNotFoundError(f"{url}: no such folder")
        return LocalObjects(obstore.store.LocalStore(folder), folder)
    if not parts.netloc:
        raise UsageError(f"{url} names no bucket: e.g. {scheme}://bucket/crawl/job.state")
    try:
        backend = obstore.store.from_url(f"{scheme}://{parts.netloc}")
    except (obstore.exceptions.BaseError, ValueError) as error:
        raise UsageError(f"cannot open {url}: {error}") from None
    return Objects(backend)
