"""The loops: each driver hands out the items not done and marks them done.

- `chunked.ChunkedLoop`: progress by position; the items go out in chunks of C iterators,
  so the per-item path runs no Python code of the library (`resumable._feed`).
- `keyed.KeyedLoop`: progress by key; Python code per item, as the key function runs.

Both share `loop.Loop` (the item in flight, the boundary, the read-ahead check) and the
batches of ``iterate(..., batch=n)`` (`batches`). A driver talks only to the progress, the
checkpoint and the session; a new kind of loop (a thread pool, asyncio) is a new module
here.
"""
