"""`IndexedBroker`: amqtt 0.12.1's `Broker` with a subscription index and safer connection handling.

Pinned to amqtt==0.12.1: every upstream method replaced or relied on here is listed in `UPSTREAM_PINS` with the
SHA-256 of its source, and tests/unit/broker/test_amqtt_internals.py fails loudly when an upgrade changes one.
Re-read the upstream method, port the change, and update the hash.

What changes against upstream, and why (measurements in docs/ingest.md):

* **Subscription index** (`broker.subscriptions.SubscriptionIndex`). Upstream `_run_broadcast` tests every
  filter against every message and calls the topic ACL once per delivery, O(subscriptions) per message.
  Here a topic trie finds the subscribers in O(depth); the ACL is checked once, at SUBSCRIBE, so delivery
  needs no per-message check. `_subscriptions` (the dict plugins read through `BrokerContext.subscriptions`)
  is still kept in step. `_run_broadcast` also drains up to 256 queued messages per call, because upstream's
  `_broadcast_loop` spends a task and an `asyncio.wait` on every call.
* **Retained index**: SUBSCRIBE used to scan every retained message (and a reconnect scanned them once per
  filter *of every client*, sending the new client retained messages that matched other clients'
  subscriptions). Here retained messages live in a trie walked with the subscribing filter, and a reconnect
  only replays those matching the client's *own* subscriptions.
* **Authenticate first** (`_initialize_client_session`). Upstream deletes an existing clean session, and
  takes over a live connection, *before* checking credentials, so anyone knowing a device id could kick it,
  and every refused CONNECT left a "connected" session in `_sessions` forever. Here a refused CONNECT gets
  CONNACK 0x05 and touches nothing; a take-over waits until the old connection has finished its disconnect
  handling (its will, its `client_disconnected` event) before the new one starts, so the session's state
  is never flipped to "disconnected" under the new connection.
* **Memory with churning client ids** (amqtt issue #123: sessions kept forever in `Broker._sessions`).
  Clean-session (and anonymous) sessions are dropped as soon as their connection ends instead of by the
  once-a-second monitor; refused CONNECTs never create one; persistent sessions end after
  `session_expiry_interval` (set by broker/embedded.py) or when the credential is revoked
  (`disconnect_client(…, drop_session=True)`); a session's offline queue is capped (`max_offline_messages`,
  oldest dropped).
* **Keepalive** is enforced (MQTT-3.1.2-24): no packet for 1.5 × keepalive closes the connection, which
  publishes the will. Upstream's broker handler ignores the read timeout, so half-open connections and
  their devices' presence never end.
* `_subscriptions` has a short `repr`: upstream formats the whole table at debug level after every
  SUBSCRIBE, even with debug logging off (quadratic connect time).
* The TCP listener's backlog is 2048 instead of asyncio's default 100 (reconnect storms).
* Deliveries use min(publish QoS, subscription QoS) when the publish QoS is known (internal publishes).
* **Lean hot path** with `broker.amqtt_handler.MarketProtocolHandler`: an incoming PUBLISH (QoS 0/1) comes from
  the handler's reader straight to `_deliver_incoming` (upstream's `_handle_message_delivery` without the
  session queue hop; the MESSAGE_RECEIVED hook — ingest — runs inline via `_fire_inline` instead of one task per
  plugin), and `_client_message_loop` waits on one future per connection instead of four tasks. Sessions are
  `LightSession`s (no `transitions.Machine` per CONNECT). See broker/amqtt_handler.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from amqtt.broker import Broker, BrokerProtocolHandler
from amqtt.contexts import Action, BrokerConfig, ListenerType
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import IncomingApplicationMessage, Session
from amqtt.utils import format_client_message, gen_client_id

from broker.amqtt_handler import MarketProtocolHandler
from broker.subscriptions import RetainedIndex, SubscriptionIndex

__all__ = ["UPSTREAM_PINS", "IndexedBroker", "MarketProtocolHandler"]

log = logging.getLogger(__name__)

AMQTT_VERSION: Final = "0.12.1"

#: Upstream methods this module overrides or whose behaviour it depends on → sha256 of `inspect.getsource`.
UPSTREAM_PINS: Final[dict[str, str]] = {
    "amqtt.broker.Broker._run_broadcast": "e852128b3e38e04a",
    "amqtt.broker.Broker._broadcast_loop": "371196a6242c2e35",
    "amqtt.broker.Broker.add_subscription": "07757b63113c395e",
    "amqtt.broker.Broker._del_subscription": "415f349273b0552d",
    "amqtt.broker.Broker._del_all_subscriptions": "615579810f47d1e0",
    "amqtt.broker.Broker._initialize_client_session": "5dd89158bbe46266",
    "amqtt.broker.Broker._handle_client_session": "8b1b52a03df9daf5",
    "amqtt.broker.Broker._client_connected": "432b724bc4fb7946",
    "amqtt.broker.Broker._client_message_loop": "916c4647c3389918",
    "amqtt.broker.Broker._handle_disconnect": "8c3b8702f3567055",
    "amqtt.broker.Broker._handle_message_delivery": "89727723da550bed",
    "amqtt.broker.Broker._publish_retained_messages_for_subscription": "d6ad257821ba29ef",
    "amqtt.broker.Broker._retain_broadcast_message": "884c193d6731d048",
    "amqtt.broker.Broker._topic_filtering": "9259ae5e1dd3e20d",
    "amqtt.broker.Broker._cleanup_session": "530ae891d9f536cc",
    "amqtt.broker.Broker._session_monitor": "5091fa20cdfdc203",
    "amqtt.broker.Broker.retain_message": "6233eff2618baede",
    "amqtt.broker.Broker._create_server_instance": "3925f48239680074",
    "amqtt.broker.Broker.start": "bd1c165101f6fcbb",
    "amqtt.broker.Broker.shutdown": "800adcdd80ded223",
    "amqtt.broker.Broker._delete_session": "a8333dded50648a7",
    "amqtt.broker.Broker._authenticate": "4d7db8cc6fe2c3f6",
    "amqtt.broker.Broker._get_handler": "169908c149fded36",
    "amqtt.broker.Broker._publish_session_retained_messages": "78cd66096c935c1f",
    "amqtt.broker.Broker.internal_message_broadcast": "737942352c1c919d",
    "amqtt.broker.Broker._broadcast_message": "78ad4edb7efb3b72",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_connection_closed": "e9c448557a8dab58",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_read_timeout": "ffd79f12457f41e1",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.init_from_connect": "036dc04c1133a18f",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_pingreq": "de126279f40d7031",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._handle_qos1_message_flow": "944e6a8130c70daf",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.handle_puback": "7d8487deb2d589ee",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.stop": "874ae8871911881f",
    "amqtt.adapters.StreamWriterAdapter.__init__": "9612036ac78e5ab2",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._reader_loop": "93f3b8e4483040d0",
    # broker/amqtt_handler.py: LightSession, the reader's fast path, the one-future client loop, inline hooks
    "amqtt.session.Session.__init__": "ad7888c0daff2038",
    "amqtt.session.Session._init_states": "63c76988bf4f81ce",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.__init__": "1d65aad5a7b47e7d",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.start": "684c58c16be73a2d",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._send_packet": "9f0ae4e325319652",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.handle_publish": "b8f1fd3212c7134e",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._handle_qos0_message_flow": "e7a88a9f360ff322",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.__init__": "95a1c78fecfdbffa",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.start": "f7637c34a27f905e",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.stop": "70e440da78e7178b",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_subscribe": "7625fdfa3a8de496",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_unsubscribe": "90d48fa79285c504",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_disconnect": "63b454d06eab58f8",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.wait_disconnect": "ea4857d4707ef8d9",
    "amqtt.broker.Broker._handle_subscription": "3dae18afa195209e",
    "amqtt.broker.Broker._handle_unsubscription": "29253b1b63036d7a",
    "amqtt.plugins.manager.PluginManager.__init__": "e3ac8fbbb6065af8",
    "amqtt.plugins.manager.PluginManager.fire_event": "31212e4fc0010cdb",
    "amqtt.plugins.manager.PluginManager._load_plugins": "522ef624ee50ed10",
    "amqtt.adapters.StreamReaderAdapter.__init__": "2594a16cfbf64a25",
    "amqtt.adapters.StreamWriterAdapter.write": "a204e5a548e08184",
}

_DRAIN_PER_CALL: Final = 256


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    def __repr__(self) -> str:
        return f"<{len(self)} subscription filters>"


class IndexedBroker(Broker):
    """amqtt `Broker` with indexed subscriptions; see the module docstring for every difference."""

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any] | None = None,
        *,
        max_offline_messages: int = 1000,
        keepalive_factor: float = 1.5,
        backlog: int = 2048,
    ) -> None:
        super().__init__(config)
        # Upstream logs `repr(self._subscriptions)` at debug level after every SUBSCRIBE, formatting every
        # session of every filter even when debug logging is off: O(subscriptions) per SUBSCRIBE, the main cost
        # of connecting 5,000 devices. Same dict, short repr.
        self._subscriptions = _SubscriptionTable()
        self.backlog = backlog
        self.index: SubscriptionIndex[Session] = SubscriptionIndex()
        self.retained_index: RetainedIndex[Any] = RetainedIndex()
        self.max_offline_messages = max_offline_messages
        self.keepalive_factor = keepalive_factor
        self.activity_hook: Callable[[str], None] | None = None
        # client id -> (handler, finished) of the live connection, to take it over or drop it
        self._connections: dict[str, tuple[BrokerProtocolHandler, asyncio.Event]] = {}
        self._topic_plugins = [p for p in self.plugins_manager.plugins if isinstance(p, BaseTopicPlugin)]
        self.deliveries = 0
        self.refused = 0

    async def start(self) -> None:
        self.index.clear()
        self.retained_index.clear()
        self._connections.clear()
        await super().start()

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        # Upstream listens with asyncio's default backlog of 100: a market reconnecting thousands of devices at
        # once (after a power cut) overflows it and every overflowed SYN waits a second or more to retry.
        if listener_type == ListenerType.TCP:
            return await asyncio.start_server(
                functools.partial(self.stream_connected, listener_name=listener_name),
                address, port, reuse_address=True, ssl=ssl_context, backlog=self.backlog,
            )
        return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)

    # ---------------------------------------------------------------- public helpers

    def is_connected(self, client_id: str) -> bool:
        entry = self._sessions.get(client_id)
        return entry is not None and entry[0].transitions.state == "connected"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def disconnect_client(self, client_id: str, *, drop_session: bool = False, wait_s: float = 10.0) -> bool:
        """Close a client's live connection (its will is published); True when it was connected.

        `drop_session` also forgets its persistent session (subscriptions and queued messages), e.g. when its
        credential is revoked.
        """
        entry = self._connections.get(client_id)
        if entry is not None:
            handler, finished = entry
            await handler.handle_connection_closed()
            try:
                await asyncio.wait_for(finished.wait(), wait_s)
            except TimeoutError:
                log.warning("client %s did not finish disconnecting within %ss", client_id, wait_s)
        if drop_session:
            await self._cleanup_session(client_id)
        return entry is not None

    # ---------------------------------------------------------------- subscriptions

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        levels = topic_filter.split("/")
        if not topic_filter or any(
            ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+")
            for index, level in enumerate(levels)
        ):
            return 0x80  # MQTT-4.7.1-2 / -3: wildcards occupy a whole level, '#' only last
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return 0x80
        max_qos = self.config.get("max-qos", qos)
        qos = min(qos, max_qos if isinstance(max_qos, int) else qos)
        client_id = session.client_id or ""
        if self.index.add(topic_filter, client_id, session, qos):
            self._subscriptions.setdefault(topic_filter, []).append((session, qos))
        else:
            subscribers = self._subscriptions.get(topic_filter, [])
            for i, (sub_session, _old) in enumerate(subscribers):
                if sub_session.client_id == client_id:
                    subscribers[i] = (session, qos)
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        client_id = session.client_id or ""
        if not self.index.remove(a_filter, client_id):
            return 0
        self._drop_from_dict(a_filter, client_id)
        return 1

    async def _del_all_subscriptions(self, session: Session) -> None:
        client_id = session.client_id or ""
        for topic_filter in self.index.remove_client(client_id):
            self._drop_from_dict(topic_filter, client_id)

    def _drop_from_dict(self, topic_filter: str, client_id: str) -> None:
        subscribers = self._subscriptions.get(topic_filter)
        if subscribers is None:
            return
        subscribers[:] = [entry for entry in subscribers if entry[0].client_id != client_id]
        if not subscribers:
            del self._subscriptions[topic_filter]

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        # Upstream runs every plugin in its own task and gathers; a plain await per plugin is the same
        # decision (all must say True; None counts as no, as upstream's all() does) at a fraction of the cost.
        if not self.plugins_manager.is_topic_filtering_enabled():
            return True
        for plugin in self._topic_plugins:
            if not await plugin.topic_filtering(session=session, topic=topic, action=action):
                return False
        return True

    # ---------------------------------------------------------------- incoming PUBLISH

    async def _fire_inline(self, event: str, **kwargs: Any) -> None:
        """Call the plugins' handlers of `event` in turn, here, instead of one task per plugin (upstream)."""
        for callback in self.plugins_manager._event_plugin_callbacks.get(event, ()):
            try:
                await callback(**kwargs)
            except Exception:
                log.exception("plugin handler of %s failed", event)

    async def _deliver_incoming(
        self, session: Session, handler: MarketProtocolHandler, message: IncomingApplicationMessage
    ) -> bool:
        """A PUBLISH read by `MarketProtocolHandler`: upstream's `_handle_message_delivery` without its queue hop.

        The MESSAGE_RECEIVED hook (ingest) runs inline, so a device whose uplinks cannot be queued waits here and
        TCP slows it down, instead of piling up one task per message. False closes the connection.
        """
        await self._fire_inline(BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id, message=message)
        topic = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            log.warning("%s: invalid PUBLISH topic %r (MQTT-4.7.3-1, -3.3.2-2, -4.7.2-1): closing the connection",
                        session.client_id, topic[:100])
            return False
        if not await self._topic_filtering(session, topic, Action.PUBLISH):
            log.info("%s not allowed to publish to %s", session.client_id, topic[:100])
            return True
        if BrokerEvents.MESSAGE_BROADCAST in self.plugins_manager._event_plugin_callbacks:
            await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST, client_id=session.client_id,
                                                  message=message)
        await self._broadcast_message(session, topic, message.data)
        if message.retain:
            await self.retain_message(session, topic, message.data, message.qos)
        return True

    # ---------------------------------------------------------------- delivery

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        broadcast = await self._broadcast_queue.get()
        await self._deliver(broadcast, running_tasks)
        queue = self._broadcast_queue
        for _ in range(_DRAIN_PER_CALL):
            try:
                broadcast = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            await self._deliver(broadcast, running_tasks)

    async def _deliver(self, broadcast: dict[str, Any], running_tasks: deque[asyncio.Task[Any]]) -> None:
        topic = broadcast["topic"]
        if not topic:
            return
        forced = broadcast.get("qos")
        data = broadcast["data"]
        for _client_id, (target, sub_qos) in self.index.match(topic).items():
            qos = sub_qos if forced is None else min(forced, sub_qos)
            if target.transitions.state != "connected":
                # MQTT-3.1.2-5: queue QoS 1/2 for a disconnected persistent session
                if not target.clean_session and qos in (QOS_1, QOS_2) and not target.is_anonymous:
                    queued = target.retained_messages
                    while queued.qsize() >= self.max_offline_messages:
                        queued.get_nowait()  # oldest first
                    await self._retain_broadcast_message(broadcast, qos, target)
                continue
            handler = self._get_handler(target)
            if handler is not None:
                self.deliveries += 1
                running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False)))

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        await super().retain_message(source_session, topic_name, data, qos)
        if topic_name is None:
            return
        retained = self._retained_messages.get(topic_name)
        if retained is not None:
            self.retained_index.set(topic_name, retained)
        else:
            self.retained_index.discard(topic_name)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = [
            asyncio.ensure_future(
                handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)
            )
            for retained in self.retained_index.match(topic_filter)
        ]
        if tasks:
            await asyncio.wait(tasks)

    # ---------------------------------------------------------------- connections

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await MarketProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except AMQTTError as exc:
            log.debug("%s: first packet is not a CONNECT: %s",
                      format_client_message(address=remote_address, port=remote_port), exc)
            raise
        except MQTTError as exc:
            with contextlib.suppress(Exception):
                await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        handler.activity_hook = self.activity_hook
        if isinstance(handler, MarketProtocolHandler):
            handler.deliver = self._deliver_incoming

        # Credentials first: a refused client must not disturb an existing session or connection.
        if not await self._authenticate(incoming, None):  # type: ignore[arg-type]
            self.refused += 1
            with contextlib.suppress(Exception):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise AMQTTError(f"CONNECT refused for client id {incoming.client_id!r} (username {incoming.username!r})")

        client_id = incoming.client_id
        if client_id:
            await self._take_over(client_id)

        keep_alive = incoming.keep_alive
        session = incoming
        if incoming.clean_session:
            if client_id:
                await self._delete_session(client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif client_id in self._sessions:
            # Resume the persistent session with this connection's will, keepalive and credentials.
            session, _old_handler = self._sessions[client_id]
            for attribute in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain",
                              "username", "password", "remote_address", "remote_port", "ssl_object"):
                setattr(session, attribute, getattr(incoming, attribute))
            session.attributes.update(incoming.attributes)
            session.parent = 1
        else:
            incoming.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        session.keep_alive = (
            math.ceil(keep_alive * self.keepalive_factor) + (delay if isinstance(delay, int) else 0)
            if keep_alive > 0 else 0
        )
        return handler, session

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """Upstream's loop (subscriptions, unsubscriptions, queued messages, the disconnect), waiting on one future
        per connection (`MarketProtocolHandler.wait_for_work`) instead of four tasks."""
        if not isinstance(handler, MarketProtocolHandler):
            await super()._client_message_loop(client_session, handler)
            return
        disconnect_waiter = handler._disconnect_waiter
        if disconnect_waiter is None:  # the connection ended before the loop started
            disconnect_waiter = asyncio.get_running_loop().create_future()
            disconnect_waiter.set_result(None)
        subscriptions, unsubscriptions = handler._pending_subscriptions, handler._pending_unsubscriptions
        delivered = client_session.delivered_message_queue
        loop = asyncio.get_running_loop()

        def done(value: Any) -> asyncio.Future[Any]:
            future = loop.create_future()
            future.set_result(value)
            return future

        try:
            while True:
                while not subscriptions.empty():
                    await self._handle_subscription(client_session, handler, done(subscriptions.get_nowait()))
                while not unsubscriptions.empty():
                    await self._handle_unsubscription(client_session, handler, done(unsubscriptions.get_nowait()))
                while not delivered.empty():
                    if not await self._handle_message_delivery(client_session, handler, done(delivered.get_nowait())):
                        await handler.handle_connection_closed()
                        break
                if disconnect_waiter.done():
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    return
                await handler.wait_for_work()
        except asyncio.CancelledError:
            log.debug("client loop of %s cancelled", client_session.client_id)

    async def _take_over(self, client_id: str) -> None:
        """MQTT-3.1.4-2: close the live connection of the same client id and wait for its disconnect handling."""
        entry = self._connections.get(client_id)
        if entry is None:
            return
        handler, finished = entry
        log.info("client %s connected again: closing its previous connection", client_id)
        await handler.handle_connection_closed()
        try:
            await asyncio.wait_for(finished.wait(), 10)
        except TimeoutError:
            log.warning("previous connection of %s did not finish within 10 s", client_id)

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        client_id = client_session.client_id
        if not client_id:
            raise BrokerError("Client ID was not correctly created/set.")
        if client_session.transitions.is_connected():
            # Only possible if a take-over timed out: mark the stale state ended before reconnecting.
            client_session.transitions.disconnect()
        client_session.transitions.connect()
        handler.attach(client_session, reader, writer)
        self._sessions[client_id] = (client_session, handler)
        finished = asyncio.Event()
        self._connections[client_id] = (handler, finished)
        try:
            await handler.mqtt_connack_authorize(True)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=client_session
            )
            await handler.start()
            await self._publish_session_retained_messages(client_session)
            for topic_filter in self.index.filters_of(client_id):
                await self._publish_retained_messages_for_subscription((topic_filter, QOS_0), client_session)
            await self._client_message_loop(client_session, handler)
        finally:
            finished.set()
            if self._connections.get(client_id, (None,))[0] is handler:
                del self._connections[client_id]
            current = self._sessions.get(client_id)
            if (
                current is not None
                and current[0] is client_session
                and current[1] is handler
                and (client_session.clean_session or client_session.is_anonymous)
                and client_session.transitions.state != "connected"
            ):
                # amqtt #123: nothing of a clean session outlives its connection.
                self._sessions.pop(client_id, None)
                await self._del_all_subscriptions(client_session)
                client_session.clear_queues()
