"""`Batcher`: turns a stream of single items into batches handled by one coroutine call each.

Items are collected until the oldest has waited `max_delay_s`, or `max_items` items / `max_bytes` bytes are
waiting, then `process(batch)` runs and its answers resolve each item's future in order. Batches run one at a
time, so while one is being stored the next fills up: under load there is no added delay at all, and the
store sees one write per batch instead of one per message.

`enqueue` waits while `max_pending` items are queued (back-pressure on the transport). `process` must return
one answer per item; if it raises, `on_error(item, exc)` supplies each item's answer, so callers never see
the exception. An item's answer goes to a future (`enqueue`, `enqueue_nowait`) or, cheaper for a transport that
takes thousands of items a second, straight to a callback (`push`): no future and no event-loop callback per
item.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, Union

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# where an item's answer goes: a future, or a callback run from the batch task
_Target = Union["asyncio.Future[R]", Callable[[R], None]]


class Batcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[Sequence[R]]],
        on_error: Callable[[T, BaseException], R],
        *,
        max_delay_s: float = 0.005,
        max_items: int = 500,
        max_bytes: int = 4 << 20,
        max_pending: int = 20_000,
        size: Callable[[T], int] = lambda _item: 0,
        name: str = "batcher",
    ) -> None:
        self._process = process
        self._on_error = on_error
        self.max_delay_s = max_delay_s
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self._size = size
        self.name = name
        self._queue: collections.deque[tuple[T, _Target[R], float, int]] = collections.deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.items = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def aclose(self, wait_s: float = 30.0) -> None:
        """Process what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, wait_s)
            except TimeoutError:
                log.warning("%s: %d items still queued at shutdown", self.name, len(self._queue))
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while self._queue:
            item, target, _, _ = self._queue.popleft()
            self._answer(target, self._on_error(item, RuntimeError(f"{self.name} closed")))

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def has_room(self) -> bool:
        """False while `max_pending` items wait (then `enqueue` would wait)."""
        return self._space.is_set()

    # ---------------------------------------------------------------- producers

    def enqueue_nowait(self, item: T) -> asyncio.Future[R]:
        """Queue an item without waiting for space (the caller applies its own limit)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._put(item, future)
        return future

    def push(self, item: T, reply: Callable[[R], None]) -> None:
        """Queue an item without waiting for space; `reply(answer)` is called from the batch task when its batch
        is done (an exception it raises is logged, the other items' replies still run)."""
        self._put(item, reply)

    def _put(self, item: T, target: _Target[R]) -> None:
        if self._closing:
            raise RuntimeError(f"{self.name} is closed")
        size = self._size(item)
        queue = self._queue
        queue.append((item, target, time.monotonic(), size))
        self._queued_bytes += size
        if len(queue) >= self.max_pending:
            self._space.clear()
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue an item once there is room; the future resolves with its answer."""
        while not self._space.is_set():
            await self._space.wait()
        return self.enqueue_nowait(item)

    async def submit(self, item: T) -> R:
        return await (await self.enqueue(item))

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._closing and len(queue) < self.max_items and self._queued_bytes < self.max_bytes:
                remaining = queue[0][2] + self.max_delay_s - time.monotonic()
                if remaining > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_full(), remaining)
            batch_items: list[T] = []
            targets: list[_Target[R]] = []
            taken_bytes = 0
            while queue and len(batch_items) < self.max_items and (not batch_items or taken_bytes < self.max_bytes):
                item, target, _, size = queue.popleft()
                taken_bytes += size
                batch_items.append(item)
                targets.append(target)
            self._queued_bytes -= taken_bytes
            if len(queue) < self.max_pending:
                self._space.set()
            await self._run_batch(batch_items, targets)

    async def _wait_full(self) -> None:
        while len(self._queue) < self.max_items and self._queued_bytes < self.max_bytes and not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _run_batch(self, items: list[T], targets: list[_Target[R]]) -> None:
        self.batches += 1
        self.items += len(items)
        try:
            answers = await self._process(items)
            if len(answers) != len(items):
                raise RuntimeError(f"{self.name}: process returned {len(answers)} answers for {len(items)} items")
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(items))
            answers = [self._on_error(item, exc) for item in items]
        answer_to = self._answer
        for target, answer in zip(targets, answers, strict=True):
            answer_to(target, answer)

    def _answer(self, target: _Target[R], answer: R) -> None:
        if isinstance(target, asyncio.Future):
            if not target.done():
                target.set_result(answer)
            return
        try:
            target(answer)
        except Exception:
            log.exception("%s: a reply callback failed", self.name)
