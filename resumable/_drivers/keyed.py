"""The keyed loop: items whose key is not done, one at a time or in batches.

``iterate(items, key=...)`` runs Python code per item (the key function runs per item
anyway): it skips an item whose key is done, or that failed too often, and marks the key
done when the loop asks for the next item. The caller's iterable and key function run in
the generator's frame, so it is no signal-deferring section; the bookkeeping at a
boundary is.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

from resumable._display import open_display
from resumable._drivers.batches import pending_batches
from resumable._drivers.loop import Loop
from resumable._drivers.read_ahead import readers_ahead
from resumable._errors import UsageError, reset_command
from resumable._keys import Key, check_keys
from resumable._progress import KeyProgress, as_keyed
from resumable._progress.keys import check_key_function
from resumable._session import Session
from resumable._signals import defers_signals
from resumable._text import counted, describe_key

T = TypeVar("T")
logger = logging.getLogger("resumable")


class KeyedLoop(Loop):
    """`iterate(..., key=...)`, with or without ``batch=``."""

    def start(self, items: Iterable[T]) -> Iterator[Any]:
        options = self.options
        if options.key is not None:
            # Before the job becomes keyed: a refusal changes nothing.
            check_key_function(options.key)
        keyed = keyed_progress(self._session, options.key)
        self._report_failures(keyed.failures)
        display = open_display(options.progress, items, keyed.position, self._session.path.name)
        self._accept(keyed, display)
        key = check_key_function(options.key)
        loop: Generator[Any, None, None]
        if options.batch is not None:
            loop = self._batches(items, key, keyed, options.batch)
        else:
            loop = self._items(items, key, keyed)
        self._keep(loop)
        return loop

    def _describe(self, where: str | int) -> str:
        return describe_key(where)

    def _items(
        self, items: Iterable[T], key: Callable[[T], str | int], progress: KeyProgress
    ) -> Generator[T, None, None]:
        """Hand out the items whose key is not done; an item is done once the loop asks
        for the next one. Python code per item (the key function runs per item anyway);
        not a signal-deferring section, because the caller's iterable and key run here."""
        # Locals, not attributes or method calls, on the per-item path: each of these saves
        # tens of nanoseconds an item. The containers are never replaced, only changed.
        done, done_add, unsaved_add = progress.done, progress.done.add, progress.unsaved.append
        failures = progress.failures
        failed = failures.items
        max_attempts = self.options.max_attempts
        session, checkpoint = self._session, self._checkpoint
        self._readers = readers_ahead()
        session.signals.loop_running = True
        stop: BaseException | None = None
        try:
            self._refuse_read_ahead(sys._getframe(1))
            countdown = checkpoint.items_between_checks
            for item in items:
                item_key = key(item)
                if type(item_key) is not str and type(item_key) is not int:
                    check_keys([item_key])  # raises UsageError, naming the bad key
                if item_key in done or (
                    failed and item_key in failed and failed[item_key].attempts >= max_attempts
                ):  # done, or given up (left recorded): skipped
                    # No item is in flight, so a signal that came while the input was read
                    # stops the loop here, not after the next item not done.
                    if session.stop_soon and (stop := self._boundary(len(done))):
                        raise stop  # resumable: stopped while skipping; nothing new is done
                    continue
                if progress.finished:  # a finished job whose input brought a new item
                    progress.finished = False
                self.in_flight = item_key
                yield item
                self.in_flight = None
                if self.item_failed:  # recorded by attempt(): retried on a later run
                    self.item_failed = False
                    checkpoint.uncounted += 1
                else:
                    done_add(item_key)
                    unsaved_add(item_key)
                    if failed and item_key in failed:
                        failures.succeeded(item_key)  # it failed before; now it ran
                countdown -= 1
                if countdown <= 0 or session.stop_soon:
                    self._refuse_read_ahead(sys._getframe(1))
                    if stop := self._boundary(len(done)):
                        raise stop  # resumable: stopped between items; the progress is saved
                    countdown = checkpoint.items_between_checks
            if stop := self._input_ended(progress):
                raise stop  # resumable: stopped after the last item; the progress is saved
        finally:
            stop = None  # frees the run at once: see `resumable._drivers.loop`
            session.signals.loop_running = False
            self.close_display()

    def _batches(
        self, items: Iterable[T], key: Callable[[T], Key], progress: KeyProgress, size: int
    ) -> Generator[list[T], None, None]:
        """The keyed loop of `iterate(..., batch=n)`: lists of up to `size` items whose keys
        are not done; a batch is done once the loop asks for the next one. The policy is
        asked after every batch. Not a signal-deferring section: the caller's iterable and
        key run here (the bookkeeping after a batch defers them)."""
        done, failed = progress.done, progress.failures.items
        max_attempts = self.options.max_attempts
        session = self._session

        def skip(item_key: Key) -> bool:  # done, or given up and left recorded
            return item_key in done or (
                item_key in failed and failed[item_key].attempts >= max_attempts
            )

        batches = pending_batches(items, key, skip, size, lambda: session.stop_soon)
        self._readers = readers_ahead()
        session.signals.loop_running = True
        stop: BaseException | None = None
        try:
            self._refuse_read_ahead(sys._getframe(1))
            for keys, batch in batches:
                if batch:
                    if progress.finished:  # a finished job whose input brought new items
                        progress.finished = False
                    self._hand_out(list(keys))
                    yield batch
                    self._refuse_read_ahead(sys._getframe(1))
                    self._count_batch(progress, keys)
                if stop := self._boundary(len(done)):
                    raise stop  # resumable: stopped between batches; the progress is saved
            if stop := self._input_ended(progress):
                raise stop  # resumable: stopped after the last batch; the progress is saved
        finally:
            stop = None  # frees the run at once: see `resumable._drivers.loop`
            session.signals.loop_running = False
            self.batch_out = False
            self.close_display()

    @defers_signals
    def _count_batch(self, progress: KeyProgress, keys: list[Key]) -> None:
        """The keys of a batch whose body ran to its end are done, unless attempt()
        recorded the batch as failed: then a later run retries them."""
        if self._take_batch():
            self._checkpoint.uncounted += len(keys)  # the policy counts them
            return
        progress.done.update(keys)
        progress.unsaved.extend(keys)
        failures = progress.failures
        if failures:
            for item_key in keys:
                failures.succeeded(item_key)  # it failed before; now it ran

    def _input_ended(self, progress: KeyProgress) -> BaseException | None:
        """The end of a keyed loop (by item or by batch): the job is finished, and the keys
        done since the last save are saved at once. Returns the stop of a signal that came
        meanwhile, for the loop to raise (see `Session.stop_asked`)."""
        progress.finished = True
        if progress.unsaved:  # as in the positional loop: the flag alone waits for the exit
            self._checkpoint.save_for_loop("completion")
        path = self._session.path
        logger.info("%s: finished; %s done", path, counted(progress.position, "item"))
        return self._session.stop_asked()


def keyed_progress(session: Session, key: object) -> KeyProgress:
    """The job's keyed progress for a loop given `key` (None: not given): a new job's is
    new; a job keeps its kind."""
    progress = session.progress
    if progress.kind == KeyProgress.kind:
        if key is None:
            raise UsageError(
                f"{session.path} tracks done items by key: pass the same key= as before, "
                "or start over with Resumable(..., restart=True) (at the shell: "
                f"{reset_command(session.path)})"
            )
        return as_keyed(progress)
    if progress.position or progress.finished:
        raise UsageError(
            f"{session.path} tracks done items by position ({progress.position:,} done): "
            "a job keeps the kind of progress it started with. Leave out key=, or start "
            "over with Resumable(..., restart=True) (at the shell: "
            f"{reset_command(session.path)})"
        )
    return KeyProgress.start(session.store)
