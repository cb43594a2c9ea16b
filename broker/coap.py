"""`CoapServer`: the CoAP transport (RFC 7252) for ESL base stations and battery sensors, on aiocoap.

    POST mf/v1/{device_id}/up/{telemetry|event|state}   uplink → IngestPipeline → 2.04 + ack (JSON, or CBOR)
    GET  mf/v1/{device_id}/down/cmd  (Observe: 0)        one notification per command (queued while offline)
    GET  mf/v1/{device_id}/down/cmd  (no Observe)        poll: the next command, or an empty 2.05
    anything mounted with `mount(path, resource)`        e.g. `BlobResource` images served by Block2

Devices authenticate with OSCORE (RFC 8613), one security context per device keyed from its registry credential
(broker/coap_security.py); a request that is not protected with the context of the device its path names is
refused (4.01; 4.03 for another device's path). Errors carry a diagnostic text payload (RFC 7252 §5.5.2):
4.00 malformed body, 4.01 authentication, 4.04 unknown path or channel, 4.13 too large (with Size1), 4.15
content format other than JSON (50) or CBOR (60), 4.29 over the device's request rate (with Max-Age), 5.03 ingest
unavailable. Anything a client sends is
answered or dropped; nothing stops the server. See docs/coap.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiocoap
import aiocoap.pipe
import aiocoap.resource
import cbor2
from aiocoap import error, interfaces, oscore
from aiocoap.blockwise import Block1Spool
from aiocoap.numbers import codes
from aiocoap.optiontypes import BlockOption
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from aiocoap.transports.oscore import OSCOREAddress

from broker.coap_security import (
    DeviceContexts,
    DeviceSecretSource,
    DeviceSecurityContext,
    OscoreStateStore,
    RegistrySecretSource,
)
from broker.ingest import IngestPipeline
from broker.ratelimit import RateLimiter
from broker.topics import INGEST_CHANNELS
from broker.uplink import Ack, Uplink
from fleet.registry import Registry

__all__ = ["BlobResource", "CoapServer", "CoapStats"]

log = logging.getLogger(__name__)

CF_JSON: Final = 50
CF_CBOR: Final = 60
CF_OCTETS: Final = 42
ROOT: Final = ("mf", "v1")
# RFC 7252 MAX_TRANSMIT_WAIT: after this long a confirmable notification has either arrived or failed.
REDELIVER_WINDOW_S: Final = 93.0


@dataclass(slots=True)
class CoapStats:
    requests: int = 0
    uplinks: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)  # by reason
    commands_queued: int = 0
    commands_sent: int = 0
    commands_redelivered: int = 0
    commands_dropped: int = 0  # queue overflow (oldest first)
    observations: int = 0  # active now

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "uplinks": self.uplinks,
            "refused": dict(self.refused),
            "commands_queued": self.commands_queued,
            "commands_sent": self.commands_sent,
            "commands_redelivered": self.commands_redelivered,
            "commands_dropped": self.commands_dropped,
            "observations": self.observations,
        }


@dataclass(slots=True)
class _Outbox:
    """Commands waiting for one device, and its current observation (if any)."""

    queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    observer: object | None = None


class CoapServer:
    """The CoAP endpoint. Construct, `await start()`, `await aclose()` (or `async with`).

    `secrets` gives each device's current secret (`fleet.registry.Registry` fits; a bare Registry is wrapped in
    `RegistrySecretSource`, which also refuses disabled and retired devices). `state_path` is the SQLite file
    holding OSCORE sequence numbers and replay windows: keep it across restarts, one server per file. Register
    the server as a `fleet.registry.CredentialListener` so a rotation or revocation takes effect at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        pipeline: IngestPipeline,
        secrets: DeviceSecretSource,
        *,
        state_path: str | Path,
        max_payload_bytes: int | None = None,
        max_queued_commands: int = 100,
        redeliver_window_s: float = REDELIVER_WINDOW_S,
        context_recheck_s: float = 300.0,
        max_contexts: int = 100_000,
        device_rate_per_s: float = 20.0,
        device_burst: int = 200,
        lookups_per_host_per_s: float = 20.0,
        lookup_burst: int = 200,
    ) -> None:
        self.host = host
        self.port = port
        self.pipeline = pipeline
        source: DeviceSecretSource = RegistrySecretSource(secrets) if isinstance(secrets, Registry) else secrets
        self.state = OscoreStateStore(state_path)
        self.contexts = DeviceContexts(source, self.state, recheck_s=context_recheck_s, max_contexts=max_contexts)
        self.max_payload_bytes = max_payload_bytes if max_payload_bytes is not None else pipeline.max_payload_bytes
        self.max_queued_commands = max_queued_commands
        self.limiter = RateLimiter(device_rate_per_s, device_burst, max_keys=max_contexts)
        self.lookups = RateLimiter(lookups_per_host_per_s, lookup_burst, max_keys=max_contexts)
        self.redeliver_window_s = redeliver_window_s
        self.stats = CoapStats()
        # Called with the device id on every authenticated request (presence: last seen, online).
        self.on_seen: Callable[[str], None] | None = None
        self._outboxes: dict[str, _Outbox] = {}
        self._site = aiocoap.resource.Site()
        self._site.add_resource(ROOT, _DeviceTree(self))
        self._context: aiocoap.Context | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._context is not None:
            return
        wrapped = _DeviceOscoreSite(self._site, self.contexts, self.lookups)
        self._context = await aiocoap.Context.create_server_context(
            wrapped, bind=(self.host, self.port), transports=["udp6"], loggername="marketfleet.coap"
        )
        if self.port == 0:
            self.port = _bound_port(self._context) or 0
        log.info("CoAP server listening on udp %s:%d", self.host, self.port)

    async def aclose(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            with contextlib.suppress(Exception):
                await context.shutdown()
        for box in self._outboxes.values():
            box.observer = None
            box.wakeup.set()
        self.contexts.close()
        self.state.close()

    async def __aenter__(self) -> CoapServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- resources

    def mount(self, path_segments: Sequence[str], resource: interfaces.Resource) -> None:
        """Serve `resource` at `path_segments`, e.g. `("mf", "v1", "fw")` for a path-capable firmware site or
        `("esl", "img", "<sha256>")` for a `BlobResource`. Reachable with and without OSCORE: a resource that
        needs the caller's identity asks `authenticated_device(request)`."""
        path = tuple(path_segments)
        if not path or any(not isinstance(p, str) or not p for p in path):
            raise ValueError(f"path segments must be non-empty strings, got {path_segments!r}")
        if path[: len(ROOT)] == ROOT and (len(path) == len(ROOT) or "-" in path[len(ROOT)]):
            # mf/v1/fw/… is fine (device ids always contain '-': "<vendor>-<serial>"); mf/v1/acme-1/… is not.
            raise ValueError(f"{'/'.join(path)} would shadow the device resources under mf/v1/")
        self._site.add_resource(path, resource)

    def unmount(self, path_segments: Sequence[str]) -> None:
        self._site.remove_resource(tuple(path_segments))

    def authenticated_device(self, request: aiocoap.Message) -> str | None:
        """The device a request was protected by (OSCORE with a current context), else None."""
        ctx = _security_context(request)
        return ctx.device_id if ctx is not None and self.contexts.is_current(ctx) else None

    # ---------------------------------------------------------------- commands

    async def send_command(self, device_id: str, payload: dict[str, Any]) -> str:
        """Queue a command (`{"command": …}`, validated by the caller) for the device and return its `id`.

        The device's observation of `down/cmd` gets it as one notification at once, or when it next registers.
        Delivery is at least once: a command whose notification may not have arrived (the observation ended
        within `redeliver_window_s` of sending it) is queued again, so devices de-duplicate by `id`.
        """
        if not isinstance(payload, dict):
            raise TypeError("a command is a JSON object")
        command = dict(payload)
        command.setdefault("id", str(uuid.uuid4()))
        box = self._outboxes.setdefault(device_id, _Outbox())
        box.queue.append(command)
        self.stats.commands_queued += 1
        while len(box.queue) > self.max_queued_commands:
            dropped = box.queue.popleft()
            self.stats.commands_dropped += 1
            log.warning("CoAP command queue of %s full; dropped command %s", device_id, dropped.get("id"))
        box.wakeup.set()
        return str(command["id"])

    def pending_commands(self, device_id: str) -> int:
        box = self._outboxes.get(device_id)
        return len(box.queue) if box is not None else 0

    def observing(self, device_id: str) -> bool:
        box = self._outboxes.get(device_id)
        return box is not None and box.observer is not None

    # ---------------------------------------------------------------- fleet.registry.CredentialListener

    async def credential_issued(self, device: Any, secret: str) -> None:
        self._forget(device.id)

    async def credential_revoked(self, device: Any) -> None:
        self._forget(device.id)

    async def device_changed(self, device: Any) -> None:
        self._forget(device.id)

    def _forget(self, device_id: str) -> None:
        self.contexts.drop(device_id)
        box = self._outboxes.get(device_id)
        if box is not None:
            box.wakeup.set()  # an observation under the old key ends (4.01)

    # ---------------------------------------------------------------- request handling (called by _DeviceTree)

    def _authenticate(self, request: aiocoap.Message, device_id: str) -> DeviceSecurityContext:
        ctx = _security_context(request)
        if ctx is None:
            self.stats.refused["unauthenticated"] += 1
            raise error.Unauthorized("OSCORE required: protect the request with the device's security context "
                                     "(docs/coap.md)")
        if not self.contexts.is_current(ctx):
            self.stats.refused["revoked"] += 1
            raise error.Unauthorized("credential rotated or revoked")
        if ctx.device_id != device_id:
            self.stats.refused["forbidden"] += 1
            raise error.Forbidden(f"authenticated as {ctx.device_id}; may not use the path of {device_id}")
        if self.on_seen is not None:
            try:
                self.on_seen(device_id)
            except Exception:
                log.exception("presence callback failed for %s", device_id)
        return ctx

    async def _uplink(self, pipe: Any, request: aiocoap.Message, device_id: str, channel: str) -> None:
        self._authenticate(request, device_id)
        if channel not in INGEST_CHANNELS:
            self.stats.refused["channel"] += 1
            raise error.NotFound(f"no channel {channel!r}; uplinks go to up/telemetry, up/event or up/state")
        cf = request.opt.content_format
        if cf is not None and int(cf) not in (CF_JSON, CF_CBOR):
            self.stats.refused["content_format"] += 1
            raise error.UnsupportedContentFormat(f"content format {int(cf)}: send JSON (50) or CBOR (60)")
        body = request.payload
        if len(body) > self.max_payload_bytes:
            raise self._too_large(len(body))
        fmt = "auto" if cf is None else ("json" if int(cf) == CF_JSON else "cbor")
        uplink = Uplink(transport="coap", device_id=device_id, channel=channel, body=bytes(body),
                        content_format=fmt, topic="/".join((*ROOT, device_id, "up", channel)))
        self.stats.uplinks += 1
        try:
            ack = await self.pipeline.submit(uplink)
        except Exception:
            log.exception("ingest failed for a CoAP uplink of %s", device_id)
            raise error.ServiceUnavailable("ingest unavailable; keep the messages and retry") from None
        whole = _whole_uplink_rejection(ack)
        if whole is not None:
            reason, detail = whole
            self.stats.refused[reason] += 1
            if reason == "oversized":
                raise error.RequestEntityTooLarge(detail)
            if reason == "unknown_device":
                raise error.Unauthorized(detail)
            raise error.BadRequest(detail)
        wants_cbor = cf is not None and int(cf) == CF_CBOR
        if request.opt.accept is not None and int(request.opt.accept) in (CF_JSON, CF_CBOR):
            wants_cbor = int(request.opt.accept) == CF_CBOR
        payload = cbor2.dumps(ack.to_json()) if wants_cbor else _json(ack.to_json())
        response = aiocoap.Message(code=codes.CHANGED, payload=payload,
                                   content_format=CF_CBOR if wants_cbor else CF_JSON)
        response.opt.block1 = request.opt.block1
        pipe.add_response(response, is_last=True)

    def _too_large(self, size: int | None) -> error.RenderableError:
        self.stats.refused["too_large"] += 1
        text = f"uplink of {size} bytes; at most {self.max_payload_bytes}" if size else (
            f"uplink larger than {self.max_payload_bytes} bytes")
        return _TooLarge(text, self.max_payload_bytes)

    def _limit(self, device_id: str) -> None:
        wait = self.limiter.take(device_id)
        if wait > 0:
            self.stats.refused["rate"] += 1
            raise _TooManyRequests(f"more than {self.limiter.rate:g} requests/s; retry after the Max-Age",
                                   RateLimiter.retry_after_s(wait))

    async def _commands(self, pipe: Any, request: aiocoap.Message, device_id: str) -> None:
        ctx = self._authenticate(request, device_id)
        self._limit(device_id)
        if request.code is not codes.GET:
            raise error.MethodNotAllowed("GET (with Observe) this resource")
        cbor = request.opt.accept is not None and int(request.opt.accept) == CF_CBOR
        box = self._outboxes.setdefault(device_id, _Outbox())
        if request.opt.observe != 0:
            command = box.queue.popleft() if box.queue else None
            if command is not None:
                self.stats.commands_sent += 1
            pipe.add_response(_command_message(command, cbor), is_last=True)
            return
        me = object()
        box.observer = me
        box.wakeup.set()  # an older observation of this device ends
        sent: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        number = 0
        self.stats.observations += 1
        try:
            first = box.queue.popleft() if box.queue else None
            if first is not None:
                sent.append((time.monotonic(), first))
                self.stats.commands_sent += 1
            message = _command_message(first, cbor)
            message.opt.observe = number
            pipe.add_response(message, is_last=False)
            while True:
                if box.observer is not me:
                    pipe.add_response(aiocoap.Message(code=codes.SERVICE_UNAVAILABLE,
                                                      payload=b"observation superseded by a newer registration"),
                                      is_last=True)
                    return
                if not self.contexts.is_current(ctx):
                    pipe.add_response(aiocoap.Message(code=codes.UNAUTHORIZED,
                                                      payload=b"credential rotated or revoked"), is_last=True)
                    return
                if box.queue:
                    command = box.queue.popleft()
                    now = time.monotonic()
                    sent.append((now, command))
                    while sent and now - sent[0][0] > self.redeliver_window_s:
                        sent.popleft()
                    number += 1
                    message = _command_message(command, cbor)
                    message.opt.observe = number & 0xFFFFFF
                    self.stats.commands_sent += 1
                    pipe.add_response(message, is_last=False)
                    continue
                box.wakeup.clear()
                await box.wakeup.wait()
        finally:
            self.stats.observations -= 1
            if box.observer is me:
                box.observer = None
            cutoff = time.monotonic() - self.redeliver_window_s
            again = [command for at, command in sent if at >= cutoff]
            if again:
                box.queue.extendleft(reversed(again))
                self.stats.commands_redelivered += len(again)
                box.wakeup.set()


# ---------------------------------------------------------------- resources


class _DeviceTree(aiocoap.resource.PathCapable, interfaces.Resource):
    """Everything under mf/v1/: `{device}/up/{channel}` and `{device}/down/cmd`."""

    def __init__(self, server: CoapServer) -> None:
        super().__init__()
        self.server = server
        self._block1 = Block1Spool()

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        raise error.InternalServerError("render_to_pipe only")

    def get_resources_as_linkheader(self) -> Any:
        from aiocoap.util.linkformat import LinkFormat

        return LinkFormat([])

    async def render_to_pipe(self, pipe: Any) -> None:
        server = self.server
        server.stats.requests += 1
        request = pipe.request
        path = request.opt.uri_path
        if len(path) == 3 and path[1] == "up" and path[0]:
            if request.code is not codes.POST:
                raise error.MethodNotAllowed("POST uplinks")
            server._authenticate(request, path[0])
            block1 = request.opt.block1
            if block1 is None or block1.block_number == 0:  # an uplink counts once, however many blocks
                server._limit(path[0])
            if block1 is not None and block1.start + len(request.payload) > server.max_payload_bytes:
                raise server._too_large(None)
            if request.opt.size1 is not None and request.opt.size1 > server.max_payload_bytes:
                raise server._too_large(request.opt.size1)
            request = self._block1.feed_and_take(request)  # 2.31 Continue / 4.08 Incomplete while assembling
            await server._uplink(pipe, request, path[0], path[2])
            return
        if len(path) == 3 and path[1] == "down" and path[2] == "cmd" and path[0]:
            await server._commands(pipe, request, path[0])
            return
        raise error.NotFound("mf/v1/{device_id}/up/{telemetry|event|state} or mf/v1/{device_id}/down/cmd")


class BlobResource(aiocoap.resource.Resource):
    """Immutable bytes (a firmware image, a rendered label) served with Block2, stateless per block.

    Every block carries ETag (first 8 bytes of the SHA-256) and Size2, so a device can check it is assembling
    one version; `sha256` is what the OTA/ESL job announces for verifying the whole download.
    """

    def __init__(self, data: bytes, *, content_format: int = CF_OCTETS, max_age: int | None = None) -> None:
        super().__init__()
        self.data = bytes(data)
        digest = hashlib.sha256(self.data)
        self.sha256 = digest.hexdigest()
        self.etag = digest.digest()[:8]
        self.content_format = content_format
        self.max_age = max_age

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False

    def get_link_description(self) -> dict[str, Any]:
        return {"ct": str(self.content_format), "sz": str(len(self.data))}

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        data = self.data
        block2 = request.opt.block2
        remote = request.remote
        max_szx = getattr(remote, "maximum_block_size_exp", 6)
        max_payload = getattr(remote, "maximum_payload_size", 1024)
        response = aiocoap.Message(etag=self.etag, content_format=self.content_format)
        if self.max_age is not None:
            response.opt.max_age = self.max_age
        if block2 is None and len(data) <= max_payload:
            response.payload = data
            return response
        szx = min(max_szx, block2.size_exponent if block2 is not None else max_szx)
        size = 1 << (szx + 4)
        start = block2.start if block2 is not None else 0
        number = start // size
        start = number * size
        if start >= len(data) > 0:
            raise error.BadOption(f"block {number} of size {size} is beyond the end ({len(data)} bytes)")
        response.payload = data[start : start + size]
        response.opt.block2 = BlockOption.BlockwiseTuple(number, start + size < len(data), szx)
        response.opt.size2 = len(data)
        return response


class _DeviceOscoreSite(OscoreSiteWrapper):
    """OSCORE in front of the site, following aiocoap's `OscoreSiteWrapper`, with two changes: the device's
    context is loaded (async, from the registry) before it is looked up, and every authentication failure
    (unknown context, failed decryption, replay) is a 4.01, as docs/protocol.md promises."""

    def __init__(self, inner_site: Any, contexts: DeviceContexts, lookups: RateLimiter | None = None) -> None:
        super().__init__(inner_site, contexts)
        self.contexts = contexts
        self.lookups = lookups  # registry look-ups per remote host (requests naming devices not in memory)

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        if request.opt.oscore is None:
            await self._inner_site.render_to_pipe(pipe)
            return
        try:
            unprotected = oscore.verify_start(request)
        except oscore.NotAProtectedMessage:
            await self._inner_site.render_to_pipe(pipe)
            return
        except Exception:
            raise error.BadOption("malformed OSCORE option") from None
        if request.code not in (codes.FETCH, codes.POST):
            raise error.MethodNotAllowed("OSCORE requests are POST or FETCH on the outside")
        if self.lookups is not None and not self.contexts.is_cached(unprotected):
            # A flood of made-up device ids would otherwise be a flood of registry queries.
            wait = self.lookups.take(_remote_host(request.remote))
            if wait > 0:
                raise _Busy("too many requests naming unknown devices from this address; retry after the Max-Age",
                            RateLimiter.retry_after_s(wait))
        try:
            await self.contexts.prepare(unprotected)
        except Exception:
            log.exception("could not load the OSCORE context for a request")
            raise error.ServiceUnavailable("credential lookup failed; retry later") from None
        try:
            sc = self.contexts.find_oscore(unprotected)
        except KeyError:
            raise error.Unauthorized("unknown device or revoked credential (no OSCORE context)") from None
        try:
            plain, seqno = sc.unprotect(request)
        except error.RenderableError:
            raise  # 4.01 + Echo (RFC 8613 B.1.2): protected by the context, safe to send
        except oscore.ReplayError:
            raise error.Unauthorized("replay detected") from None
        except oscore.DecodeError:
            raise error.BadOption("undecodable COSE object") from None
        except (oscore.ProtectionInvalid, ValueError, IndexError, KeyError, TypeError):
            raise error.Unauthorized("OSCORE decryption failed (wrong key?)") from None
        plain.remote = OSCOREAddress(sc, request.remote)
        sc = sc.context_for_response()
        inner_pipe = aiocoap.pipe.IterablePipe(plain)
        errors_to_messages = aiocoap.pipe.error_to_message(inner_pipe, self.log)
        aiocoap.pipe.run_driving_pipe(
            errors_to_messages, self._inner_site.render_to_pipe(inner_pipe), name="OSCORE rendering"
        )
        async for event in inner_pipe:
            if event.exception is not None:
                log.warning("CoAP handler raised %r; answering 5.00", event.exception)
                message, is_last = aiocoap.Message(code=codes.INTERNAL_SERVER_ERROR), True
            else:
                message, is_last = event.message, event.is_last
            if not is_last:
                message.opt.observe = 0
            try:
                protected, _ = sc.protect(message, seqno)
            except oscore.ContextUnavailable:
                # The context was retired (credential changed, or evicted) while an observation used it.
                pipe.add_response(aiocoap.Message(code=codes.UNAUTHORIZED, payload=b"security context retired; "
                                                  b"register again"), is_last=True)
                break
            if message.opt.observe is not None:
                protected.opt.observe = sc.sender_sequence_number & 0xFFFFFF
            pipe.add_response(protected, is_last=is_last)
            if is_last:
                break


class _Busy(error.ConstructionRenderableError):
    code = codes.SERVICE_UNAVAILABLE

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def to_message(self) -> aiocoap.Message:
        message = super().to_message()
        message.opt.max_age = self.retry_after_s  # RFC 7252 5.9.3.4: Max-Age says when to try again
        return message


class _TooManyRequests(error.ConstructionRenderableError):
    code = codes.TOO_MANY_REQUESTS  # RFC 8516

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def to_message(self) -> aiocoap.Message:
        message = super().to_message()
        message.opt.max_age = self.retry_after_s  # RFC 8516: Max-Age says when to try again
        return message


class _TooLarge(error.RequestEntityTooLarge):
    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    def to_message(self) -> aiocoap.Message:
        message = super().to_message()
        message.opt.size1 = self.limit
        return message


# ---------------------------------------------------------------- helpers


def _remote_host(remote: Any) -> str:
    """The sender's IP address (not the port: a flood may use many source ports)."""
    sockaddr = getattr(remote, "sockaddr", None)
    if isinstance(sockaddr, tuple) and sockaddr:
        return str(sockaddr[0])
    return str(getattr(remote, "hostinfo", remote))


def _security_context(request: aiocoap.Message) -> DeviceSecurityContext | None:
    remote = request.remote
    if isinstance(remote, OSCOREAddress) and isinstance(remote.security_context, DeviceSecurityContext):
        return remote.security_context
    return None


def _whole_uplink_rejection(ack: Ack) -> tuple[str, str] | None:
    """(reason, detail) when the pipeline refused the uplink as a whole (nothing stored, one seq-less reject)."""
    if ack.seqs or len(ack.rejected) != 1:
        return None
    rejection = ack.rejected[0]
    if rejection.seq is not None or rejection.reason not in ("malformed", "oversized", "unknown_device"):
        return None
    return rejection.reason, rejection.detail


def _command_message(command: dict[str, Any] | None, cbor: bool) -> aiocoap.Message:
    if command is None:
        return aiocoap.Message(code=codes.CONTENT, payload=b"", content_format=CF_CBOR if cbor else CF_JSON)
    payload = cbor2.dumps(command) if cbor else _json(command)
    return aiocoap.Message(code=codes.CONTENT, payload=payload, content_format=CF_CBOR if cbor else CF_JSON)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _bound_port(context: aiocoap.Context) -> int | None:
    """The UDP port aiocoap bound (for `port=0`): request interface → token → message interface → socket."""
    for interface in getattr(context, "request_interfaces", []):
        message_manager = getattr(interface, "token_interface", None)
        message_interface = getattr(message_manager, "message_interface", None)
        transport = getattr(message_interface, "transport", None)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                return int(sock.getsockname()[1])
    return None
