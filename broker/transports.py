"""`start_transports(...)`: the device transports beside MQTT — CoAP and the serial scale gateway — started on a
running ingest pipeline, for the composition root (marketfleet/platform.py).

    services.update(await start_transports(settings, registry, broker.pipeline, stack))

Each transport is registered as a registry `CredentialListener` where it caches credentials (CoAP: OSCORE
contexts), and its `aclose` is pushed on `stack`, so it stops before the pipeline it feeds. The HTTP ingest
routes need nothing here: they find the pipeline in `ApiContext.services["pipeline"]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.ratelimit import RateLimiter
from fleet.errors import MarketFleetError

if TYPE_CHECKING:
    from broker.ingest import IngestPipeline
    from broker.presence import PresenceTracker
    from fleet.registry import Registry
    from marketfleet.settings import Settings

__all__ = ["TransportUnavailable", "command_transport", "send_command", "start_transports"]

log = logging.getLogger(__name__)


class TransportUnavailable(MarketFleetError):
    """A transport cannot start (e.g. its port is taken); the message says which setting to change."""


async def start_transports(
    settings: Settings,
    registry: Registry,
    pipeline: IngestPipeline,
    stack: contextlib.AsyncExitStack,
    presence: PresenceTracker | None = None,
) -> dict[str, Any]:
    """Start CoAP (`settings.coap.enabled`) and the serial gateway (`settings.serial.ports` not empty); return
    them as services (`"coap"`, `"serial"`, and `"ingest_limiter"` for HTTP ingest). A serial port that cannot
    be opened yet does not stop start-up: the gateway retries it every few seconds. With `presence`, every
    authenticated CoAP request and every accepted serial frame counts as a sign of life (online, last seen;
    offline after 1.5 × keepalive)."""
    seen = (lambda device_id: presence.seen(device_id, reason="uplink")) if presence is not None else None
    # HTTP ingest (api/routes/ingest.py) finds its per-device limit here: a detector uploads results in batches,
    # so a few requests a second is plenty; more is a device (or a script) gone wrong.
    limiter = RateLimiter(settings.api.device_upload_rate, settings.api.device_upload_burst)
    services: dict[str, Any] = {"ingest_limiter": limiter}
    if settings.coap.enabled:
        from broker.coap import CoapServer

        coap = CoapServer(
            settings.coap.host, settings.coap.port, pipeline, registry,
            state_path=Path(settings.coap.state_path or settings.data_dir / "coap-oscore.sqlite3"),
            max_queued_commands=settings.coap.max_queued_commands,
            device_rate_per_s=settings.coap.device_rate_per_s, device_burst=settings.coap.device_burst,
        )
        try:
            await coap.start()
        except OSError as err:
            coap.contexts.close()
            coap.state.close()
            raise TransportUnavailable(
                f"CoAP cannot listen on udp {settings.coap.host}:{settings.coap.port} ({err.strerror or err}); "
                "set coap.port (MF_COAP__PORT), or coap.enabled=false (MF_COAP__ENABLED) to run without CoAP"
            ) from err
        coap.on_seen = seen
        stack.push_async_callback(coap.aclose)
        registry.listeners.append(coap)
        stack.callback(_unlisten, registry, coap)
        services["coap"] = coap
    if settings.serial.ports:
        from broker.serial_gateway import SerialGateway, SerialPortConfig

        gateway = SerialGateway(
            [
                SerialPortConfig(p.url, frozenset(p.devices), baudrate=p.baudrate, bytesize=p.bytesize,
                                 parity=p.parity, stopbits=p.stopbits, name=p.name)
                for p in settings.serial.ports
            ],
            pipeline,
        )
        gateway.on_seen = seen
        await gateway.start()
        stack.push_async_callback(gateway.aclose)
        services["serial"] = gateway
        log.info("serial gateway on %d port(s)", len(settings.serial.ports))
    return services


def _unlisten(registry: Registry, listener: object) -> None:
    if listener in registry.listeners:
        registry.listeners.remove(listener)


# ---------------------------------------------------------------- commands over the device's own transport


def command_transport(services: Mapping[str, Any], device_id: str, kind: str) -> str:
    """Where a command for this device goes: "coap" for kinds that speak only CoAP (ESL base stations) and for
    a device observing its CoAP `down/cmd` now, "mqtt" for the other MQTT kinds. `LookupError` for kinds
    without a command downlink (HTTP detectors, labels reached through their base station)."""
    from fleet.kinds import spec_for

    transports = spec_for(kind).transports
    coap = services.get("coap")
    if "coap" in transports and coap is not None and ("mqtt" not in transports or coap.observing(device_id)):
        return "coap"
    if "mqtt" in transports:
        return "mqtt"
    if "coap" in transports:
        raise LookupError(f"{kind} devices take commands over CoAP, and CoAP is not running here")
    raise LookupError(f"{kind} devices have no command downlink ({', '.join(transports)})")


async def send_command(
    services: Mapping[str, Any], device_id: str, market: str | None, kind: str, command: dict[str, Any]
) -> tuple[str, str]:
    """Send a command to one device over the transport it listens on; returns (command id, transport).

    The command is validated against the kind's command schema first (pydantic `ValidationError`: a 422 for an
    API caller); the message is `{"id": …, **command}` (docs/protocol.md), an id is added when the command has
    none. `LookupError` for a kind without a downlink, `ConnectionError` when no downlink runs in this process."""
    from fleet.kinds import spec_for

    transport = command_transport(services, device_id, kind)
    fields = {k: v for k, v in command.items() if k != "id"}
    validated = spec_for(kind).adapter("command").validate_python(fields)
    message = {"id": str(command.get("id") or uuid.uuid4()),
               **json.loads(validated.model_dump_json(exclude_none=True))}
    if transport == "coap":
        await services["coap"].send_command(device_id, message)
    else:
        broker = services.get("broker")
        if broker is None:
            raise ConnectionError("no broker runs in this process; commands are sent where ingest runs")
        from broker.topics import down_topic

        await broker.publish(down_topic(market, device_id, "cmd"), json.dumps(message, ensure_ascii=False).encode())
    return str(message["id"]), transport
