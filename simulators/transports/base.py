"""What every transport does for a simulated device, whatever it speaks.

A transport carries batches of messages (`send`) and raw bytes (`send_raw`, for the garbage fault) to the
platform, and reports back to the device through its `DeviceLink`: acknowledgements (`on_ack`, whether they
come asynchronously as MQTT `down/ack` or synchronously in a CoAP/HTTP response), commands (`on_command`),
other downlinks, and the link going up or down (`on_link`). `send` raises `LinkDown` when it cannot deliver;
the device keeps the messages in its outbox and replays them when `on_link(True)` comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from simulators.wire import MAX_UPLINK_BYTES, Ack, Encoding

log = logging.getLogger("simulators.transports")


class LinkDown(ConnectionError):
    """The transport cannot deliver now (disconnected, link dropped, timeout, server unavailable)."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A device's credentials as the vendor API returned them (docs/protocol.md, "Identity")."""

    device_id: str
    secret: str
    kind: str
    market: str | None = None
    keepalive_s: int = 60

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> DeviceIdentity:
        market = row.get("market")
        return cls(
            device_id=str(row["device_id"]),
            secret=str(row["secret"]),
            kind=str(row["kind"]),
            market=None if market in (None, "", "_") else str(market),
            keepalive_s=int(row.get("keepalive_s") or 60),
        )


class DeviceLink(Protocol):
    """What a transport calls back: the simulated device."""

    identity: DeviceIdentity

    def now(self) -> datetime:
        """The device's clock (it may be skewed on purpose)."""
        ...

    def on_ack(self, ack: Ack) -> None: ...

    def on_command(self, body: Any) -> None: ...

    def on_downlink(self, channel: str, body: Any) -> None: ...

    def on_link(self, up: bool) -> None: ...


class Transport(ABC):
    """Base class: link state, the drop-link fault window, and reconnect back-off."""

    name: ClassVar[str] = "transport"
    #: Largest uplink this transport carries, and how many messages it puts in one.
    max_batch_bytes: int = MAX_UPLINK_BYTES - 1024
    max_batch_messages: int = 50

    def __init__(
        self, *, encoding: Encoding = "json", reconnect_min_s: float = 0.2, reconnect_max_s: float = 30.0
    ) -> None:
        self.encoding: Encoding = encoding
        self.link: DeviceLink | None = None
        self.connected = False
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.last_error: str | None = None
        self._held_down_until = 0.0  # loop time until which a dropped link stays down
        self._failures = 0
        self._rng = random.Random()

    @property
    def identity(self) -> DeviceIdentity:
        if self.link is None:
            raise RuntimeError(f"{self.name} transport used before start()")
        return self.link.identity

    # -- the interface devices use --------------------------------------------
    @abstractmethod
    async def start(self, link: DeviceLink) -> None:
        """Begin connecting in the background (returns promptly); `link.on_link(True)` follows when up."""

    @abstractmethod
    async def close(self) -> None:
        """Leave gracefully (MQTT: retained `offline`, then DISCONNECT)."""

    @abstractmethod
    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Deliver one uplink carrying `messages` (one object, or an array when several). Raises LinkDown."""

    @abstractmethod
    async def send_raw(self, channel: str, data: bytes) -> None:
        """Deliver bytes as they are (the garbage fault). Raises LinkDown."""

    async def drop_link(self, seconds: float) -> None:
        """Break the link now, as a cable pull would, and keep it down for `seconds`."""
        self._held_down_until = asyncio.get_running_loop().time() + seconds
        self._set_connected(False, f"link dropped for {seconds:g}s")

    # -- helpers for subclasses ---------------------------------------------
    def held_down_for(self) -> float:
        """Seconds the drop-link fault still keeps the link down (0 when not)."""
        return max(0.0, self._held_down_until - asyncio.get_running_loop().time())

    def backoff(self) -> float:
        """The next reconnect delay: exponential from reconnect_min_s to reconnect_max_s, with jitter."""
        delay = min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(self._failures, 16))
        self._failures += 1
        return delay * self._rng.uniform(0.8, 1.2)

    def reset_backoff(self) -> None:
        """A request or connection succeeded: the next failure starts the back-off from the bottom again."""
        self._failures = 0
        self.last_error = None

    def _set_connected(self, up: bool, why: str | None = None) -> None:
        if not up and why:
            self.last_error = why
        if up == self.connected:
            return
        self.connected = up
        if self.link is not None:
            self.link.on_link(up)


class RequestTransport(Transport):
    """Base for request/response transports (CoAP, HTTP): there is no connection, so the link counts as up
    until a request fails; then it is down for a back-off delay and comes back up on its own (the device
    replays its outbox then)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._revive: asyncio.Task[None] | None = None

    async def start(self, link: DeviceLink) -> None:
        self.link = link
        self._set_connected(True)

    async def close(self) -> None:
        if self._revive is not None:
            self._revive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._revive
        self.connected = False

    def _ensure_up(self) -> None:
        if not self.connected or self.held_down_for() > 0:
            raise LinkDown(self.last_error or "link down")

    def _failed(self, why: str, delay: float | None = None) -> LinkDown:
        """Mark the link down and schedule it back up; returns the exception to raise."""
        self._set_connected(False, why)
        self._schedule_revive(self.backoff() if delay is None else delay)
        return LinkDown(why)

    def _schedule_revive(self, delay: float) -> None:
        if self._revive is not None and not self._revive.done():
            return

        async def revive() -> None:
            while True:
                await asyncio.sleep(max(delay, self.held_down_for()))
                if self.held_down_for() <= 0:
                    break
            self._set_connected(True)

        self._revive = asyncio.get_running_loop().create_task(revive())

    async def drop_link(self, seconds: float) -> None:
        await super().drop_link(seconds)
        self._schedule_revive(seconds)
