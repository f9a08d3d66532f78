"""Run the shards of a job on a Ray cluster: one task per shard, retried by Ray.

::

    import ray
    import resumable.ray
    from resumable import Resumable, shards

    def work(part):
        with Resumable(part.state, signals=()) as r:
            for url in r.iterate(part.items):
                fetch(url)

    ray.init()
    resumable.ray.run(work, shards(urls, 64, job="s3://bucket/crawl/"))

Nothing here schedules or queues: it is ``ray.remote(max_retries=..., retry_exceptions=True)``
and a ``ray.get`` per shard. A shard whose worker dies is run again by Ray, and resumes
from its saved state. Ray is imported when `run` is called (the ``ray`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from resumable._errors import UsageError
from resumable._shards import Shard, shards_failed

T = TypeVar("T")
R = TypeVar("R")


def run(work: Callable[[Shard[T]], R], parts: Sequence[Shard[T]], *, retries: int = 3) -> list[R]:
    """Run ``work(shard)`` for every shard as a Ray task; return the results in shard order.

    Ray runs a task again up to `retries` times, whether its worker died or it raised
    (``max_retries=retries, retry_exceptions=True``: one budget for both). Every shard
    runs to its end; then, if any failed for good, `ShardFailedError` names them, chained
    from the first one's error. Ray starts a local cluster if ``ray.init`` was not called.
    """
    try:
        import ray
    except ImportError:
        raise UsageError("resumable.ray needs Ray: pip install 'resumable-loop[ray]'") from None
    parts = list(parts)
    if not all(isinstance(part, Shard) for part in parts):
        raise UsageError("resumable.ray.run(work, parts): parts must be what shards() returns")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"retries must be a whole number, 0 or more; got {retries!r}")

    def call(part: Shard[T]) -> R:
        return work(part)

    name = getattr(work, "__name__", type(work).__name__)
    task = ray.remote(max_retries=retries, retry_exceptions=True)(call)
    refs = [task.options(name=f"{name}-shard-{part.index}").remote(part) for part in parts]
    results: list[R] = []
    failed: list[tuple[Shard[T], Exception]] = []
    for part, ref in zip(parts, refs, strict=True):
        try:
            results.append(ray.get(ref))
        except Exception as error:  # Ray's own errors and the task's, as Ray re-raises it
            failed.append((part, error))
    if failed:
        first = failed[0][1]
        # A task's error comes as RayTaskError(ValueError); its .cause is the ValueError.
        cause: BaseException = getattr(first, "cause", None) or first
        raise shards_failed([part for part, _ in failed], len(parts), cause) from first
    return results
