"""A simulated ONVIF IP camera: WS-Discovery, enough ONVIF SOAP to onboard it, a JPEG snapshot, and the
video of a synthetic scene (vision/scenes.py) as MJPEG over HTTP and as RTP/JPEG over RTSP (vision/rtsp.py).

    async with CameraSimulator(scene, serial="CAM0001", password="secret") as cam:
        cam.device_url    # http://127.0.0.1:PORT/onvif/device_service
        cam.mjpeg_url     # what GetStreamUri answers (stream="rtsp": cam.rtsp_url)
        cam.rtsp_url      # rtsp://127.0.0.1:PORT/main
        cam.discovery_port  # UDP port answering WS-Discovery Probe messages (unicast; tests never multicast)

SOAP operations answered: device service GetSystemDateAndTime, GetServices, GetCapabilities,
GetDeviceInformation; media service GetProfiles, GetStreamUri, GetSnapshotUri. Requests other than
GetSystemDateAndTime must carry a WS-Security UsernameToken (digest or text) with the camera's password,
as real cameras ask; otherwise a `ter:NotAuthorized` fault comes back.

Faults for tests: `drop_streams()` cuts every open MJPEG and RTSP connection (the worker must reconnect),
`garbage_frames = n` sends the next n stream parts as bytes that are not a JPEG, `stop_streaming()` refuses
new stream connections until `resume_streaming()`.

The scene clock advances one frame interval per produced frame, so a scene plays the same whatever the load;
with `hold_until_streamed` it starts when the first stream client connects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import cv2
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from vision.rtsp import RtspServer
from vision.scenes import Scene

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
}
DEVICE_NS = "http://www.onvif.org/ver10/device/wsdl"
MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
BOUNDARY = "mfframe"


def _envelope(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tt="http://www.onvif.org/ver10/schema" '
        f'xmlns:tds="{DEVICE_NS}" xmlns:trt="{MEDIA_NS}" '
        'xmlns:ter="http://www.onvif.org/ver10/error">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def _fault(subcode: str, reason: str) -> str:
    return _envelope(
        "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>"
        f"{subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en\">{reason}</s:Text>"
        "</s:Reason></s:Fault>"
    )


class CameraSimulator:
    """One simulated camera on 127.0.0.1 (HTTP on a free port, WS-Discovery on a free UDP port)."""

    def __init__(self, scene: Scene, *, serial: str = "CAM0001", username: str = "admin",
                 password: str = "admin", fps: float = 10.0, manufacturer: str = "MarketFleet",
                 model: str = "SimCam-1", name: str | None = None, host: str = "127.0.0.1",
                 jpeg_quality: int = 85, hold_until_streamed: bool = False,
                 stream: str = "mjpeg") -> None:
        self.scene, self.serial, self.username, self.password = scene, serial, username, password
        self.fps, self.manufacturer, self.model, self.host = fps, manufacturer, model, host
        self.name = name or f"sim-{serial}"
        self.jpeg_quality = jpeg_quality
        self.hold_until_streamed = hold_until_streamed
        self.stream = stream  # what GetStreamUri answers: "mjpeg" (HTTP) or "rtsp" (RTP/JPEG over RTSP)
        self.endpoint = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, serial)}"
        self.port = 0
        self.discovery_port = 0
        self.frame_index = 0
        self.frames_served = 0
        self.stream_connections = 0
        self.garbage_frames = 0
        self._streaming = True
        self._latest: bytes = b""
        self._new_frame = asyncio.Condition()
        self._generation = 0  # bumped by drop_streams(): open streams end when they see a new generation
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._rtsp = RtspServer(self._next_jpeg, fps, host)

    # ------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def device_url(self) -> str:
        return f"{self.base_url}/onvif/device_service"

    @property
    def mjpeg_url(self) -> str:
        return f"{self.base_url}/stream.mjpeg"

    @property
    def snapshot_url(self) -> str:
        return f"{self.base_url}/snapshot.jpg"

    @property
    def rtsp_url(self) -> str:
        return f"rtsp://{self.host}:{self._rtsp.port}/main"

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> CameraSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        self._render_next()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[
            Route("/onvif/device_service", self._device_service, methods=["POST"]),
            Route("/onvif/media_service", self._media_service, methods=["POST"]),
            Route("/snapshot.jpg", self._snapshot, methods=["GET"]),
            Route("/stream.mjpeg", self._mjpeg, methods=["GET"]),
        ])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._tasks.append(asyncio.create_task(self._server.serve(sockets=[sock])))
        self._tasks.append(asyncio.create_task(self._produce()))
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _DiscoveryResponder(self), local_addr=(self.host, 0))
        self.discovery_port = self._udp.get_extra_info("sockname")[1]
        await self._rtsp.start()
        for _ in range(200):
            if self._server.started:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("camera simulator did not start")

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
        await self._rtsp.aclose()
        if self._server is not None:
            self._server.should_exit = True
        self.drop_streams()
        for task in self._tasks:
            if not task.done() and task is not self._tasks[0]:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)

    # ------------------------------------------------------------ faults

    def drop_streams(self) -> None:
        self._generation += 1
        self._rtsp.drop_all()
        asyncio.get_running_loop().create_task(self._notify())

    def stop_streaming(self) -> None:
        self._streaming = False
        self.drop_streams()

    def resume_streaming(self) -> None:
        self._streaming = True

    async def _notify(self) -> None:
        async with self._new_frame:
            self._new_frame.notify_all()

    # ------------------------------------------------------------ frames

    def _render_next(self) -> None:
        frame, _ = self.scene.render(self.frame_index / self.fps)
        ok, jpeg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if ok:
            self._latest = jpeg.tobytes()
        self.frame_index += 1

    def scene_time(self) -> float:
        return self.frame_index / self.fps

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += 1 / self.fps
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.hold_until_streamed and not (self.stream_connections or self._rtsp.sessions):
                continue  # the scene starts playing when the first viewer connects
            self._render_next()
            async with self._new_frame:
                self._new_frame.notify_all()

    async def _next_jpeg(self, _index: int) -> bytes | None:
        async with self._new_frame:
            await self._new_frame.wait()
        return self._latest

    async def _snapshot(self, _request: Request) -> Response:
        return Response(self._latest, media_type="image/jpeg")

    async def _mjpeg(self, _request: Request) -> Response:
        if not self._streaming:
            return Response("stream unavailable", status_code=503)
        self.stream_connections += 1
        generation = self._generation

        async def parts() -> AsyncIterator[bytes]:
            while generation == self._generation:
                async with self._new_frame:
                    await self._new_frame.wait()
                if generation != self._generation:
                    return
                body = self._latest
                if self.garbage_frames > 0:
                    self.garbage_frames -= 1
                    body = b"\x00not a jpeg\xff" * 20
                self.frames_served += 1
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
                       .encode() + body + b"\r\n")

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    # ------------------------------------------------------------ SOAP

    async def _device_service(self, request: Request) -> Response:
        return await self._soap(request, self._device_operation)

    async def _media_service(self, request: Request) -> Response:
        return await self._soap(request, self._media_operation)

    async def _soap(self, request: Request, handler: Any) -> Response:
        try:
            root = ET.fromstring(await request.body())
            body = root.find("s:Body", NS)
            operation = body[0] if body is not None and len(body) else None
        except ET.ParseError:
            return _soap_response(_fault("ter:WellFormed", "request is not well-formed XML"), 400)
        if operation is None:
            return _soap_response(_fault("ter:InvalidArgVal", "empty SOAP body"), 400)
        name = operation.tag.rsplit("}", 1)[-1]
        if name != "GetSystemDateAndTime" and not self._authorised(root):
            return _soap_response(_fault("ter:NotAuthorized", "Sender not Authorized"), 400)
        answer = handler(name, operation)
        if answer is None:
            return _soap_response(_fault("ter:ActionNotSupported", f"{name} is not supported"), 400)
        return _soap_response(_envelope(answer), 200)

    def _authorised(self, root: ET.Element) -> bool:
        token = root.find("s:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            return False
        user = token.findtext("wsse:Username", default="", namespaces=NS)
        password_el = token.find("wsse:Password", NS)
        if user != self.username or password_el is None:
            return False
        given = (password_el.text or "").strip()
        if "Digest" not in password_el.get("Type", ""):
            return given == self.password
        nonce = base64.b64decode(token.findtext("wsse:Nonce", default="", namespaces=NS) or "")
        created = token.findtext("wsu:Created", default="", namespaces=NS) or ""
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest())
        return given == expected.decode()

    def _device_operation(self, name: str, _operation: ET.Element) -> str | None:
        if name == "GetSystemDateAndTime":
            now = datetime.now(UTC)
            return (
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
                "<tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
                f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
                f"<tt:Second>{now.second}</tt:Second></tt:Time>"
                f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
                f"<tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
                "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
            )
        if name == "GetServices":
            services = "".join(
                f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.base_url}/onvif/{path}"
                "</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
                "</tds:Service>"
                for ns, path in ((DEVICE_NS, "device_service"), (MEDIA_NS, "media_service"))
            )
            return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"
        if name == "GetCapabilities":
            return (
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{self.device_url}</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{self.base_url}/onvif/media_service</tt:XAddr>"
                "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
                "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        if name == "GetDeviceInformation":
            return (
                "<tds:GetDeviceInformationResponse>"
                f"<tds:Manufacturer>{self.manufacturer}</tds:Manufacturer><tds:Model>{self.model}</tds:Model>"
                "<tds:FirmwareVersion>1.0.0</tds:FirmwareVersion>"
                f"<tds:SerialNumber>{self.serial}</tds:SerialNumber><tds:HardwareId>sim</tds:HardwareId>"
                "</tds:GetDeviceInformationResponse>"
            )
        return None

    def _media_operation(self, name: str, operation: ET.Element) -> str | None:
        width, height = self.scene.width, self.scene.height
        if name == "GetProfiles":
            return (
                '<trt:GetProfilesResponse><trt:Profiles token="main" fixed="true"><tt:Name>main</tt:Name>'
                '<tt:VideoEncoderConfiguration token="enc0"><tt:Name>enc0</tt:Name><tt:UseCount>1</tt:UseCount>'
                "<tt:Encoding>JPEG</tt:Encoding>"
                f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height></tt:Resolution>"
                "<tt:Quality>5</tt:Quality>"
                f"<tt:RateControl><tt:FrameRateLimit>{int(self.fps)}</tt:FrameRateLimit>"
                "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>"
                "</tt:RateControl><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
                "</tt:VideoEncoderConfiguration></trt:Profiles></trt:GetProfilesResponse>"
            )
        token = operation.findtext(f"{{{MEDIA_NS}}}ProfileToken", default="")
        if name in ("GetStreamUri", "GetSnapshotUri"):
            if token != "main":
                return None
            stream = self.rtsp_url if self.stream == "rtsp" else self.mjpeg_url
            uri = stream if name == "GetStreamUri" else self.snapshot_url
            return (
                f"<trt:{name}Response><trt:MediaUri><tt:Uri>{uri}</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
                f"</trt:MediaUri></trt:{name}Response>"
            )
        return None

    # ------------------------------------------------------------ WS-Discovery

    def probe_match(self, relates_to: str) -> bytes:
        scopes = " ".join((
            "onvif://www.onvif.org/type/video_encoder", "onvif://www.onvif.org/Profile/Streaming",
            f"onvif://www.onvif.org/name/{self.name}", f"onvif://www.onvif.org/hardware/{self.model}",
        ))
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:wsa="{NS["wsa"]}" xmlns:d="{NS["d"]}" '
            'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>'
            f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID><wsa:RelatesTo>{relates_to}</wsa:RelatesTo>"
            "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
            "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>"
            "</s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>"
            f"<wsa:EndpointReference><wsa:Address>{self.endpoint}</wsa:Address></wsa:EndpointReference>"
            f"<d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>{scopes}</d:Scopes>"
            f"<d:XAddrs>{self.device_url}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
            "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
        ).encode()


def _soap_response(xml: str, status: int) -> Response:
    return Response(xml, status_code=status, media_type="application/soap+xml; charset=utf-8")


_PROBE = re.compile(rb"<(?:\w+:)?Probe[\s>/]")


class _DiscoveryResponder(asyncio.DatagramProtocol):
    def __init__(self, camera: CameraSimulator) -> None:
        self.camera = camera
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not _PROBE.search(data) or self.transport is None:
            return
        try:
            message_id = ET.fromstring(data).findtext("s:Header/wsa:MessageID", default="", namespaces=NS)
        except ET.ParseError:
            return
        self.transport.sendto(self.camera.probe_match(message_id or ""), addr)


def frame_as_array(jpeg: bytes) -> np.ndarray | None:
    """Decode a JPEG to an RGB array (None when it is not an image)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else image[..., ::-1]
