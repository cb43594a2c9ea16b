"""The CoAP device client (aiocoap) of docs/protocol.md, for ESL base stations and battery sensors.

Uplink: confirmable `POST coap://{host}:{port}/mf/v1/{device_id}/up/{channel}` with the message (or array) as
JSON (content-format 50) or CBOR (60); the `2.04 Changed` response body is the acknowledgement. Downlink:
`GET` with Observe on `…/down/cmd`, every notification one command.

Authentication is a hook: a `CoapAuth` gets the client context once (`setup`, to load security material) and
every request before it goes out (`apply`). The default, `OscoreAuth`, is the platform's scheme (docs/coap.md):
OSCORE with the device's own security context, derived from its secret by `broker.coap_security`, registered
for the device's own path prefix, so many devices can share one client context (one UDP socket). `NoAuth` is
for a bare CoAP server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import aiocoap
import aiocoap.error

from broker.coap_security import device_client_context
from simulators.topics import PREFIX, coap_down_path, coap_up_path
from simulators.transports.base import DeviceIdentity, DeviceLink, RequestTransport, log
from simulators.wire import CONTENT_FORMAT, Ack, Encoding, decode, encode_messages


class CoapAuth:
    """How a CoAP request proves who sent it. Subclass and override either method."""

    #: aiocoap client transports the context needs (OSCORE sits on top of UDP).
    transports: tuple[str, ...] = ("udp6",)

    async def setup(self, context: aiocoap.Context, identity: DeviceIdentity, base_uri: str) -> None:
        """Called once with the client context and the server's `coap://host:port` (to load credentials)."""

    def apply(self, request: aiocoap.Message, identity: DeviceIdentity) -> None:
        """Called on every request before it is sent (e.g. to add a URI query or an option)."""


class NoAuth(CoapAuth):
    """No authentication (a bare CoAP server; the platform refuses such requests with 4.01)."""


class OscoreAuth(CoapAuth):
    """OSCORE (RFC 8613) with the device's context from its secret, the platform's scheme (docs/coap.md).

    The sender sequence number must never be reused with the same key: with `reserve` (e.g.
    `OutboxStore.reserve`), each start reserves a block of `block` numbers in the device's outbox file, so a
    restarted simulator goes on above what it used before; without it, every start begins at 0 (fine for
    devices registered for this run only)."""

    transports = ("oscore", "udp6")

    def __init__(self, reserve: Any = None, block: int = 1_000_000) -> None:
        self.reserve = reserve
        self.block = block

    async def setup(self, context: aiocoap.Context, identity: DeviceIdentity, base_uri: str) -> None:
        start = 0 if self.reserve is None else int(self.reserve(identity.device_id, "oscore_ssn", self.block))
        security = device_client_context(identity.device_id, identity.secret, sender_sequence_number=start)
        context.client_credentials[f"{base_uri}/{PREFIX}/{identity.device_id}/*"] = security


class CoapTransport(RequestTransport):
    name = "coap"
    max_batch_messages = 20  # keeps most uplinks in one or a few Block1 blocks

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5683,
        *,
        auth: CoapAuth | None = None,
        encoding: Encoding = "json",
        context: aiocoap.Context | None = None,
        timeout_s: float = 15.0,
        observe_commands: bool = True,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        super().__init__(encoding=encoding, reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.host = host
        self.port = port
        self.auth = auth or OscoreAuth()
        self.timeout_s = timeout_s
        self.observe_commands = observe_commands
        self.responses: dict[str, int] = {}  # response code name → count, for diagnostics
        self._context = context
        self._owns_context = context is None
        self._observer: asyncio.Task[None] | None = None
        self._seen_commands: list[str] = []

    def share_context(self, context: aiocoap.Context) -> None:
        """Use a client context owned elsewhere (many simulated devices on one UDP socket); before start()."""
        self._context = context
        self._owns_context = False

    def _uri(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}/{path}"

    async def start(self, link: DeviceLink) -> None:
        self.link = link
        if self._context is None:
            self._context = await aiocoap.Context.create_client_context(transports=list(self.auth.transports))
        await self.auth.setup(self._context, link.identity, self._uri("").rstrip("/"))
        await super().start(link)
        if self.observe_commands:
            self._observer = asyncio.get_running_loop().create_task(
                self._observe(), name=f"coap-observe:{link.identity.device_id}"
            )

    async def close(self) -> None:
        if self._observer is not None:
            self._observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._observer
            self._observer = None
        await super().close()
        if self._owns_context and self._context is not None:
            await self._context.shutdown()
            self._context = None

    async def _request(self, message: aiocoap.Message) -> aiocoap.Message:
        assert self._context is not None
        self.auth.apply(message, self.identity)
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._context.request(message).response
        except (TimeoutError, aiocoap.error.Error, OSError) as exc:
            raise self._failed(f"coap: {type(exc).__name__}: {exc}") from exc
        self.responses[str(response.code)] = self.responses.get(str(response.code), 0) + 1
        return response

    async def _post(self, channel: str, data: bytes) -> aiocoap.Message:
        self._ensure_up()
        request = aiocoap.Message(
            code=aiocoap.POST,
            uri=self._uri(coap_up_path(self.identity.device_id, channel)),
            payload=data,
            content_format=CONTENT_FORMAT[self.encoding],
        )
        response = await self._request(request)
        code = response.code
        if code.is_successful():
            self.reset_backoff()
        elif code in (aiocoap.UNAUTHORIZED, aiocoap.FORBIDDEN) or code.is_server_error():
            # Keep the messages: credentials may be rotated, the server may come back.
            raise self._failed(f"coap: {code}: {response.payload[:200]!r}")
        return response

    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        assert self.link is not None
        response = await self._post(channel, encode_messages(messages, self.encoding))
        if not response.code.is_successful():
            # 4.00 / 4.13 for a whole uplink: nothing in it can ever be stored; drop it like a rejection.
            reason = "oversized" if response.code == aiocoap.REQUEST_ENTITY_TOO_LARGE else "malformed"
            detail = response.payload.decode(errors="replace")[:200]
            body = {"seqs": [], "rejected": [{"seq": m["seq"], "reason": reason, "detail": detail} for m in messages]}
            self.link.on_ack(Ack.parse(body))
            return
        try:
            ack = Ack.parse(decode(response.payload, response.opt.content_format))
        except Exception as exc:
            log.warning("%s: coap answer is not an ack: %s", self.identity.device_id, exc)
            return
        self.link.on_ack(ack)

    async def send_raw(self, channel: str, data: bytes) -> None:
        await self._post(channel, data)

    async def _observe(self) -> None:
        """Observe `down/cmd`; re-register after every end of the observation (server restart, errors)."""
        assert self._context is not None and self.link is not None
        while True:
            if not self.connected or self.held_down_for() > 0:
                await asyncio.sleep(max(1.0, self.held_down_for()))
                continue
            request = aiocoap.Message(
                code=aiocoap.GET, uri=self._uri(coap_down_path(self.identity.device_id)), observe=0
            )
            self.auth.apply(request, self.identity)
            pending = self._context.request(request)
            try:
                async with asyncio.timeout(self.timeout_s):
                    first = await pending.response
                if not first.code.is_successful():
                    log.debug("%s: observe down/cmd: %s", self.identity.device_id, first.code)
                    pending.observation.cancel()
                    await asyncio.sleep(60)
                    continue
                self._command(first)
                async for notification in pending.observation:
                    self._command(notification)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    pending.observation.cancel()
                raise
            except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                log.debug("%s: observe down/cmd ended: %s", self.identity.device_id, exc)
            await asyncio.sleep(self.backoff())

    def _command(self, response: aiocoap.Message) -> None:
        assert self.link is not None
        if not response.payload:
            return
        try:
            body = decode(response.payload, response.opt.content_format)
        except Exception as exc:
            log.warning("%s: undecodable command: %s", self.identity.device_id, exc)
            return
        command_id = body.get("id") if isinstance(body, dict) else None
        if command_id is not None:  # a re-registration repeats the current value: apply a command once
            if command_id in self._seen_commands:
                return
            self._seen_commands = [*self._seen_commands[-255:], command_id]
        self.link.on_command(body)
