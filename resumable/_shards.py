"""Split a job's items into shards that run anywhere, each a job of its own.

`shards` hands out `Shard` objects: an index, the state of that shard (a path or a URL
under the job's folder or prefix) and its items. Each worker opens ``Resumable(shard.state)``
and iterates ``shard.items``; an engine (Dask, Ray) runs and retries the shards.

- By position (no ``key=``): item ``j`` goes to shard ``j % n`` (strided, not contiguous).
  An input that grows at its end keeps every shard's first items (a contiguous split
  would move every boundary), and an input sorted by cost (small files first) spreads
  its costly items over all shards.
- By key (``key=``): the blake2b hash of ``key(item)``, modulo ``n``. An item lands in the
  same shard whatever its position, on every machine (Python's ``hash`` of a str is
  salted per process).

The first call writes ``shards.json`` under the job (create-if-absent): the number of
shards and the kind of split. A later call with another split is refused: the shards'
states name their count, so a changed ``n`` would start every shard over and redo all
the work done so far.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from resumable._errors import InputChangedError, ResumableError, UsageError
from resumable._store.durable import fsync_directory, fsync_file, temp_name, write_all
from resumable._store.url import is_url

T = TypeVar("T")

MANIFEST = "shards.json"
MANIFEST_FORMAT = 1
_MANIFEST_MAX_BYTES = 64 * 1024  # a manifest holds three small fields


@dataclass(frozen=True)
class Shard(Generic[T]):
    """One part of a sharded job: open ``Resumable(shard.state)`` and iterate ``shard.items``.

    Picklable (when its items are), so it travels to the worker that runs it.
    """

    index: int
    """The shard's number, from 0."""
    state: str
    """The state of this shard: a path under the job's folder, or a URL under its prefix."""
    items: Sequence[T]
    """The items of this shard, in the order of the input."""


class ShardFailedError(ResumableError):
    """A shard (or more) failed after the engine's retries; the others ran to their end.

    `failed` lists every failed shard in shard order; the exception is chained from the
    first one's error. Their progress is saved: run the job again to resume them.
    """

    def __init__(self, message: str, failed: Sequence[Shard[Any]] = ()) -> None:
        super().__init__(message)
        self.failed: list[Shard[Any]] = list(failed)

    def __reduce__(self) -> tuple[type[ShardFailedError], tuple[str, list[Shard[Any]]]]:
        return type(self), (str(self), self.failed)


def shards_failed(
    failed: Sequence[Shard[Any]], total: int, cause: BaseException
) -> ShardFailedError:
    """The error for `failed` shards of `total`, the first of which raised `cause`."""
    first = failed[0]
    others = ""
    if len(failed) > 1:
        rest = ", ".join(str(shard.index) for shard in failed[1:11])
        more = ", ..." if len(failed) > 11 else ""
        others = f"; {len(failed) - 1} more failed too: {rest}{more}"
    return ShardFailedError(
        f"shard {first.index} of {total} ({first.state}) failed: "
        f"{type(cause).__name__}: {cause}{others}. The progress of every shard is saved: "
        "fix the cause and run the job again to resume them",
        failed,
    )


def shards(
    items: Iterable[T],
    n: int,
    *,
    job: str | os.PathLike[str],
    key: Callable[[T], str | bytes | int] | None = None,
) -> list[Shard[T]]:
    """Split `items` into `n` shards of the job at `job`, the same way on every machine.

    `job` is a folder every worker sees (a shared mount) or a URL prefix
    (``s3://bucket/crawl/``); shard ``i`` keeps its state in
    ``shard-0000i-of-0000n.state`` there. Without `key`, item ``j`` of a sequence goes
    to shard ``j % n``; with it, to the shard the blake2b hash of ``key(item)`` (a str,
    bytes or int) names. A rerun with another `n` or kind of split raises
    `InputChangedError`: the job's ``shards.json`` records the first.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"shards(n=...) must be a whole number of shards, 1 or more; got {n!r}")
    job = os.fspath(job)
    if not job:
        raise UsageError("shards(job=...) names no folder: give one, e.g. job='crawl/'")
    split = "position" if key is None else "key"
    _check_manifest(job, {"format": MANIFEST_FORMAT, "shards": n, "split": split})
    width = max(5, len(str(n)))
    names = [_join(job, f"shard-{i:0{width}d}-of-{n:0{width}d}.state") for i in range(n)]
    if key is None:
        sequence = items if isinstance(items, Sequence) else list(items)
        return [Shard(i, names[i], sequence[i::n]) for i in range(n)]
    parts: list[list[T]] = [[] for _ in range(n)]
    for item in items:
        parts[_hash_shard(key(item), n)].append(item)
    return [Shard(i, names[i], parts[i]) for i in range(n)]


def _hash_shard(value: object, n: int) -> int:
    """The shard of a key: its blake2b hash modulo `n`, the same in every process."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, int) and not isinstance(value, bool):
        data = str(value).encode()
    else:
        raise UsageError(
            f"shards(key=...) returned {type(value).__name__} {value!r}: return a str, bytes "
            "or int, which hash the same way on every machine"
        )
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def _join(job: str, name: str) -> str:
    if is_url(job):
        return job.rstrip("/") + "/" + name
    return os.path.join(job, name)


def _check_manifest(job: str, wanted: dict[str, object]) -> None:
    """Record the split at the job's first call; refuse another split later."""
    data = orjson.dumps(wanted, option=orjson.OPT_SORT_KEYS) + b"\n"
    where = _join(job, MANIFEST)
    found = _create_url(where, data) if is_url(job) else _create_file(job, where, data)
    if found is None:
        return
    try:
        # One byte past the bound was read, or none (an object too large): no manifest.
        recorded = orjson.loads(found) if len(found) <= _MANIFEST_MAX_BYTES else None
    except orjson.JSONDecodeError:
        recorded = None
    if not isinstance(recorded, dict) or recorded.get("format") != MANIFEST_FORMAT:
        raise InputChangedError(
            f"{where} is not a shards manifest this version reads: it records how the job "
            "was split. Remove it only if no shard of the job has started"
        )
    if recorded == wanted:
        return
    raise InputChangedError(
        f"this job was split into {recorded.get('shards')} shards by "
        f"{recorded.get('split')} ({where}); now into {wanted['shards']} by "
        f"{wanted['split']}. Each shard's progress holds only for its first split: call "
        f"shards(..., n={recorded.get('shards')}) with "
        f"{'key=' if recorded.get('split') == 'key' else 'no key='} as before, or start "
        "the job over under a new job= (or after removing this one's folder)"
    )


def _create_file(folder: str, path: str, data: bytes) -> bytes | None:
    """Write `data` at `path` if there is no file there (durably: a hard link of a synced
    temp file, so no reader sees a part); else the file's bytes."""
    os.makedirs(folder, exist_ok=True)
    temp = temp_name(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
        fsync_file(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        with open(path, "rb") as file:
            return file.read(_MANIFEST_MAX_BYTES + 1)
    finally:
        os.unlink(temp)
    fsync_directory(folder)
    return None


def _create_url(url: str, data: bytes) -> bytes | None:
    """Write `data` at `url` if there is no object there (a conditional put); else its
    bytes."""
    from resumable._store.object_backend import TooLargeError, open_objects

    objects, name = open_objects(url)
    if objects.create(name, data) is not None:
        return None
    try:
        blob = objects.get(name, _MANIFEST_MAX_BYTES)
    except TooLargeError:
        return b""  # not read: no manifest this version wrote, as b"" is none
    return b"" if blob is None else blob.data
