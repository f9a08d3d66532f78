"""Run the shards of a job on a Dask cluster: one task per shard, retried by Dask.

::

    from distributed import Client
    import resumable.dask
    from resumable import Resumable, shards

    def work(part):
        with Resumable(part.state) as r:
            for url in r.iterate(part.items):
                fetch(url)

    parts = shards(urls, 64, job="/mnt/shared/crawl/")
    resumable.dask.run(work, parts, client=Client("scheduler:8786"))

Nothing here schedules or queues: it is ``client.map(work, parts, retries=...)`` and a
gather. A shard whose worker dies is run again by Dask on another worker, and resumes
from its saved state. Dask is imported when `run` is called (the ``dask`` extra).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from resumable._errors import UsageError
from resumable._shards import Shard, shards_failed

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
R = TypeVar("R")


def run(
    work: Callable[[Shard[T]], R],
    parts: Sequence[Shard[T]],
    *,
    client: Client | None = None,
    retries: int = 3,
) -> list[R]:
    """Run ``work(shard)`` for every shard as a Dask task; return the results in shard order.

    `client` defaults to the current Dask client (``distributed.get_client()``). A task
    that raises is run again up to `retries` times (``client.map(..., retries=)``); one
    whose worker dies is run again by the scheduler (up to its
    ``distributed.scheduler.allowed-failures`` deaths). Every shard runs to its end; then,
    if any failed for good, `ShardFailedError` names them, chained from the first one's
    error.
    """
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "resumable.dask needs Dask's distributed: pip install 'resumable-loop[dask]'"
        ) from None
    parts = list(parts)
    if not all(isinstance(part, Shard) for part in parts):
        raise UsageError("resumable.dask.run(work, parts): parts must be what shards() returns")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"retries must be a whole number, 0 or more; got {retries!r}")
    if client is None:
        client = distributed.get_client()
    # Keys that name the shards: Dask's dashboard and logs then say which shard is which.
    name = getattr(work, "__name__", "work")
    token = uuid.uuid4().hex[:8]
    keys = [f"{name}-shard-{part.index}-{token}" for part in parts]
    futures = client.map(work, parts, key=keys, retries=retries, pure=False)
    # distributed leaves wait, exception and gather untyped.
    distributed.wait(futures)  # type: ignore[no-untyped-call]
    ended = zip(parts, futures, strict=True)
    failed = [(part, future) for part, future in ended if future.status == "error"]
    if failed:
        cause = failed[0][1].exception()  # type: ignore[no-untyped-call]
        raise shards_failed([part for part, _ in failed], len(parts), cause) from cause
    results: list[R] = client.gather(futures)  # type: ignore[no-untyped-call]
    return results
