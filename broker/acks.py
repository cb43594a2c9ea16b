"""`AckPublisher`: sends each uplink's `Ack` to the device's `down/ack` topic, coalescing per topic.

The pipeline resolves all uplinks of a batch at once; a device that sent ten uplinks in that batch gets one
acknowledgement listing all their seqs (docs/protocol.md allows any number of seqs per ack), which saves the
broker nine QoS 1 publishes. Ordering per device is kept: acks for a topic are merged only while they wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from broker.uplink import Ack

__all__ = ["AckPublisher", "encode_ack", "merge_acks"]

log = logging.getLogger(__name__)


def encode_ack(ack: Ack) -> bytes:
    return json.dumps(ack.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def merge_acks(first: Ack, *more: Ack) -> Ack:
    if not more:
        return first
    acks = (first, *more)
    return Ack(
        first.device_id,
        seqs=[seq for ack in acks for seq in ack.seqs],
        high=max(ack.high for ack in acks),
        rejected=[r for ack in acks for r in ack.rejected],
    )


class AckPublisher:
    def __init__(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        self._publish = publish
        self._pending: dict[str, list[Ack]] = {}  # merged when sent
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def track(self, future: asyncio.Future[Ack], topic: str) -> None:
        """Publish the ack on `topic` once `future` resolves."""
        future.add_done_callback(partial(self._done, topic))

    def send(self, topic: str, ack: Ack) -> None:
        self._add(topic, ack)

    def reply_to(self, topic: str) -> Callable[[Ack], None]:
        """A callback that publishes the ack it is given on `topic` (for `IngestPipeline.push`)."""
        return partial(self._add, topic)

    def _done(self, topic: str, future: asyncio.Future[Ack]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self._add(topic, future.result())

    def _add(self, topic: str, ack: Ack) -> None:
        waiting = self._pending.get(topic)
        if waiting is None:
            self._pending[topic] = [ack]
        else:
            waiting.append(ack)
        if not self._scheduled:
            # Runs after the other callbacks of this batch, which are already queued.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        if pending:
            task = asyncio.create_task(self._send({topic: merge_acks(*acks) for topic, acks in pending.items()}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, pending: dict[str, Ack]) -> None:
        # Concurrently: over an MQTT client each publish waits for its PUBACK.
        await asyncio.gather(*(self._send_one(topic, ack) for topic, ack in pending.items()))

    async def _send_one(self, topic: str, ack: Ack) -> None:
        try:
            await self._publish(topic, encode_ack(ack))
            self.sent += 1
        except Exception as err:
            # The device keeps the messages in its outbox and replays them: nothing is lost.
            self.failed += 1
            log.warning("could not publish ack to %s: %s", topic, err)

    async def drain(self) -> None:
        """Wait until every ack produced so far has been handed to the broker."""
        for _ in range(3):
            await asyncio.sleep(0)
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
