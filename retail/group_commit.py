"""Group commit: many concurrent callers, one write.

    writes = GroupCommit(flush, window_s=0.002, max_batch=500)
    result = await writes.submit(item)      # each caller awaits its own result, or gets its own error

`flush(items) -> list[result | Exception]` gets the items of one batch in arrival order and answers one entry
per item: a result for that caller, or the exception to raise to that caller alone. Batches run one at a time
in one task, so arrival order holds across batches too, and items arriving while a batch is being written form
the next one. The first item after a quiet spell waits `window_s` for company; under load batches fill by
themselves while the previous one is written.

When `flush` raises for a whole batch (a transaction that failed), nothing of it was written: every item is
tried again alone, so only the item that caused it fails, with its own error. `flush` must therefore raise only
before its commit; what fails after it is answered per item.

A caller cancelled before its batch starts is left out of it; once the batch started, its change is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GroupCommit", "GroupCommitStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class GroupCommitStats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    retried_alone: int = 0  # batches whose flush failed as a whole, then tried item by item


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | Exception]]], *, window_s: float = 0.002,
                 max_batch: int = 500, name: str = "group commit") -> None:
        self.flush = flush
        self.window_s = window_s
        self.max_batch = max_batch
        self.name = name
        self.stats = GroupCommitStats()
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError(f"{self.name}: the service is closed")
        if self._task is not None and asyncio.current_task() is self._task:
            # Called from inside a flush (a sender answering synchronously): waiting for the queue would wait for
            # ourselves, so this one is written on its own, now.
            return _unwrap((await self._run([item]))[0])
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=self.name)
        return await future

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then refuse new items. A write that does not finish within `timeout_s` (its
        database gone) is cancelled, and its callers get an error."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                log.error("%s: queued writes did not finish in %.0f s; cancelled", self.name, timeout_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drain(self) -> None:
        if self.window_s > 0:
            await asyncio.sleep(self.window_s)
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            live = [(item, future) for item, future in batch if not future.done()]  # done: the caller gave up
            if not live:
                continue
            try:
                results = await self._run([item for item, _ in live])
            except BaseException as err:  # cancelled while writing: nobody may wait forever
                for _, future in live:
                    if not future.done():
                        future.set_exception(RuntimeError(f"{self.name}: interrupted ({err!r})"))
                raise
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _run(self, items: list[T]) -> list[R | Exception]:
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        try:
            results = await self.flush(items)
        except Exception as err:
            if len(items) == 1:
                return [err]
            self.stats.retried_alone += 1
            log.warning("%s: a batch of %d failed (%s); writing each alone", self.name, len(items), err)
            results = []
            for item in items:
                results += await self._run([item])
            return results
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: flush answered {len(results)} results for {len(items)} items")
        return results


def _unwrap(result: R | Exception) -> R:
    if isinstance(result, Exception):
        raise result
    return result
