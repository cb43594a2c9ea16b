"""The broker side of one MQTT connection: amqtt 0.12.1's `BrokerProtocolHandler` with a lean hot path.

Used by `broker.amqtt_broker.IndexedBroker`; pinned like it (every upstream method replaced or relied on is in
`broker.amqtt_broker.UPSTREAM_PINS`). What changes against upstream, and why (numbers in docs/broker.md):

* **`LightSession`**: upstream's `Session` builds a `transitions.Machine` per CONNECT — ~180 objects, ~23 KB
  and ~0.6 ms of CPU per connection, and all those objects make every full garbage collection slower (with
  5,000 devices connected, collections took seconds). `LightSession.transitions` is a small object with the
  same states, triggers and checks (`state`, `connect()`, `disconnect()`, `is_connected()` …, MachineError on
  a transition upstream does not allow). `init_from_connect` is upstream's with `LightSession`.
* **Reader loop**: upstream reads a packet byte by byte through `asyncio.wait_for` (a task and a timer per
  packet in Python 3.11) and handles every packet in a task of its own. Here a packet is read with two or
  three `readexactly` calls; PUBLISH (QoS 0/1), PUBACK and PINGREQ — nearly all the traffic of a market — are
  handled in the reader itself (in order, and a device that floods waits for us: TCP backpressure), and an
  incoming PUBLISH goes straight to the broker (`deliver`) instead of through the session's delivery queue and
  the broker's per-client wait loop. Every other packet is decoded and handled by upstream's code as before.
  Keepalive is one timer per connection, re-armed only when it fires (1.5 × keepalive of silence closes the
  connection and publishes the will, MQTT-3.1.2-24).
* Outgoing QoS 1: the PUBACK waiter is registered before the PUBLISH is sent (see `_handle_qos1_message_flow`).
* `stop()` closes the socket before cancelling the reader (Python 3.11 `wait_for` could swallow the cancel).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from math import floor
from typing import Any, ClassVar

from amqtt.adapters import BufferReader, ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.plugins.manager import PluginManager
from amqtt.session import OUTGOING, IncomingApplicationMessage, Session
from amqtt.utils import format_client_message
from transitions import MachineError

__all__ = ["Deliver", "LightSession", "MarketProtocolHandler", "SessionState"]

log = logging.getLogger(__name__)

#: the broker's handler of an incoming PUBLISH: (session, handler, message) → False to close the connection
Deliver = Callable[[Session, "MarketProtocolHandler", IncomingApplicationMessage], Awaitable[bool]]

_MQTT_PROTOCOL_LEVEL = 4  # 3.1.1, the only level amqtt 0.12.1 accepts
_PINGRESP = bytes((PINGRESP << 4, 0))
_PUBACK = PUBACK << 4
_HANDLED_ELSEWHERE = {CONNACK: "handle_connack", SUBSCRIBE: "handle_subscribe", UNSUBSCRIBE: "handle_unsubscribe",
                      SUBACK: "handle_suback", UNSUBACK: "handle_unsuback", PUBACK: "handle_puback",
                      PUBREC: "handle_pubrec", PUBREL: "handle_pubrel", PUBCOMP: "handle_pubcomp",
                      PINGREQ: "handle_pingreq", PINGRESP: "handle_pingresp", PUBLISH: "handle_publish",
                      DISCONNECT: "handle_disconnect"}


class SessionState:
    """`Session.transitions` without `transitions.Machine`: amqtt 0.12.1's three states and five transitions."""

    __slots__ = ("_session", "state")

    _NEXT: ClassVar[dict[tuple[str, str], str]] = {
        ("connect", "new"): "connected",
        ("connect", "disconnected"): "connected",
        ("disconnect", "connected"): "disconnected",
        ("disconnect", "new"): "disconnected",
        ("disconnect", "disconnected"): "disconnected",
    }

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def _trigger(self, trigger: str) -> bool:
        dest = self._NEXT.get((trigger, self.state))
        if dest is None:
            raise MachineError(f'"Can\'t trigger event {trigger} from state {self.state}!"')
        entering = dest != self.state
        self.state = dest
        if entering:
            now = floor(time.time())  # what upstream's on_enter callbacks record
            if dest == "connected":
                self._session.last_connect_time, self._session.last_disconnect_time = now, None
            else:
                self._session.last_disconnect_time = now
        return True

    def connect(self) -> bool:
        return self._trigger("connect")

    def disconnect(self) -> bool:
        return self._trigger("disconnect")

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class LightSession(Session):
    """amqtt `Session` whose state machine is a `SessionState` (see the module docstring)."""

    def _init_states(self) -> None:
        self.transitions = SessionState(self)  # type: ignore[assignment]


class MarketProtocolHandler(BrokerProtocolHandler):
    """Upstream's broker-side protocol handler with the hot path described in the module docstring."""

    activity_hook: Callable[[str], None] | None = None
    deliver: Deliver | None = None
    _watchdog: asyncio.TimerHandle | None = None
    _last_packet: float = 0.0
    _has_work: bool = False
    _ending: bool = False
    _work_waiter: asyncio.Future[None] | None = None

    @classmethod
    async def init_from_connect(
        cls,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        plugins_manager: PluginManager[Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> tuple[BrokerProtocolHandler, Session]:
        # Upstream's checks and CONNACK codes, in its order; the session is a LightSession.
        connect = await ConnectPacket.from_stream(reader)
        await plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=connect)
        if connect.variable_header is None or connect.payload is None:
            raise MQTTError("CONNECT packet: variable header or payload not initialized.")
        if connect.payload.client_id is None:
            raise MQTTError("[[MQTT-3.1.3-3]] : Client identifier must be present")
        if connect.variable_header.will_flag and (
            connect.payload.will_topic is None or connect.payload.will_message is None
        ):
            raise MQTTError("Will flag set, but will topic/message not present in payload")
        if connect.variable_header.reserved_flag:
            raise MQTTError("[MQTT-3.1.2-3] CONNECT reserved flag must be set to 0")
        if connect.proto_name != "MQTT":
            raise MQTTError(f'[MQTT-3.1.2-1] Incorrect protocol name: "{connect.proto_name}"')
        remote_address: str | None = None
        remote_port: int | None = None
        remote_info = writer.get_peer_info()
        if remote_info is not None:
            remote_address, remote_port = remote_info
            peer = format_client_message(address=remote_address, port=remote_port)
            connack = None
            error_msg = None
            if connect.proto_level != _MQTT_PROTOCOL_LEVEL:
                error_msg = f"Invalid protocol from {peer}: {connect.proto_level}"
                connack = ConnackPacket.build(0, UNACCEPTABLE_PROTOCOL_VERSION)  # MQTT-3.2.2-4
            elif not connect.username_flag and connect.password_flag:
                connack = ConnackPacket.build(0, BAD_USERNAME_PASSWORD)  # MQTT-3.1.2-22
            elif connect.username_flag and connect.username is None:
                error_msg = f"Invalid username from {peer}"
                connack = ConnackPacket.build(0, BAD_USERNAME_PASSWORD)
            elif connect.password_flag and connect.password is None:
                error_msg = f"Invalid password from {peer}"
                connack = ConnackPacket.build(0, BAD_USERNAME_PASSWORD)
            elif connect.clean_session_flag is False and connect.payload.client_id_is_random:
                error_msg = f"[MQTT-3.1.3-8] [MQTT-3.1.3-9] {peer}: No client Id provided (cleansession=0)"
                connack = ConnackPacket.build(0, IDENTIFIER_REJECTED)
            if connack is not None:
                await plugins_manager.fire_event(MQTTEvents.PACKET_SENT, packet=connack)
                await connack.to_stream(writer)
                await writer.close()
                raise MQTTError(error_msg) from None

        session = LightSession()
        session.client_id = connect.client_id
        session.clean_session = connect.clean_session_flag
        session.will_flag = connect.will_flag
        session.will_retain = connect.will_retain_flag
        session.will_qos = connect.will_qos
        session.will_topic = connect.will_topic
        session.will_message = connect.will_message
        session.username = connect.username
        session.password = connect.password
        session.remote_address = remote_address
        session.remote_port = remote_port
        session.ssl_object = writer.get_ssl_info()
        session.keep_alive = max(connect.keep_alive, 0)
        return cls(plugins_manager, loop=loop), session

    # ---------------------------------------------------------------- reading

    def _fast_path_possible(self) -> asyncio.StreamReader | None:
        stream = getattr(self.reader, "_reader", None)  # amqtt.adapters.StreamReaderAdapter._reader
        callbacks = self.plugins_manager._event_plugin_callbacks
        if (
            not isinstance(stream, asyncio.StreamReader)
            or self.deliver is None
            or MQTTEvents.PACKET_RECEIVED in callbacks
            or MQTTEvents.PACKET_SENT in callbacks
        ):
            return None  # websockets, plain amqtt use, or plugins that watch every packet: upstream's loop
        return stream

    async def _reader_loop(self) -> None:
        stream = self._fast_path_possible()
        if stream is None:
            await super()._reader_loop()
            return
        session = self.session
        if session is None or self._reader_ready is None:
            raise AMQTTError("Session or reader not initialized.")
        loop = asyncio.get_running_loop()
        running_tasks: collections.deque[asyncio.Task[Any]] = collections.deque()
        self._last_packet = loop.time()
        keepalive = session.keep_alive if session.keep_alive > 0 else None
        if keepalive is not None:
            self._watchdog = loop.call_later(keepalive, self._check_silence, keepalive)
        self._reader_ready.set()
        try:
            while True:
                try:
                    while running_tasks and running_tasks[0].done():
                        running_tasks.popleft()
                    head = await stream.readexactly(2)
                    byte = head[1]
                    length = byte & 0x7F
                    multiplier = 128
                    while byte & 0x80:
                        if multiplier > 128**3:
                            raise MQTTError("Invalid remaining length")  # upstream discards and reads on
                        byte = (await stream.readexactly(1))[0]
                        length += (byte & 0x7F) * multiplier
                        multiplier *= 128
                    body = await stream.readexactly(length) if length else b""
                    self._last_packet = loop.time()
                    packet_type, flags = head[0] >> 4, head[0] & 0x0F
                    if packet_type == PUBLISH and flags & 0x06 in (0x00, 0x02):  # QoS 0 or 1
                        if not await self._publish_received(flags, body):
                            break  # `deliver` refused the topic (MQTT-4.7.3-1, -3.3.2-2, -4.7.2-1): close
                        continue
                    if packet_type == PUBACK and length == 2:
                        self._puback_received(int.from_bytes(body, "big"))
                        continue
                    if packet_type == PINGREQ and length == 0:
                        await self.handle_pingreq(None)
                        continue
                    task = await self._handle_other(packet_type, flags, length, body)
                    if task is not None:
                        running_tasks.append(task)
                except asyncio.IncompleteReadError:
                    break  # EOF
                except (ConnectionResetError, BrokenPipeError, TimeoutError):
                    break
                except (MQTTError, NoDataError):
                    log.debug("%s: malformed packet discarded", session.client_id)
                except asyncio.CancelledError:
                    break
                except Exception as exc:
                    log.warning("%s: unhandled exception in reader: %r", session.client_id, exc)
                    break
        finally:
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None:
                watchdog.cancel()
        while running_tasks:
            running_tasks.popleft().cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _publish_received(self, flags: int, body: bytes) -> bool:
        """A QoS 0/1 PUBLISH: hand it to the broker, then PUBACK it. False: a protocol violation."""
        session = self.session
        deliver = self.deliver
        if session is None or deliver is None or self._ending:
            return True  # the connection is being closed (revoked, taken over): nothing more from it, no PUBACK
        topic_length = int.from_bytes(body[:2], "big")
        end = 2 + topic_length
        if len(body) < end:
            raise MQTTError("PUBLISH shorter than its topic")
        try:
            topic = body[2:end].decode("utf-8")
        except UnicodeDecodeError:
            raise MQTTError("PUBLISH topic is not UTF-8") from None  # MQTT-1.5.3-1
        qos = (flags >> 1) & 0x03
        packet_id = None
        if qos:
            if len(body) < end + 2:
                raise MQTTError("PUBLISH without packet id")
            packet_id = int.from_bytes(body[end : end + 2], "big")
            end += 2
        elif flags & 0x08:
            log.warning("[MQTT-3.3.1-2] DUP flag set on a QoS 0 message from %s: ignored", session.client_id)
            return True
        message = IncomingApplicationMessage(packet_id, topic, qos, body[end:], bool(flags & 0x01))
        if not await deliver(session, self, message):
            return False
        if packet_id is not None:
            await self._write(bytes((_PUBACK, 2)) + packet_id.to_bytes(2, "big"))
        return True

    def _puback_received(self, packet_id: int) -> None:
        waiter = self._puback_waiters.get(packet_id)
        if waiter is None:
            log.debug("PUBACK for unknown packet id %s", packet_id)
        elif not waiter.done():
            waiter.set_result(PubackPacket.build(packet_id))

    async def _handle_other(self, packet_type: int, flags: int, length: int, body: bytes) -> asyncio.Task[Any] | None:
        """Any other packet: decoded and handled by upstream's code, as upstream's reader loop does."""
        if packet_type in (RESERVED_0, RESERVED_15):
            log.warning("%s: reserved packet type, closing the connection",
                        self.session.client_id if self.session else "?")
            await self.handle_connection_closed()
            return None
        fixed_header = MQTTFixedHeader(packet_type, flags, length)
        packet = await packet_class(fixed_header).from_stream(BufferReader(body), fixed_header=fixed_header)
        if packet_type == CONNECT:
            await self.handle_connect(packet)  # MQTT-3.1.0-2: a second CONNECT ends the connection
            return None
        method = _HANDLED_ELSEWHERE.get(packet_type)
        if method is None:
            return None
        return asyncio.create_task(getattr(self, method)(packet))

    async def _write(self, data: bytes) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            await self.handle_connection_closed()

    def _check_silence(self, keepalive: float) -> None:
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._last_packet
        if silent >= keepalive:
            self._watchdog = None
            self.handle_read_timeout()
        else:
            self._watchdog = loop.call_later(keepalive - silent, self._check_silence, keepalive)

    # ---------------------------------------------------------------- work for the broker's client loop

    def _wake(self, *_: Any) -> None:
        self._has_work = True
        waiter = self._work_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_work(self) -> None:
        """Until a SUBSCRIBE, UNSUBSCRIBE, queued message or the disconnect needs the broker's client loop.

        Upstream's loop keeps four tasks per connection waiting for those (idle devices, most of a market);
        here it is one future, set by the handlers below.
        """
        while not self._has_work:
            self._work_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._work_waiter
            finally:
                self._work_waiter = None
        self._has_work = False

    async def start(self) -> None:
        await super().start()
        if self._disconnect_waiter is not None:
            self._disconnect_waiter.add_done_callback(self._wake)

    async def handle_disconnect(self, disconnect: Any) -> None:
        # Also reached through handle_connection_closed (revocation, take-over, keepalive): upstream's message loop
        # then stops taking the client's queued messages; the reader's fast path stops delivering them too.
        self._ending = True
        await super().handle_disconnect(disconnect)

    async def handle_subscribe(self, subscribe: Any) -> None:
        await super().handle_subscribe(subscribe)
        self._wake()

    async def handle_unsubscribe(self, unsubscribe: Any) -> None:
        await super().handle_unsubscribe(unsubscribe)
        self._wake()

    async def handle_publish(self, publish_packet: Any) -> None:
        # Upstream's path (QoS 2, or the fast path off): the message lands in the session's delivery queue.
        await super().handle_publish(publish_packet)
        self._wake()

    # ---------------------------------------------------------------- upstream handlers, adjusted

    async def handle_pingreq(self, pingreq: Any) -> None:
        hook = self.activity_hook
        if hook is not None and self.session is not None and self.session.client_id:
            hook(self.session.client_id)
        await self._write(_PINGRESP)

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        # Upstream registers the PUBACK waiter only after sending the PUBLISH; on loopback (and under load) the
        # PUBACK can be read while the send is still draining, is then "for an unknown pending message", and the
        # delivery task times out 5 s later with a logged traceback. Same flow, waiter registered first.
        if app_message.direction != OUTGOING or self.session is None or app_message.packet_id is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        if app_message.puback_packet:
            raise AMQTTError(f"Message '{app_message.packet_id}' has already been acknowledged")
        packet_id = app_message.packet_id
        session = self.session
        if packet_id not in session.inflight_out:
            session.inflight_out[packet_id] = app_message
        publish_packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(publish_packet)
            app_message.publish_packet = publish_packet
            app_message.puback_packet = await asyncio.wait_for(waiter, timeout=5)
        except TimeoutError:
            raise TimeoutError(f"Timeout waiting for PUBACK for packet ID {packet_id}") from None
        finally:
            self._puback_waiters.pop(packet_id, None)
            session.inflight_out.pop(packet_id, None)

    async def stop(self) -> None:
        # Close the socket before upstream cancels the reader task: on Python 3.11 `asyncio.wait_for` can swallow
        # that cancellation when a packet arrives at the same moment, and upstream then waits for the reader
        # until the keepalive runs out (seen: 90 s broker shutdowns, revocations that did not cut a busy
        # device). A closed transport makes the reader see EOF and end on its own.
        reader_task = self._reader_task
        if reader_task is not None and reader_task is not asyncio.current_task() and not reader_task.done():
            stream = getattr(self.writer, "_writer", None)  # amqtt.adapters.StreamWriterAdapter._writer
            transport = getattr(stream, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.close()
        await super().stop()

    def handle_read_timeout(self) -> None:
        # No packet for 1.5 × keepalive (see IndexedBroker._initialize_client_session): the client is gone.
        # Closing here makes the broker publish its will (MQTT-3.1.2-24).
        session = self.session
        log.info("client %s silent for %ss, closing", session.client_id if session else "?",
                 session.keep_alive if session else "?")
        task = asyncio.ensure_future(self.handle_connection_closed())
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Future[Any]] = set()
