"""One simulated device: a generator for its data, an outbox, a transport, and fault modes.

    device = SimulatedDevice("scale", "acme-SC0001", secret, "SZ-FT-001", MqttTransport(host, port))
    task = asyncio.create_task(device.run())
    ...
    await device.stop()

`run()` boots the device (state message; scales also self-check), then every `interval_s` (±10 % jitter)
appends what the generator says to the outbox under fresh seqs, while a sender pushes the outbox through the
transport in seq order, in batches of the same channel, with at most `max_inflight` messages unacknowledged.
Acknowledged and rejected seqs leave the outbox; unacknowledged ones are sent again after `ack_timeout_s`, and
everything still pending is replayed, in order, whenever the link comes back (断点续传). Commands arriving on
the transport are validated against the kind's command schema and applied to `state` (what tests check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from fleet.kinds import DeviceKind, validate_payload
from simulators.faults import Burst, DropLink, FailedTest, Fault, Garbage, OutOfRange, SkewClock
from simulators.generators import Emission, Generator, make_generator
from simulators.outbox import Outbox, OutboxEntry, open_outbox
from simulators.transports.base import DeviceIdentity, LinkDown, Transport
from simulators.wire import Ack, batches, garbage, rfc3339, utcnow

log = logging.getLogger("simulators.device")


@dataclass
class DeviceStats:
    generated: int = 0  # messages appended to the outbox (= seqs used)
    sent: int = 0  # first transmissions
    resent: int = 0  # transmissions of a seq sent before (replay after a break, ack timeout)
    acked: int = 0  # seqs the platform stored
    rejected: int = 0  # seqs the platform refused for good
    garbage: int = 0  # garbage uplinks sent
    commands: int = 0  # commands applied
    bad_commands: int = 0  # commands refused (schema)
    link_ups: int = 0
    link_downs: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    id: str | None
    command: dict[str, Any]
    applied: bool
    error: str | None = None


class SimulatedDevice:
    def __init__(
        self,
        kind: str,
        device_id: str,
        secret: str,
        market: str | None,
        transport: Transport,
        generator: Generator | None = None,
        outbox: Outbox | None = None,
        interval_s: float | None = 10.0,
        faults: Sequence[Fault] = (),
        *,
        seed: int | str = 0,
        keepalive_s: int = 60,
        ack_timeout_s: float = 30.0,
        max_inflight: int = 500,
        max_messages: int | None = None,
        jitter: float = 0.1,
        boot_message: bool = True,
    ) -> None:
        self.kind = DeviceKind(kind)
        market = None if market in (None, "", "_") else market
        self.identity = DeviceIdentity(device_id, secret, self.kind.value, market, keepalive_s)
        self.transport = transport
        self.generator = generator or make_generator(self.kind, device_id, market, seed)
        self._owns_outbox = outbox is None
        self.outbox = outbox if outbox is not None else open_outbox(None, device_id)
        self.interval_s = interval_s
        self.faults = list(faults)
        self.ack_timeout_s = ack_timeout_s
        self.max_inflight = max_inflight
        self.max_messages = max_messages
        self.jitter = jitter
        self.boot_message = boot_message
        self.clock_skew_s = 0.0
        self.stats = DeviceStats()
        self.commands: list[ReceivedCommand] = []
        self.downlinks: list[tuple[str, Any]] = []
        self.rejections: deque[tuple[int | None, str, str]] = deque(maxlen=100)
        self.last_high: int | None = None
        #: An ESL base station hands `relay` commands to its labels through this (set by MarketSimulation):
        #: `relay(label_id, command) -> delivered`.
        self.relay: Any = None
        #: Carries out `down/ota` jobs when set (`simulators.ota.OtaAgent`; MarketSimulation gives every device one).
        self.ota: Any = None
        self.running = False
        self._rng = random.Random(f"{seed}:{device_id}:device")
        self._inflight: dict[int, float] = {}  # seq → loop time of its last transmission
        self._ever_sent: set[int] = set()
        self._wake_sender = asyncio.Event()
        self._wake_producer = asyncio.Event()
        self._link_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._done: asyncio.Event | None = None
        self._skew_resets: list[asyncio.TimerHandle] = []

    # -- identity, clock, state ------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def market(self) -> str | None:
        return self.identity.market

    @property
    def state(self) -> dict[str, Any]:
        """What the device is and what commands did to it (the generator's model of the device)."""
        return self.generator.state

    @property
    def pending(self) -> int:
        return len(self.outbox)

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def now(self) -> datetime:
        """The device clock: real UTC time plus the skew fault's offset."""
        return utcnow() + timedelta(seconds=self.clock_skew_s)

    # -- producing ---------------------------------------------------------------------------
    def emit(self, emissions: Iterable[Emission]) -> list[OutboxEntry]:
        """Append messages to the outbox under fresh seqs, stamped with the device clock."""
        entries = []
        for channel, payload in emissions:
            if self.max_messages is not None and self.outbox.next_seq >= self.max_messages:
                break
            entries.append(self.outbox.append(channel, payload, rfc3339(self.now())))
        self.stats.generated += len(entries)
        if entries:
            self._drained.clear()
            self._wake_sender.set()
        return entries

    def produce(self, ticks: int = 1) -> list[OutboxEntry]:
        """Run the generator for `ticks` intervals right now."""
        entries: list[OutboxEntry] = []
        for _ in range(ticks):
            entries += self.emit(self.generator.tick(self.now()))
        return entries

    def produce_messages(self, count: int) -> list[OutboxEntry]:
        """Produce at least `count` messages now (or up to `max_messages`)."""
        entries: list[OutboxEntry] = []
        for _ in range(count * 20):
            if len(entries) >= count or self._exhausted():
                break
            entries += self.emit(self.generator.tick(self.now())[: count - len(entries)])
        while len(entries) < count and not self._exhausted():  # a quiet kind: fill with state reports
            entries += self.emit([Emission("state", self.generator.state_payload(self.now()))])
        return entries

    def _exhausted(self) -> bool:
        return self.max_messages is not None and self.outbox.next_seq >= self.max_messages

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until `stop()` (or cancellation): connect, boot, produce, send, obey faults."""
        if self.running:
            raise RuntimeError(f"{self.device_id} is already running")
        self.running = True
        self._done = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            await self.transport.start(self)
            if self.boot_message:
                self.emit(self.generator.boot(self.now()))
            self._tasks = [loop.create_task(self._sender(), name=f"send:{self.device_id}")]
            if self.interval_s:
                self._tasks.append(loop.create_task(self._producer(), name=f"produce:{self.device_id}"))
            for fault in self.faults:
                self._tasks.append(loop.create_task(self._scheduled(fault), name=f"fault:{self.device_id}"))
            await self._stopping.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks = []
            for handle in self._skew_resets:
                handle.cancel()
            if self.ota is not None:
                with contextlib.suppress(Exception):
                    await self.ota.aclose()
            with contextlib.suppress(Exception):
                await self.transport.close()
            self.running = False
            self._stopping.clear()  # a stopped device may run again
            self._done.set()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop producing; wait up to `drain_s` for the outbox to empty; leave gracefully. Idempotent.

        Called before `run()` got going (its task not scheduled yet), it makes that `run()` return at once."""
        if self.running and drain_s > 0:
            for task in self._tasks:
                if task.get_name().startswith("produce:"):
                    task.cancel()
            await self.drain(drain_s)
        self._stopping.set()
        if self._done is not None and self.running:
            await self._done.wait()
        if self._owns_outbox:
            self.outbox.close()
            self._owns_outbox = False

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every message is acknowledged (or rejected); False when `timeout_s` passes first."""
        if len(self.outbox) == 0:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        return len(self.outbox) == 0

    async def _producer(self) -> None:
        assert self.interval_s
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval_s * self._rng.uniform(0, 1)  # spread devices out
        while not self._exhausted():
            delay = next_tick - loop.time()
            due = self.generator.next_due()
            if due is not None:
                delay = min(delay, (due - self.now()).total_seconds())
            if delay > 0:
                self._wake_producer.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake_producer.wait()
            self.emit(self.generator.due(self.now()))
            if loop.time() >= next_tick:
                self.emit(self.generator.tick(self.now()))
                spread = 1 + self._rng.uniform(-self.jitter, self.jitter)
                next_tick = max(next_tick + self.interval_s * spread, loop.time())

    # -- sending --------------------------------------------------------------------------------
    async def _sender(self) -> None:
        # asyncio.timeout, not wait_for, around every wait here: 3.11's wait_for can swallow a cancellation that
        # arrives as the event fires, and the device would then never stop.
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.2, self.ack_timeout_s / 4)):
                    await self._wake_sender.wait()
            self._wake_sender.clear()
            if self.transport.connected:
                await self.flush()

    async def flush(self) -> None:
        """Send everything that is due: new messages, and those unacknowledged for `ack_timeout_s`."""
        loop = asyncio.get_running_loop()
        transport = self.transport
        while transport.connected:
            expired = loop.time() - self.ack_timeout_s
            window = self.outbox.pending(limit=self.max_inflight)
            due = [e for e in window if self._inflight.get(e.seq, expired - 1) < expired]
            waiting = len(window) - len(due)
            if not due or waiting >= self.max_inflight:
                return
            due = due[: self.max_inflight - waiting]
            for batch in batches(
                due,
                channel_of=lambda e: e.channel,
                size_of=lambda e: e.size,
                max_messages=transport.max_batch_messages,
                max_bytes=transport.max_batch_bytes,
            ):
                for entry in batch:  # before sending: a synchronous ack (CoAP, HTTP) arrives inside send()
                    self._inflight[entry.seq] = loop.time()
                try:
                    await transport.send(batch[0].channel, [entry.message for entry in batch])
                except LinkDown as exc:
                    log.debug("%s: send failed: %s", self.device_id, exc)
                    for entry in batch:
                        self._inflight.pop(entry.seq, None)
                    return
                for entry in batch:
                    if entry.seq in self._ever_sent:
                        self.stats.resent += 1
                    else:
                        self._ever_sent.add(entry.seq)
                        self.stats.sent += 1

    # -- what the transport reports ------------------------------------------------------------
    def on_ack(self, ack: Ack) -> None:
        self.stats.acked += self.outbox.ack(ack.seqs)
        rejected = [r for r in ack.rejected if r.seq is not None]
        self.stats.rejected += self.outbox.ack(r.seq for r in rejected if r.seq is not None)
        for r in ack.rejected:
            self.stats.reject_reasons[r.reason] += 1
            self.rejections.append((r.seq, r.reason, r.detail))
        for seq in ack.done:
            self._inflight.pop(seq, None)
            self._ever_sent.discard(seq)
        if ack.high is not None:
            self.last_high = ack.high
        if len(self.outbox) == 0:
            self._drained.set()
        self._wake_sender.set()

    def on_command(self, body: Any) -> None:
        if not isinstance(body, dict):
            self.stats.bad_commands += 1
            self.commands.append(ReceivedCommand(None, {"raw": body}, False, "not a JSON object"))
            return
        command = {k: v for k, v in body.items() if k != "id"}
        command_id = body.get("id")
        try:
            model = validate_payload(self.kind, "command", command)
        except (ValidationError, KeyError) as exc:
            self.stats.bad_commands += 1
            self.commands.append(ReceivedCommand(command_id, command, False, str(exc)[:500]))
            log.info("%s: refused command %s: %s", self.device_id, command.get("command"), exc)
            return
        applied = model.model_dump(mode="json", exclude_none=True)
        self.stats.commands += 1
        self.commands.append(ReceivedCommand(command_id, applied, True))
        self.emit(self.generator.apply_command(applied, self.now()))
        if applied.get("command") == "relay" and self.relay is not None:
            # Over the air to the label; a label out of range (not in this simulation) never hears it.
            delivered = self.relay(applied["label_id"], applied["payload"])
            self.state.setdefault("relay_delivered", []).append((applied["label_id"], bool(delivered)))
        self._wake_producer.set()  # a timed command may be due sooner than the next tick

    def on_retry(self, seqs: Iterable[int]) -> None:
        """The transport asks for these seqs again now (a serial NAK crc/frame/busy, or no reply in time)."""
        for seq in seqs:
            self._inflight.pop(seq, None)
        self._wake_sender.set()

    def on_downlink(self, channel: str, body: Any) -> None:
        self.downlinks = [*self.downlinks[-99:], (channel, body)]
        if channel == "ota" and self.ota is not None and self.running:
            self.ota.handle(body)

    def on_link(self, up: bool) -> None:
        # Either way, nothing is in flight any more: after a break everything pending is replayed in order.
        self._inflight.clear()
        if up:
            self.stats.link_ups += 1
            self._link_up.set()
            self._wake_sender.set()
        else:
            self.stats.link_downs += 1
            self._link_up.clear()

    async def wait_connected(self, timeout_s: float = 10.0) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._link_up.wait()
        return self._link_up.is_set()

    # -- faults ---------------------------------------------------------------------------------
    async def _scheduled(self, fault: Fault) -> None:
        await asyncio.sleep(fault.at_s)
        while True:
            await self.inject(fault)
            if not fault.every_s:
                return
            await asyncio.sleep(fault.every_s)

    async def inject(self, fault: Fault) -> None:
        """Apply a fault now."""
        log.info("%s: fault %s", self.device_id, fault)
        if isinstance(fault, DropLink):
            await self.transport.drop_link(fault.seconds)
        elif isinstance(fault, Garbage):
            for _ in range(fault.count):
                try:
                    await self.transport.send_raw(fault.channel, garbage(self._rng, fault.size))
                    self.stats.garbage += 1
                except LinkDown:
                    break
        elif isinstance(fault, SkewClock):
            self.clock_skew_s += fault.seconds
            if fault.duration_s:
                handle = asyncio.get_running_loop().call_later(fault.duration_s, self._unskew, fault.seconds)
                self._skew_resets.append(handle)
        elif isinstance(fault, Burst):
            self.produce_messages(fault.count)
        elif isinstance(fault, OutOfRange):
            self.generator.anomaly = True
            self.emit(self.generator.tick(self.now()))  # show it at once, not at the next interval
            if fault.duration_s:
                handle = asyncio.get_running_loop().call_later(fault.duration_s, self._clear_anomaly)
                self._skew_resets.append(handle)
        elif isinstance(fault, FailedTest):
            self.emit(self.generator.failed_tests(self.now(), fault.count))
        else:
            raise TypeError(f"unknown fault {fault!r}")

    def _clear_anomaly(self) -> None:
        self.generator.anomaly = False

    def _unskew(self, seconds: float) -> None:
        self.clock_skew_s -= seconds

    def __repr__(self) -> str:
        return f"SimulatedDevice({self.kind.value}, {self.device_id}, {self.transport.name}, pending={self.pending})"
