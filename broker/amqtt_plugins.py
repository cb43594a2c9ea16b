"""amqtt plugins of the embedded broker: registry authentication, the device topic ACL, and in-process ingest.

Listed in the broker config by dotted path (broker/embedded.py); amqtt builds them, then `EmbeddedBroker`
hands each one the shared `BrokerHub` (`bind`), which holds the registry, the pipeline and presence.

* `RegistryAuthPlugin`: username = client id = device id, password = the device secret, checked by the rule
  of `Registry.check_device_secret`, batched: `CredentialBatch` checks the CONNECTs that arrive together in
  two queries; plus one platform service account (settings) for internal clients. Successful checks are
  cached for `auth_cache_s` (a reconnect storm of 5,000 devices must not cost 10,000 queries twice), but
  a revocation evicts the entry *and* closes the live connection at once
  (`BrokerHub.credential_revoked`, a `fleet.registry.CredentialListener`). A per-device generation counter
  closes the race of a revocation landing while a check or a CONNECT is in flight.
* `DeviceTopicACL`: a device publishes only under `mf/v1/+/{its id}/up/…` and subscribes only to
  `mf/v1/{market|+}/{its id}/down/…`; the service account may do anything. Checked at PUBLISH and at SUBSCRIBE
  (the indexed broker never asks per delivery, see broker/amqtt_broker.py).
* `IngestPlugin`: `on_broker_message_received` hands device uplinks straight to the ingest pipeline (no second
  MQTT hop) and publishes the ack to the device's `down/ack` through the broker's internal publish; a publish
  on anything but the device's own `up/` is dead-lettered `forbidden_topic` (the ACL already kept it from
  subscribers; MQTT 3.1.1 cannot refuse a PUBLISH, so the ack that never comes is how the device learns).
  `up/status` and connect/disconnect events feed presence.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from broker import topics
from broker.acks import AckPublisher
from broker.directory import DeviceDirectory, DeviceInfo
from broker.ingest import IngestPipeline
from broker.presence import PresenceTracker
from broker.uplink import Ack, Uplink
from fleet.models import Credential, Device, DeviceStatus
from fleet.secrets import secret_matches

if TYPE_CHECKING:
    from broker.amqtt_broker import IndexedBroker
    from fleet.registry import Registry

__all__ = [
    "BrokerHub",
    "CredentialBatch",
    "CredentialCache",
    "DeviceTopicACL",
    "HubPlugin",
    "IngestPlugin",
    "RegistryAuthPlugin",
]

log = logging.getLogger(__name__)

DEVICE_KEY: Final = "marketfleet.device"  # session.attributes: the device's DeviceInfo
ROLE_KEY: Final = "marketfleet.role"  # "device" | "service"
GENERATION_KEY: Final = "marketfleet.auth_generation"
_CHUNK: Final = 500  # ids per IN (...) query: well under SQLite's variable limit


async def check_device_secrets(secrets: dict[str, set[str]]) -> dict[str, tuple[Device, set[str]]]:
    """`Registry.check_device_secret` for many devices in two queries: device id → (device, the secrets that match).

    Same rule: the device's newest unrevoked credential must match and the device must be active. Used by
    `CredentialBatch` so that a reconnect storm costs two queries per batch, not two per CONNECT.
    """
    ids = list(secrets)
    current: dict[str, str] = {}
    for chunk in (ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)):
        rows = await Credential.filter(device_id__in=chunk, revoked_at=None).order_by("-id").values_list(
            "device_id", "secret_hash"
        )
        for device_id, secret_hash in rows:
            current.setdefault(device_id, secret_hash)  # newest first
    matching: dict[str, set[str]] = {}
    for device_id, candidates in secrets.items():
        stored = current.get(device_id)
        if stored is not None:
            good = {secret for secret in candidates if secret_matches(secret, stored)}
            if good:
                matching[device_id] = good
    found: dict[str, tuple[Device, set[str]]] = {}
    matched = list(matching)
    for chunk in (matched[i : i + _CHUNK] for i in range(0, len(matched), _CHUNK)):
        for device in await Device.filter(id__in=chunk, status=DeviceStatus.ACTIVE):
            found[device.id] = (device, matching[device.id])
    return found


class CredentialBatch:
    """Coalesces the credential checks of concurrent CONNECTs: those arriving while a batch is being checked
    form the next batch. One device alone waits for no one (its batch starts at the next loop turn)."""

    def __init__(self, max_batch: int = 1000) -> None:
        self.max_batch = max_batch
        self._waiting: dict[str, list[tuple[str, asyncio.Future[Device | None]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def check(self, device_id: str, secret: str) -> Device | None:
        future: asyncio.Future[Device | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(device_id, []).append((secret, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqtt-credential-batch")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # CONNECTs read in the same loop turn join this batch
                batch: dict[str, list[tuple[str, asyncio.Future[Device | None]]]] = {}
                for device_id in list(self._waiting)[: self.max_batch]:
                    batch[device_id] = self._waiting.pop(device_id)
                self.batches += 1
                try:
                    found = await check_device_secrets({d: {s for s, _f in w} for d, w in batch.items()})
                except Exception as err:
                    for waiters in batch.values():
                        for _secret, future in waiters:
                            if not future.done():
                                future.set_exception(err)
                    continue
                for device_id, waiters in batch.items():
                    device, good = found.get(device_id, (None, set()))
                    for secret, future in waiters:
                        if not future.done():
                            future.set_result(device if secret in good else None)
        finally:
            self._task = None


class CredentialCache:
    """Recent successful device logins: device id → (expiry, hash of the secret, DeviceInfo)."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, bytes, DeviceInfo]] = {}
        self._generations: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _digest(secret: str) -> bytes:
        return hashlib.sha256(secret.encode()).digest()

    def generation(self, device_id: str) -> int:
        return self._generations.get(device_id, 0)

    def get(self, device_id: str, secret: str) -> DeviceInfo | None:
        entry = self._entries.get(device_id)
        if entry is None or entry[0] < time.monotonic() or not hmac.compare_digest(entry[1], self._digest(secret)):
            self.misses += 1
            return None
        self.hits += 1
        return entry[2]

    def put(self, device_id: str, secret: str, info: DeviceInfo, generation: int) -> None:
        if generation == self.generation(device_id):
            self._entries[device_id] = (time.monotonic() + self.ttl_s, self._digest(secret), info)

    def evict(self, device_id: str) -> None:
        """Forget the device's cached login and invalidate checks in flight."""
        self._entries.pop(device_id, None)
        self._generations[device_id] = self.generation(device_id) + 1


@dataclass
class BrokerHub:
    """What the embedded broker's plugins share; also the registry's CredentialListener for the broker."""

    pipeline: IngestPipeline
    registry: Registry | None = None
    directory: DeviceDirectory | None = None
    presence: PresenceTracker | None = None
    service_username: str = ""
    service_password: str = ""
    credentials: CredentialCache = field(default_factory=CredentialCache)
    batch: CredentialBatch = field(default_factory=CredentialBatch)
    broker: IndexedBroker | None = None
    acks: AckPublisher | None = None
    forbidden: int = 0

    # ---------------------------------------------------------------- authentication

    async def authenticate(self, session: Session) -> bool:
        username, password, client_id = session.username, session.password, session.client_id
        if not username or password is None:
            return False
        if self.service_username and hmac.compare_digest(username.encode(), self.service_username.encode()):
            if self.service_password and hmac.compare_digest(password.encode(), self.service_password.encode()):
                session.attributes[ROLE_KEY] = "service"
                return True
            return False
        if client_id != username or self.registry is None:
            return False  # docs/protocol.md: client id = username = device id
        info = self.credentials.get(username, password)
        generation = self.credentials.generation(username)
        if info is None:
            device = await self.batch.check(username, password)
            if device is None:
                return False
            info = DeviceInfo.from_device(device)
            if generation != self.credentials.generation(username):
                return False  # revoked while we were checking
            self.credentials.put(username, password, info, generation)
            if self.directory is not None:
                self.directory.put(info)
        session.attributes[ROLE_KEY] = "device"
        session.attributes[DEVICE_KEY] = info
        session.attributes[GENERATION_KEY] = generation
        return True

    # ---------------------------------------------------------------- fleet.registry.CredentialListener

    async def credential_issued(self, device: Device, secret: str) -> None:
        """A new secret (registration or rotation): the old one stops working now, so its session goes too."""
        self.credentials.evict(device.id)
        if self.directory is not None:
            self.directory.invalidate(device.id)
        if self.broker is not None and self.broker.is_connected(device.id):
            await self.broker.disconnect_client(device.id)

    async def credential_revoked(self, device: Device) -> None:
        self.credentials.evict(device.id)
        if self.directory is not None:
            self.directory.invalidate(device.id)
        if self.broker is not None:
            await self.broker.disconnect_client(device.id, drop_session=True)
        if self.presence is not None:
            self.presence.disconnected(device.id, reason="revoked")

    async def device_changed(self, device: Device) -> None:
        """Market/status/keepalive changed: re-read it; a device no longer active is disconnected."""
        self.credentials.evict(device.id)
        if self.directory is not None:
            self.directory.invalidate(device.id)
        status = str(getattr(device.status, "value", device.status))
        if status != "active" and self.broker is not None:
            await self.broker.disconnect_client(device.id, drop_session=True)

    # ---------------------------------------------------------------- messages

    async def on_message(self, session: Session | None, topic: str, data: bytes) -> None:
        if session is None:
            return
        role = session.attributes.get(ROLE_KEY)
        if role != "device":
            return  # the platform's own publishes are not device data
        info: DeviceInfo = session.attributes[DEVICE_KEY]
        parsed = topics.parse(topic)
        if parsed is None or parsed.direction != "up" or parsed.device_id != info.device_id:
            self.forbidden += 1
            uplink = Uplink("mqtt", info.device_id, parsed.channel if parsed else "", data, topic=topic)
            self.pipeline.dead_letter(uplink, "forbidden_topic",
                                      f"topic {topic!r}: a device publishes only under mf/v1/<market>/"
                                      f"{info.device_id}/up/")
            return
        if self.presence is not None:
            if parsed.channel == "status":
                self.presence.status(info.device_id, data)
                return
            self.presence.seen(info.device_id)
        elif parsed.channel == "status":
            return
        uplink = Uplink("mqtt", info.device_id, parsed.channel, data, topic=topic)
        if not self.pipeline.admit(uplink):
            return  # over the device's rate: dead-lettered, not acknowledged
        future = await self.pipeline.enqueue(uplink)
        if self.acks is not None:
            self.acks.track(future, parsed.reply("ack"))

    async def publish(self, topic: str, data: bytes, qos: int = 1) -> None:
        """Publish from the platform itself (acks, commands) through the broker's internal broadcast."""
        if self.broker is None:
            raise RuntimeError("broker not started")
        await self.broker.internal_message_broadcast(topic, data, qos)

    def send_ack(self, topic: str, ack: Ack) -> None:
        if self.acks is not None:
            self.acks.send(topic, ack)


class HubPlugin:
    """Mixin: receives the `BrokerHub` after amqtt has built the plugin."""

    hub: BrokerHub | None = None

    def bind(self, hub: BrokerHub) -> None:
        self.hub = hub


class RegistryAuthPlugin(HubPlugin, BaseAuthPlugin):
    async def authenticate(self, *, session: Session) -> bool | None:
        if self.hub is None:
            return False
        try:
            return await self.hub.authenticate(session)
        except Exception:
            # Registry unreachable: refuse (the device retries) rather than let amqtt log a stack per CONNECT.
            log.exception("authentication of %r failed", session.client_id)
            return False


class DeviceTopicACL(HubPlugin, BaseTopicPlugin):
    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None:
            return False
        attributes = session.attributes
        role = attributes.get(ROLE_KEY)
        if role == "service":
            return True
        info: DeviceInfo | None = attributes.get(DEVICE_KEY)
        if info is None:
            return False
        if action == Action.PUBLISH:
            parsed = topics.parse(topic)
            return parsed is not None and parsed.direction == "up" and parsed.device_id == info.device_id
        if action == Action.SUBSCRIBE:
            return topics.device_may_subscribe(info.device_id, topic)
        if action == Action.RECEIVE:
            parsed = topics.parse(topic)
            return parsed is not None and parsed.direction == "down" and parsed.device_id == info.device_id
        return False


class IngestPlugin(HubPlugin, BasePlugin[Any]):
    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        hub = self.hub
        if hub is None or message is None or hub.broker is None:
            return
        entry = hub.broker.sessions.get(client_id)
        await hub.on_message(entry[0] if entry else None, message.topic, bytes(message.data))

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        hub = self.hub
        if hub is None:
            return
        info: DeviceInfo | None = client_session.attributes.get(DEVICE_KEY)
        if info is None:
            return
        if client_session.attributes.get(GENERATION_KEY) != hub.credentials.generation(info.device_id):
            # Revoked between the credential check and now.
            if hub.broker is not None:
                await hub.broker.disconnect_client(client_id, drop_session=True)
            return
        if hub.presence is not None:
            hub.presence.connected(info)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Session) -> None:
        hub = self.hub
        if hub is None or hub.presence is None:
            return
        if client_session.attributes.get(DEVICE_KEY) is None:
            return
        if hub.broker is not None and hub.broker.is_connected(client_id):
            return  # taken over by a newer connection of the same device
        hub.presence.disconnected(client_id)
