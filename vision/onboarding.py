"""ONVIF onboarding: find cameras with WS-Discovery, then ask each for its identity, profiles and URIs.

    found = await discover(timeout_s=2)                      # multicast 239.255.255.250:3702 on the LAN
    info = await describe_camera("192.0.2.10", 80, "admin", "pw")
    info.serial, info.stream_uri, info.snapshot_uri

Talking ONVIF is onvif-zeep-async's job (SOAP, WS-Security digest, clock-skew handling); WS-Discovery is a
single SOAP-over-UDP Probe, sent here directly. Registering the camera as a device is the caller's (the API or
the CLI, through the fleet registry): this module only reads the camera.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from xml.etree import ElementTree as ET

from pydantic import BaseModel, ConfigDict, Field

from fleet.errors import InvalidRequest
from vision.config import CameraAnalytics
from vision.models import VisionCamera
from vision.store import VisionStore

WS_DISCOVERY_ADDRESS = ("239.255.255.250", 3702)
_NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
}


class OnboardingError(InvalidRequest):
    """A camera could not be read over ONVIF; the message says which camera and why (auth, unreachable …)."""


@dataclass(frozen=True)
class DiscoveredCamera:
    endpoint: str  # WS-Discovery endpoint reference (urn:uuid:…)
    xaddrs: tuple[str, ...]  # device service URLs
    scopes: tuple[str, ...]

    @property
    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.xaddrs[0])
        return url.hostname or "", url.port or 80

    @property
    def name(self) -> str | None:
        for scope in self.scopes:
            if scope.startswith("onvif://www.onvif.org/name/"):
                return scope.rsplit("/", 1)[-1]
        return None


@dataclass(frozen=True)
class CameraInfo:
    manufacturer: str
    model: str
    firmware_version: str
    serial: str
    host: str
    port: int
    profile: str
    stream_uri: str
    snapshot_uri: str | None
    resolution: tuple[int, int] | None
    profiles: tuple[str, ...] = field(default_factory=tuple)


def _probe_message(message_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{_NS["s"]}" xmlns:wsa="{_NS["wsa"]}" xmlns:d="{_NS["d"]}" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>'
        f"<wsa:MessageID>{message_id}</wsa:MessageID>"
        "<wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action>"
        "</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, message_id: str | None = None) -> list[DiscoveredCamera]:
    """The cameras in one ProbeMatches datagram; [] for anything else (other devices' chatter, garbage)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    if message_id is not None:
        relates = root.findtext("s:Header/wsa:RelatesTo", default="", namespaces=_NS)
        if relates and relates != message_id:
            return []
    found = []
    for match in root.iterfind("s:Body/d:ProbeMatches/d:ProbeMatch", _NS):
        xaddrs = tuple((match.findtext("d:XAddrs", default="", namespaces=_NS) or "").split())
        if not xaddrs:
            continue
        found.append(DiscoveredCamera(
            endpoint=match.findtext("wsa:EndpointReference/wsa:Address", default="", namespaces=_NS) or "",
            xaddrs=xaddrs,
            scopes=tuple((match.findtext("d:Scopes", default="", namespaces=_NS) or "").split()),
        ))
    return found


async def discover(timeout_s: float = 3.0,
                   targets: list[tuple[str, int]] | None = None) -> list[DiscoveredCamera]:
    """Send a WS-Discovery Probe (to the multicast group, or to `targets`) and collect answers for
    `timeout_s`. Each camera appears once, by endpoint."""
    message_id = f"urn:uuid:{uuid.uuid4()}"
    loop = asyncio.get_running_loop()
    answers: dict[str, DiscoveredCamera] = {}

    class Collector(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            for camera in parse_probe_matches(data, message_id):
                answers.setdefault(camera.endpoint or camera.xaddrs[0], camera)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # the market's own LAN segment only
    sock.bind(("0.0.0.0" if targets is None else "127.0.0.1", 0))
    transport, _ = await loop.create_datagram_endpoint(Collector, sock=sock)
    try:
        probe = _probe_message(message_id)
        for target in targets or [WS_DISCOVERY_ADDRESS]:
            transport.sendto(probe, target)
        await asyncio.sleep(timeout_s)
    finally:
        transport.close()
    return list(answers.values())


async def describe_camera(host: str, port: int, username: str, password: str, *,
                          profile: str | None = None, timeout_s: float = 10.0) -> CameraInfo:
    """Device information, media profiles and the stream and snapshot URIs of one camera."""
    try:
        from onvif import ONVIFCamera
        from onvif.exceptions import ONVIFError
        from zeep.exceptions import Fault
    except ModuleNotFoundError as err:
        raise OnboardingError("ONVIF onboarding needs the vision extra: pip install 'marketfleet[vision]'") from err

    import onvif

    wsdl_dir = str(Path(onvif.__file__).parent / "wsdl")
    camera = ONVIFCamera(host, port, username, password, wsdl_dir, no_cache=True)
    where = f"camera at {host}:{port}"
    try:
        async with asyncio.timeout(timeout_s):
            await camera.update_xaddrs()
            device = await camera.create_devicemgmt_service()
            info = await device.GetDeviceInformation()
            media = await camera.create_media_service()
            profiles = await media.GetProfiles()
            if not profiles:
                raise OnboardingError(f"{where} reports no media profiles")
            tokens = [p.token for p in profiles]
            chosen = next((p for p in profiles if p.token == profile), None) if profile else profiles[0]
            if chosen is None:
                raise OnboardingError(f"{where} has no profile {profile!r}; it has {', '.join(tokens)}")
            stream = await media.GetStreamUri({
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                "ProfileToken": chosen.token,
            })
            snapshot_uri = await camera.get_snapshot_uri(chosen.token)
    except Fault as err:
        raise OnboardingError(f"{where} refused: {_fault_text(err)}") from err
    except ONVIFError as err:
        raise OnboardingError(f"{where}: {err}") from err
    except TimeoutError as err:
        raise OnboardingError(f"{where} did not answer within {timeout_s:.0f} s") from err
    except (OSError, ConnectionError) as err:
        raise OnboardingError(f"{where} unreachable: {err}") from err
    except (ValueError, IndexError, LookupError) as err:
        # Unusable address or credentials (control characters have no place in XML), or an answer that is not
        # ONVIF: the request cannot succeed as given, so it is the caller's to fix, not a server error.
        raise OnboardingError(f"{where}: cannot talk ONVIF with these settings ({type(err).__name__}: {err})"[:300]) \
            from err
    finally:
        with contextlib.suppress(Exception):
            await camera.close()
    serial = str(info.SerialNumber or "").strip()
    if not serial:
        raise OnboardingError(f"{where} reports no serial number; the serial is the device's identity")
    return CameraInfo(
        manufacturer=str(info.Manufacturer or ""), model=str(info.Model or ""),
        firmware_version=str(info.FirmwareVersion or ""), serial=serial, host=host, port=port,
        profile=str(chosen.token), stream_uri=str(stream.Uri), snapshot_uri=snapshot_uri,
        resolution=_resolution(chosen), profiles=tuple(str(t) for t in tokens),
    )


def _resolution(profile: Any) -> tuple[int, int] | None:
    try:
        res = profile.VideoEncoderConfiguration.Resolution
        return int(res.Width), int(res.Height)
    except (AttributeError, TypeError, ValueError):
        return None


def _fault_text(err: Any) -> str:
    message = str(getattr(err, "message", "") or err)
    if "NotAuthorized" in message or "not Authorized" in message:
        return "wrong user name or password (ONVIF NotAuthorized)"
    return message


_HOST = r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9a-fA-F:]+)$"


class OnboardRequest(BaseModel):
    """Onboard one camera by its ONVIF address (`POST /api/v1/vision/cameras`, `marketfleet vision onboard`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255, pattern=_HOST, description="DNS name or IP address")
    port: int = Field(default=80, ge=1, le=65535)
    username: str = Field(default="admin", max_length=100)
    password: str = Field(default="", max_length=200)
    profile: str | None = Field(default=None, max_length=64)
    vendor: str = Field(min_length=1, max_length=32, description="vendor code the camera is registered under")
    market: str | None = Field(default=None, max_length=32)
    name: str = Field(default="", max_length=200)
    analytics: CameraAnalytics = Field(default_factory=CameraAnalytics, description="lines, zones and rules")


# (camera info, request) → device id; raises when the registry refuses (unknown vendor or market …)
Register = Callable[[CameraInfo, OnboardRequest], Awaitable[str]]


async def onboard(request: OnboardRequest, register: Register, store: VisionStore) -> VisionCamera:
    """Read the camera over ONVIF, register it as a `camera` device (idempotent by serial), remember its
    stream for the worker. The analytics configuration is validated before anything is written."""
    analytics = request.analytics
    info = await describe_camera(request.host, request.port, request.username, request.password,
                                 profile=request.profile)
    device_id = await register(info, request)
    return await store.save_camera(
        device_id, market=request.market, name=request.name or f"{info.manufacturer} {info.model}".strip(),
        manufacturer=info.manufacturer, model=info.model, onvif_host=info.host, onvif_port=info.port,
        profile=info.profile, stream_uri=info.stream_uri, snapshot_uri=info.snapshot_uri,
        analytics=analytics.model_dump(mode="json"),
    )


def registry_registrar(registry: Any) -> Register:
    """A `Register` that writes through the fleet registry (the API and the CLI run next to it)."""

    async def register(info: CameraInfo, request: OnboardRequest) -> str:
        from fleet.models import Vendor
        from fleet.schemas import DeviceCreate

        vendor = await Vendor.get_or_none(code=request.vendor)
        if vendor is None:
            raise InvalidRequest(f"vendor: no vendor {request.vendor!r}; create it first")
        try:
            row = DeviceCreate(
                serial=info.serial, kind="camera", market=request.market, name=request.name or info.model,
                firmware_version=info.firmware_version[:64],
                metadata={"manufacturer": info.manufacturer, "model": info.model, "stream_uri": info.stream_uri,
                          "snapshot_uri": info.snapshot_uri, "onvif": f"{info.host}:{info.port}"},
            )
        except ValueError as err:
            raise InvalidRequest(f"camera serial {info.serial!r} cannot be a device serial: {err}") from err
        result = await registry.register_devices(vendor, [row])
        outcome = result.rows[0]
        if outcome.status == "error" or outcome.device_id is None:
            raise InvalidRequest(f"camera {info.serial}: {outcome.error}")
        return str(outcome.device_id)

    return register
