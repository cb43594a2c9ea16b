"""A whole simulated market: register devices through the platform's API, run them all, report progress.

    creds = await register_market_devices(api_url, admin_token, {"scale": 200, "esl_base_station": 20})
    sim = MarketSimulation(creds, Endpoints(mqtt_host=..., coap_host=..., api_url=api_url))
    summary = await sim.run(duration_s=300)

`simulate(...)` does both and is what `marketfleet simulate` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleet.kinds import CATALOG, DeviceKind
from simulators.device import SimulatedDevice
from simulators.faults import Fault, random_fault
from simulators.ota import OtaAgent, OtaBehaviour
from simulators.outbox import OutboxStore
from simulators.transports import (
    CoapAuth,
    CoapTransport,
    HttpTransport,
    LoopbackTransport,
    MqttTransport,
    OscoreAuth,
    SerialTransport,
    Transport,
)
from simulators.transports.http import HttpAuth

log = logging.getLogger("simulators.market")

#: How each kind talks by default (fleet.kinds lists what each kind may use).
DEFAULT_TRANSPORTS: dict[str, str] = {
    DeviceKind.SCALE: "mqtt",
    DeviceKind.ESL: "coap",
    DeviceKind.ESL_BASE_STATION: "coap",
    DeviceKind.CAMERA: "mqtt",
    DeviceKind.FLOW_COUNTER: "mqtt",
    DeviceKind.FOOD_DETECTOR: "http",
    DeviceKind.ENV_SENSOR: "mqtt",
    DeviceKind.FIRE_PANEL: "mqtt",
    DeviceKind.COLD_LOCKER: "mqtt",
    DeviceKind.THERMOMETER: "mqtt",
    DeviceKind.DISPLAY: "mqtt",
    DeviceKind.INSPECTION_TABLET: "mqtt",
    DeviceKind.BROADCAST: "mqtt",
}

#: Seconds between reports, per kind (a real market's rhythm; `speed` divides them).
DEFAULT_INTERVALS: dict[str, float] = {
    DeviceKind.SCALE: 30.0,
    DeviceKind.ESL: 300.0,
    DeviceKind.ESL_BASE_STATION: 60.0,
    DeviceKind.CAMERA: 60.0,
    DeviceKind.FLOW_COUNTER: 60.0,
    DeviceKind.FOOD_DETECTOR: 600.0,
    DeviceKind.ENV_SENSOR: 60.0,
    DeviceKind.FIRE_PANEL: 60.0,
    DeviceKind.COLD_LOCKER: 30.0,
    DeviceKind.THERMOMETER: 60.0,
    DeviceKind.DISPLAY: 120.0,
    DeviceKind.INSPECTION_TABLET: 30.0,
    DeviceKind.BROADCAST: 60.0,
}

#: Command-line option names (`--scales 200`) for each kind, for the `marketfleet simulate` CLI.
COUNT_OPTIONS: dict[str, str] = {
    "scales": DeviceKind.SCALE,
    "esls": DeviceKind.ESL,
    "esl_stations": DeviceKind.ESL_BASE_STATION,
    "cameras": DeviceKind.CAMERA,
    "flow_counters": DeviceKind.FLOW_COUNTER,
    "food_detectors": DeviceKind.FOOD_DETECTOR,
    "env_sensors": DeviceKind.ENV_SENSOR,
    "fire_panels": DeviceKind.FIRE_PANEL,
    "cold_lockers": DeviceKind.COLD_LOCKER,
    "thermometers": DeviceKind.THERMOMETER,
    "displays": DeviceKind.DISPLAY,
    "tablets": DeviceKind.INSPECTION_TABLET,
    "broadcasts": DeviceKind.BROADCAST,
}

SERIAL_PREFIX = {
    DeviceKind.SCALE: "SC",
    DeviceKind.ESL: "EL",
    DeviceKind.ESL_BASE_STATION: "BS",
    DeviceKind.CAMERA: "CA",
    DeviceKind.FLOW_COUNTER: "FC",
    DeviceKind.FOOD_DETECTOR: "FD",
    DeviceKind.ENV_SENSOR: "EN",
    DeviceKind.FIRE_PANEL: "FP",
    DeviceKind.COLD_LOCKER: "CL",
    DeviceKind.THERMOMETER: "TH",
    DeviceKind.DISPLAY: "DP",
    DeviceKind.INSPECTION_TABLET: "TB",
    DeviceKind.BROADCAST: "PA",
}

# A kind added to fleet.kinds later runs with defaults until it gets its rows above: its first transport the
# simulators speak, a report a minute, `--<kind>s N` on the command line, serials from its first letters.
for _kind in DeviceKind:
    _spoken = [t for t in CATALOG[_kind].transports if t in ("mqtt", "coap", "http")]
    DEFAULT_TRANSPORTS.setdefault(_kind, _spoken[0] if _spoken else "mqtt")
    DEFAULT_INTERVALS.setdefault(_kind, 60.0)
    SERIAL_PREFIX.setdefault(_kind, _kind.value[:2].upper())
    if _kind not in COUNT_OPTIONS.values():
        COUNT_OPTIONS[f"{_kind.value}s"] = _kind

#: A market's device mix (relative numbers): `market_mix(n)` spreads `--devices N` over the kinds like this.
MARKET_MIX: dict[str, float] = {
    DeviceKind.SCALE: 30, DeviceKind.ESL: 40, DeviceKind.ESL_BASE_STATION: 2, DeviceKind.CAMERA: 4,
    DeviceKind.FLOW_COUNTER: 2, DeviceKind.FOOD_DETECTOR: 1, DeviceKind.ENV_SENSOR: 4, DeviceKind.FIRE_PANEL: 1,
    DeviceKind.COLD_LOCKER: 2, DeviceKind.THERMOMETER: 2, DeviceKind.DISPLAY: 4, DeviceKind.INSPECTION_TABLET: 1,
    DeviceKind.BROADCAST: 1,
}  # fmt: skip


def market_mix(total: int) -> dict[str, int]:
    """`total` devices spread over every kind like a real market (mostly scales and labels); with at least as
    many devices as kinds, every kind gets one. Largest-remainder rounding, so the counts add up to `total`."""
    kinds = [k.value for k in DeviceKind]
    weights = {k: float(MARKET_MIX.get(k, 1)) for k in kinds}
    counts = dict.fromkeys(kinds, 0)
    if total <= 0:
        return {}
    if total >= len(kinds):
        counts = dict.fromkeys(kinds, 1)
    rest = total - sum(counts.values())
    scale = sum(weights.values())
    shares = {k: rest * w / scale for k, w in weights.items()}
    for k, share in shares.items():
        counts[k] += int(share)
    left = total - sum(counts.values())
    for k in sorted(kinds, key=lambda k: shares[k] - int(shares[k]), reverse=True)[:left]:
        counts[k] += 1
    return {k: n for k, n in counts.items() if n}


MAX_ROWS_PER_REQUEST = 10_000  # the vendor API's limit per bulk registration


class RegistrationError(RuntimeError):
    """The platform's API refused a registration step."""


# ---------------------------------------------------------------- registration through the API


async def register_market_devices(
    api_base_url: str,
    admin_token: str,
    counts: Mapping[str, int],
    *,
    market: str = "SIM-001",
    market_name: str = "模拟智慧农贸市场",
    district: str = "福田区",
    vendor_code: str | None = None,
    vendor_api_key: str | None = None,
    serial_prefix: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[dict[str, Any]]:
    """Create the market (409: it exists, fine), a vendor (unless `vendor_api_key` is given) and `counts`
    devices per kind placed in the market; returns one credentials dict per device created now:
    `{"device_id", "secret", "kind", "market", "serial"}`.

    Serials are `<prefix><kind code><n:05d>` (prefix random per call unless given), so re-running with the
    same vendor and prefix finds the devices already there; those come back without a secret (the API shows
    a secret once) and are left out of the result with a warning.
    """
    counts = {DeviceKind(k).value: int(n) for k, n in counts.items() if int(n) > 0}
    admin = {"Authorization": f"Bearer {admin_token}"}
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=120)
    base = api_base_url.rstrip("/")
    try:
        response = await http.post(
            f"{base}/api/v1/admin/markets", json={"code": market, "name": market_name, "district": district},
            headers=admin,
        )  # fmt: skip
        if response.status_code not in (200, 201, 409):
            raise RegistrationError(f"creating market {market}: HTTP {response.status_code}: {response.text}")
        if vendor_api_key is None:
            code = vendor_code or f"sim_{secrets.token_hex(3)}"
            response = await http.post(
                f"{base}/api/v1/admin/vendors", json={"code": code, "name": f"Simulated devices ({code})"},
                headers=admin,
            )  # fmt: skip
            if response.status_code == 409:
                raise RegistrationError(
                    f"vendor {code!r} exists and its API key is shown only once: pass vendor_api_key, "
                    f"or another vendor_code"
                )
            if response.status_code not in (200, 201):
                raise RegistrationError(f"creating vendor {code}: HTTP {response.status_code}: {response.text}")
            vendor_api_key = str(response.json()["api_key"])
        prefix = serial_prefix if serial_prefix is not None else f"S{secrets.token_hex(2).upper()}"
        rows = [
            {"serial": f"{prefix}{SERIAL_PREFIX[DeviceKind(kind)]}{n:05d}", "kind": kind, "market": market}
            for kind, count in counts.items()
            for n in range(1, count + 1)
        ]
        credentials: list[dict[str, Any]] = []
        skipped = 0
        for start in range(0, len(rows), MAX_ROWS_PER_REQUEST):
            chunk = rows[start : start + MAX_ROWS_PER_REQUEST]
            response = await http.post(
                f"{base}/api/v1/vendor/devices", json={"devices": chunk}, headers={"X-API-Key": vendor_api_key}
            )
            if response.status_code != 200:
                raise RegistrationError(f"registering devices: HTTP {response.status_code}: {response.text}")
            for row, answer in zip(chunk, response.json()["rows"], strict=True):
                if answer.get("status") == "error":
                    raise RegistrationError(f"device {row['serial']}: {answer.get('error')}")
                if not answer.get("secret"):
                    skipped += 1
                    continue
                credentials.append(
                    {
                        "device_id": answer["device_id"],
                        "secret": answer["secret"],
                        "kind": row["kind"],
                        "market": market,
                        "serial": row["serial"],
                    }
                )
        if skipped:
            log.warning("%d devices were registered before; their secrets are not shown again", skipped)
        return credentials
    finally:
        if own_client:
            await http.aclose()


# ---------------------------------------------------------------- running a market


@dataclass
class Endpoints:
    """Where the platform listens. `serial_ports` maps device ids to serial ports (scales on RS-232)."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    coap_host: str = "127.0.0.1"
    coap_port: int = 5683
    api_url: str = "http://127.0.0.1:8000"
    serial_ports: dict[str, str | int] = field(default_factory=dict)  # a path/URL, or an open fd (pty master)
    mqtt_tls: Any = None  # an ssl.SSLContext when the broker runs TLS on 8883
    http_verify: bool | str = True  # httpx `verify`: False for a self-signed test server, or a CA bundle path


@dataclass
class KindSummary:
    devices: int = 0
    online: int = 0
    generated: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    rejected: int = 0
    pending: int = 0
    commands: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class MarketSimulation:
    """Many `SimulatedDevice`s built from credentials, run concurrently, with a live rich table."""

    def __init__(
        self,
        credentials: Iterable[Mapping[str, Any]],
        endpoints: Endpoints | None = None,
        *,
        transports: Mapping[str, str] | None = None,
        intervals: Mapping[str, float] | None = None,
        speed: float = 1.0,
        seed: int | str = 0,
        outbox_path: str | Path | None = None,
        faults: Mapping[str, Sequence[Fault]] | None = None,
        chaos: float = 0.0,
        chaos_window_s: float = 60.0,
        coap_auth: CoapAuth | None = None,
        http_auth: HttpAuth = "bearer",
        console: Console | None = None,
        ack_timeout_s: float = 30.0,
        ota: Mapping[str, OtaBehaviour] | None = None,
        firmware_public_key: str | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints()
        self._public_key = firmware_public_key
        self.transport_of = {**DEFAULT_TRANSPORTS, **(transports or {})}
        self.intervals = {**DEFAULT_INTERVALS, **(intervals or {})}
        self.speed = speed
        self.seed = seed
        self.store = OutboxStore(outbox_path)
        # OSCORE sender sequence numbers are reserved in the outbox file, so reruns never reuse one.
        self.coap_auth: CoapAuth = coap_auth or OscoreAuth(self.store.reserve)
        self.http_auth: HttpAuth = http_auth
        self.console = console or Console(stderr=True)
        self._rng = random.Random(f"{seed}:market")
        self._http: httpx.AsyncClient | None = None
        self._coap_context: Any = None
        self.devices: list[SimulatedDevice] = []
        faults = faults or {}
        for row in credentials:
            kind = DeviceKind(row["kind"]).value
            device_faults = list(faults.get(kind, ())) + list(faults.get("*", ()))
            if chaos and self._rng.random() < chaos:
                device_faults.append(random_fault(self._rng, chaos_window_s))
            device_id = str(row["device_id"])
            self.devices.append(
                SimulatedDevice(
                    kind,
                    device_id,
                    str(row["secret"]),
                    row.get("market"),
                    self._transport(kind, device_id),
                    outbox=self.store.outbox(device_id),
                    interval_s=self.intervals[kind] / speed,
                    faults=device_faults,
                    seed=seed,
                    keepalive_s=int(row.get("keepalive_s") or 60),
                    ack_timeout_s=ack_timeout_s,
                )
            )
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at: float | None = None
        self._online_at_stop: dict[str, bool] | None = None
        self._by_id = {d.device_id: d for d in self.devices}
        behaviours = ota or {}
        for d in self.devices:
            if d.kind == DeviceKind.ESL_BASE_STATION:
                d.relay = self._relay_to_label
            behaviour = behaviours.get(d.kind.value) or behaviours.get("*")
            d.ota = OtaAgent(d, self._signing_key, behaviour)

    async def _signing_key(self) -> str | None:
        """The platform's public image-signing key (devices are provisioned with it; fetched once, here)."""
        if self._public_key is None:
            url = f"{self.endpoints.api_url.rstrip('/')}/api/v1/firmware/signing-key"
            response = await self._shared_http().get(url)
            if response.status_code == 200:
                self._public_key = str(response.json()["public_key"])
        return self._public_key

    def _relay_to_label(self, label_id: str, command: Any) -> bool:
        """A base station's radio: hand the relayed command to the simulated label with that id, if it runs."""
        label = self._by_id.get(label_id)
        if label is None or label.kind != DeviceKind.ESL or not label.running:
            return False
        label.on_command(command)
        return True

    def _transport(self, kind: str, device_id: str) -> Transport:
        e = self.endpoints
        if device_id in e.serial_ports:
            return SerialTransport(e.serial_ports[device_id])
        name = self.transport_of[kind]
        if name == "mqtt":
            return MqttTransport(e.mqtt_host, e.mqtt_port, tls=e.mqtt_tls)
        if name == "coap":
            return CoapTransport(e.coap_host, e.coap_port, auth=self.coap_auth)
        if name == "http":
            return HttpTransport(e.api_url, auth=self.http_auth, client=self._shared_http())
        if name == "loopback":
            return LoopbackTransport()
        raise ValueError(f"unknown transport {name!r} for {kind}")

    def _shared_http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=15, verify=self.endpoints.http_verify)
        return self._http

    # -- running ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        coap = [d.transport for d in self.devices if isinstance(d.transport, CoapTransport)]
        if coap:
            # Credentials are registered per device path prefix, so all CoAP devices share one UDP socket.
            self._coap_context = await aiocoap.Context.create_client_context(
                transports=list(self.coap_auth.transports)
            )
            for transport in coap:
                transport.share_context(self._coap_context)
        self.started_at = loop.time()
        self._tasks = [loop.create_task(d.run(), name=f"device:{d.device_id}") for d in self.devices]

    async def stop(self, drain_s: float = 5.0) -> None:
        """Stop producing, give outboxes `drain_s` to empty, leave gracefully, close the outbox store."""
        # What the table shows as online afterwards: who was connected when the run ended, not after leaving.
        self._online_at_stop = {d.device_id: d.connected for d in self.devices}
        await asyncio.gather(*(d.stop(drain_s=drain_s) for d in self.devices), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._coap_context is not None:
            await self._coap_context.shutdown()
            self._coap_context = None

    def close(self) -> None:
        self.store.close()

    async def run(self, duration_s: float | None, *, progress: bool = True, drain_s: float = 5.0) -> dict[str, Any]:
        """Run every device for `duration_s` (None: until cancelled), then stop; returns `summary()`."""
        await self.start()
        live = Live(self.table(), console=self.console, refresh_per_second=2, transient=False) if progress else None
        try:
            if live is not None:
                live.start()
            loop = asyncio.get_running_loop()
            deadline = None if duration_s is None else loop.time() + duration_s
            while deadline is None or loop.time() < deadline:
                await asyncio.sleep(0.5 if deadline is None else max(0.0, min(0.5, deadline - loop.time())))
                if live is not None:
                    live.update(self.table())
                failed = [t for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
                if failed:
                    raise RuntimeError(f"a device stopped: {failed[0].exception()!r}") from failed[0].exception()
        finally:
            with contextlib.suppress(Exception):
                await self.stop(drain_s)
            if live is not None:
                live.update(self.table())
                live.stop()
                self.console.print()
        return self.summary()

    # -- reporting ---------------------------------------------------------------------------
    def per_kind(self) -> dict[str, KindSummary]:
        out: dict[str, KindSummary] = {}
        for d in self.devices:
            s = out.setdefault(d.kind.value, KindSummary())
            s.devices += 1
            online = d.connected if self._online_at_stop is None else self._online_at_stop.get(d.device_id, False)
            s.online += int(online)
            s.generated += d.stats.generated
            s.sent += d.stats.sent
            s.resent += d.stats.resent
            s.acked += d.stats.acked
            s.rejected += d.stats.rejected
            s.pending += d.pending
            s.commands += d.stats.commands
        return out

    def summary(self) -> dict[str, Any]:
        """`{"kinds": {kind: {devices, online, generated, sent, resent, acked, rejected, pending, commands}},
        "total": {...}}`."""
        kinds = {k: v.as_dict() for k, v in sorted(self.per_kind().items())}
        total = KindSummary()
        for v in self.per_kind().values():
            for key in total.__dict__:
                setattr(total, key, getattr(total, key) + getattr(v, key))
        return {"kinds": kinds, "total": total.as_dict()}

    def table(self) -> Table:
        elapsed = "" if self.started_at is None else f", {asyncio.get_running_loop().time() - self.started_at:.0f} s"
        market = ", ".join(sorted({d.market or "-" for d in self.devices}))
        table = Table(title=f"MarketFleet simulation: {len(self.devices)} devices in {market}{elapsed}", expand=False)
        columns = ["kind", "transport", "devices", "online", "generated", "sent", "resent", "acked", "rejected",
                   "pending", "commands"]  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col in ("kind", "transport") else "right")
        summary = self.summary()
        for kind, s in summary["kinds"].items():
            table.add_row(kind, self.transport_of.get(kind, "?"), *(str(s[c]) for c in columns[2:]))
        t = summary["total"]
        table.add_row("total", "", *(str(t[c]) for c in columns[2:]), style="bold")
        return table


# ---------------------------------------------------------------- the one call the CLI makes


async def simulate(
    api_url: str,
    admin_token: str | None,
    counts: Mapping[str, int],
    duration_s: float | None,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
    coap_host: str = "127.0.0.1",
    coap_port: int = 5683,
    *,
    market: str = "SIM-001",
    credentials: Sequence[Mapping[str, Any]] | None = None,
    credentials_file: str | Path | None = None,
    outbox_path: str | Path | None = None,
    transports: Mapping[str, str] | None = None,
    speed: float = 1.0,
    seed: int | str = 0,
    chaos: float = 0.0,
    faults: Mapping[str, Sequence[Fault]] | None = None,
    http_auth: HttpAuth = "bearer",
    coap_auth: CoapAuth | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Register (unless credentials are given or found in `credentials_file`), run for `duration_s`, report.

    With `credentials_file`, credentials are read from it when it exists, else registered and written to it
    (JSON list), so the next run reuses the same devices and, with `outbox_path`, their seq counters.
    Returns `MarketSimulation.summary()` plus `"credentials_file"` when one was written.
    """
    console = console or Console(stderr=True)
    path = Path(credentials_file) if credentials_file else None
    creds: list[Mapping[str, Any]]
    if credentials is not None:
        creds = list(credentials)
    elif path is not None and path.exists():
        creds = json.loads(path.read_text())
        console.print(f"using {len(creds)} devices from {path}")
    else:
        if not admin_token:
            raise RegistrationError("an admin token is needed to register the simulated devices")
        creds = await register_market_devices(api_url, admin_token, counts, market=market)
        console.print(f"registered {len(creds)} devices in market {market}")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(creds, ensure_ascii=False, indent=1))
            path.chmod(0o600)
    sim = MarketSimulation(
        creds,
        Endpoints(mqtt_host=mqtt_host, mqtt_port=mqtt_port, coap_host=coap_host, coap_port=coap_port, api_url=api_url),
        transports=transports,
        speed=speed,
        seed=seed,
        outbox_path=outbox_path,
        faults=faults,
        chaos=chaos,
        chaos_window_s=duration_s or 60.0,
        http_auth=http_auth,
        coap_auth=coap_auth,
        console=console,
    )
    try:
        summary = await sim.run(duration_s, progress=progress)
    finally:
        sim.close()
    if path is not None:
        summary["credentials_file"] = str(path)
    return summary
