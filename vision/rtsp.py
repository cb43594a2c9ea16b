"""A small RTSP server for the camera simulator: the same frames as its MJPEG stream, as RTP/JPEG (RFC 2435)
interleaved on the RTSP TCP connection (RFC 2326 §10.12), which is how most cameras are read over unreliable
market networks. It answers OPTIONS, DESCRIBE, SETUP (TCP interleaved only; UDP gets 461), PLAY, TEARDOWN and
GET_PARAMETER (keep-alive) — enough for FFmpeg, and so for OpenCV's `VideoCapture("rtsp://…")`.

RTP/JPEG carries only the entropy-coded scan: the receiver rebuilds the JPEG headers from the type (4:2:0),
the size and the quantisation tables sent in-band (Q = 255), assuming the standard Huffman tables, which is
what libjpeg (and so OpenCV's encoder) writes by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

_MAX_PAYLOAD = 1400


def reader_gone(writer: asyncio.StreamWriter) -> bool:
    transport = writer.transport
    return transport is None or transport.is_closing()


@dataclass(frozen=True)
class JpegParts:
    width: int
    height: int
    tables: bytes  # luma and chroma quantisation tables, 64 bytes each, zigzag order as in DQT
    scan: bytes  # entropy-coded data between SOS and EOI


def split_jpeg(jpeg: bytes) -> JpegParts | None:
    """The pieces RFC 2435 sends, or None for a JPEG it cannot carry (progressive, restart markers, 16-bit
    tables, sizes not multiples of 8 or above 2040)."""
    if jpeg[:2] != b"\xff\xd8":
        return None
    tables: dict[int, bytes] = {}
    width = height = 0
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            return None
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        segment = jpeg[i + 4:i + 2 + length]
        if marker == 0xDB:  # DQT: one or more tables
            j = 0
            while j < len(segment):
                precision, table_id = segment[j] >> 4, segment[j] & 0x0F
                if precision != 0:
                    return None
                tables[table_id] = segment[j + 1:j + 65]
                j += 65
        elif marker == 0xC0:  # baseline SOF
            height, width = struct.unpack(">HH", segment[1:5])
        elif marker in (0xC2, 0xDD):  # progressive, restart interval
            return None
        elif marker == 0xDA:  # SOS: the scan runs to EOI
            start = i + 2 + length
            end = jpeg.rfind(b"\xff\xd9")
            if 0 in tables and 1 in tables and width and height and width % 8 == 0 and height % 8 == 0 \
                    and width <= 2040 and height <= 2040:
                return JpegParts(width, height, tables[0] + tables[1], jpeg[start:end])
            return None
        i += 2 + length
    return None


def rtp_jpeg_packets(parts: JpegParts, seq: int, timestamp: int, ssrc: int) -> list[bytes]:
    """RTP packets (type 1 = 4:2:0, Q 255 with in-band tables) carrying one frame; the last has the marker."""
    packets = []
    offset = 0
    while offset < len(parts.scan) or offset == 0:
        header = struct.pack(">I", offset)[1:]  # 24-bit fragment offset
        jpeg_header = b"\x00" + header + bytes([1, 255, parts.width // 8, parts.height // 8])
        extra = b"\x00\x00" + struct.pack(">H", len(parts.tables)) + parts.tables if offset == 0 else b""
        room = _MAX_PAYLOAD - len(jpeg_header) - len(extra)
        chunk = parts.scan[offset:offset + room]
        offset += len(chunk)
        last = offset >= len(parts.scan)
        rtp = struct.pack(">BBHII", 0x80, (0x80 if last else 0) | 26, (seq + len(packets)) & 0xFFFF,
                          timestamp & 0xFFFFFFFF, ssrc)
        packets.append(rtp + jpeg_header + extra + chunk)
        if last:
            break
    return packets


class RtspServer:
    """Serves `next_frame()` (awaits the camera's next JPEG) to RTSP clients on 127.0.0.1."""

    def __init__(self, next_frame: Callable[[int], Awaitable[bytes | None]], fps: float,
                 host: str = "127.0.0.1") -> None:
        self.next_frame, self.fps, self.host = next_frame, fps, host
        self.port = 0
        self.sessions = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        streaming: asyncio.Task[None] | None = None
        session = f"{random.getrandbits(32):08X}"
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved RTCP from the client: skip it
                    _, size = struct.unpack(">BH", await reader.readexactly(3))
                    await reader.readexactly(size)
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, url = [*lines[0].split(" "), "", ""][:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                if int(headers.get("content-length", "0") or 0):
                    await reader.readexactly(int(headers["content-length"]))
                cseq = headers.get("cseq", "0")
                if method == "OPTIONS":
                    self._reply(writer, cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
                elif method == "DESCRIBE":
                    sdp = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=MarketFleet simulated camera\r\n"
                           "c=IN IP4 0.0.0.0\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=control:track1\r\n")
                    self._reply(writer, cseq, f"Content-Base: {url.rstrip('/')}/\r\nContent-Type: application/sdp",
                                sdp)
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" not in transport.upper():
                        self._reply(writer, cseq, "", status="461 Unsupported Transport")
                        continue
                    self._reply(writer, cseq, f"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                                              f"Session: {session};timeout=60")
                elif method == "PLAY":
                    self._reply(writer, cseq, f"Session: {session}\r\nRange: npt=0.000-")
                    if streaming is None:
                        self.sessions += 1
                        streaming = asyncio.create_task(self._stream(writer))
                elif method == "TEARDOWN":
                    self._reply(writer, cseq, f"Session: {session}")
                    break
                else:  # GET_PARAMETER keep-alive and anything else harmless
                    self._reply(writer, cseq, f"Session: {session}")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            if streaming is not None:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await streaming
            self._writers.discard(writer)
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, cseq: str, headers: str, body: str = "",
               status: str = "200 OK") -> None:
        extra = f"{headers}\r\n" if headers else ""
        length = f"Content-Length: {len(body.encode())}\r\n" if body else ""
        writer.write(f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}{length}\r\n{body}".encode())

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        seq, ssrc, index = random.getrandbits(16), random.getrandbits(32), 0
        while not writer.is_closing() and not reader_gone(writer):
            jpeg = await self.next_frame(index)
            index += 1
            parts = split_jpeg(jpeg) if jpeg else None
            if parts is None:
                continue
            packets = rtp_jpeg_packets(parts, seq, int(index * 90_000 / self.fps), ssrc)
            seq += len(packets)
            for packet in packets:
                writer.write(b"$\x00" + struct.pack(">H", len(packet)) + packet)
            await writer.drain()
