"""`Repeating`: one background loop that runs an async step every `interval` seconds or when woken, and stops
between steps.

The rules service's writers (alerts, engine state, the outbox, escalation) go through the registry database
in transactions. Cancelling a task inside one can leave a SQLite connection mid-transaction for whoever
comes next, so these loops are asked to stop and finish their step instead; only a step that overruns
`stop_timeout` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Repeating"]

log = logging.getLogger(__name__)


class Repeating:
    def __init__(self, step: Callable[[], Awaitable[Any]], interval: float | Callable[[], float], name: str, *,
                 stop_timeout: float = 10.0) -> None:
        self._step, self._interval, self.name = step, interval, name
        self.stop_timeout = stop_timeout
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the step, so a wake during the step is not lost
            try:
                await self._step()
            except Exception:  # the database may be briefly away: log, and try again next time
                log.exception("%s: step failed", self.name)
            if self._stopping:
                break
            interval = self._interval() if callable(self._interval) else self._interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(interval, 0.0)):
                    await self._wake.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
        except TimeoutError:
            log.warning("%s did not stop within %ss; cancelling it", self.name, self.stop_timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
