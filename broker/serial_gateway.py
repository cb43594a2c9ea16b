"""`SerialGateway`: RS-232 scales → `IngestPipeline`, one line per frame, ACK/NAK back (docs/serial.md).

Scale → gateway (one message per frame, ASCII, CR LF terminated):

    MF1|<device_id>|<channel>|<seq>|<base64 of the message, JSON or CBOR>|<CRC-16/CCITT-FALSE, 4 hex digits>

Gateway → scale:

    ACK|<seq>|<high>|<crc>            stored now or before: drop it from the outbox
    NAK|<seq>|<reason>|<crc>          crc, frame, busy: send again; anything else: drop it (dead-lettered)

The CRC covers every byte before it, up to and including the `|` in front of it. `<seq>` must equal the
message's own `seq`; it is repeated in clear so that a NAK can name the frame even when the body is unreadable
(`-` when not even the seq could be read). A port only accepts the device ids configured for it (the scales
wired to it); each port's blocking I/O runs in its own thread, frames are processed in order per port, and
garbage (noise, wrong baud rate, CRC errors) is NAKed and dead-lettered (rate-limited) without ever stopping
the gateway. A port that disappears (USB adapter unplugged) is reopened every `reopen_s`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import serial

from broker.codec import MessageError, UplinkError, decode_uplink
from broker.ingest import IngestPipeline
from broker.uplink import Ack, Uplink

__all__ = [
    "FRAME_VERSION",
    "RETRY_REASONS",
    "Frame",
    "FrameError",
    "Reply",
    "SerialGateway",
    "SerialPortConfig",
    "crc16_ccitt",
    "encode_frame",
    "encode_reply",
    "parse_frame",
    "parse_reply",
]

log = logging.getLogger(__name__)

FRAME_VERSION: Final = "MF1"
#: NAK reasons after which the scale sends the same frame again; for every other reason it drops the frame.
RETRY_REASONS: Final = frozenset({"crc", "frame", "busy"})
_DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_SEQ: Final = re.compile(r"^[0-9]{1,19}$")
_CRC: Final = re.compile(rb"^[0-9A-F]{4}$")
_DEAD_LETTER_BYTES: Final = 1024


# ---------------------------------------------------------------- CRC and framing (shared with scale firmware)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE: Final = _crc_table()


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor ("123456789" → 0x29B1)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _seal(head: bytes) -> bytes:
    return head + f"{crc16_ccitt(head):04X}".encode() + b"\r\n"


def encode_frame(device_id: str, channel: str, seq: int, body: bytes) -> bytes:
    """One scale → gateway frame (what scale firmware, simulators and tests send)."""
    head = f"{FRAME_VERSION}|{device_id}|{channel}|{seq}|".encode() + base64.b64encode(body) + b"|"
    return _seal(head)


def encode_reply(kind: Literal["ACK", "NAK"], seq: int | None, value: str | int) -> bytes:
    """`ACK|seq|high|crc` or `NAK|seq|reason|crc`, CR LF terminated."""
    return _seal(f"{kind}|{'-' if seq is None else seq}|{value}|".encode())


@dataclass(frozen=True, slots=True)
class Reply:
    kind: Literal["ACK", "NAK"]
    seq: int | None
    high: int | None = None  # ACK
    reason: str | None = None  # NAK

    @property
    def retry(self) -> bool:
        """True when the scale should send the frame again (NAK crc/frame/busy)."""
        return self.kind == "NAK" and self.reason in RETRY_REASONS


def parse_reply(line: bytes) -> Reply | None:
    """A gateway reply line (for scale firmware and tests); None when it is garbled (then wait and resend)."""
    line = line.rstrip(b"\r\n")
    head, sep, crc = line.rpartition(b"|")
    if not sep or not _CRC.match(crc):
        return None
    try:
        if int(crc, 16) != crc16_ccitt(head + b"|"):
            return None
        kind, seq_text, value = head.decode("ascii").split("|")
    except ValueError:
        return None
    seq = int(seq_text) if seq_text.isdigit() else None
    if kind == "ACK" and value.lstrip("-").isdigit():
        return Reply("ACK", seq, high=int(value))
    if kind == "NAK":
        return Reply("NAK", seq, reason=value)
    return None


# ---------------------------------------------------------------- configuration and counters


@dataclass(frozen=True)
class SerialPortConfig:
    """One RS-232 port and the scales wired to it.

    `url` is anything pyserial opens: `/dev/ttyUSB0`, `/dev/serial/by-id/…`, `rfc2217://host:port` for a
    terminal server. Only frames naming one of `devices` are accepted on this port.
    """

    url: str
    devices: frozenset[str]
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", frozenset(self.devices))
        if not self.name:
            object.__setattr__(self, "name", self.url)


@dataclass(slots=True)
class PortStats:
    frames: int = 0
    acked: int = 0
    naked: Counter[str] = field(default_factory=Counter)  # by reason
    dead_letters: int = 0
    dead_letters_suppressed: int = 0  # garbage beyond the per-minute dead-letter budget
    opens: int = 0
    errors: int = 0  # I/O errors (port vanished …)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames, "acked": self.acked, "naked": dict(self.naked),
            "dead_letters": self.dead_letters, "dead_letters_suppressed": self.dead_letters_suppressed,
            "opens": self.opens, "errors": self.errors,
        }


class FrameError(ValueError):
    """A line that is not an acceptable frame; `reason` is the NAK reason, `seq` the clear seq if readable."""

    def __init__(self, reason: str, detail: str, seq: int | None = None, device_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.seq = seq
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class Frame:
    device_id: str
    channel: str
    seq: int
    body: bytes


# ---------------------------------------------------------------- one port


class _Port:
    """A reader thread (blocking pyserial) feeding lines to an asyncio task that answers them in order."""

    def __init__(self, gateway: SerialGateway, config: SerialPortConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.stats = PortStats()
        self.lines: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=gateway.max_queued_lines)
        self.loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._serial: serial.SerialBase | None = None
        self._serial_lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, name=f"serial-{config.name}", daemon=True)
        self._task: asyncio.Task[None] | None = None
        self._dead_budget = (time.monotonic(), 0)
        self.opened = asyncio.Event()  # set (from the thread) once the port has been opened

    def start(self) -> None:
        self._thread.start()
        self._task = asyncio.create_task(self._run(), name=f"serial-gateway-{self.config.name}")

    async def aclose(self) -> None:
        self._stop.set()
        with self._serial_lock:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.cancel_read()
        await asyncio.to_thread(self._thread.join, 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._serial_lock:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.close()
                self._serial = None

    # ---------------------------------------------------------------- the thread

    def _open(self) -> serial.SerialBase:
        cfg = self.config
        port = serial.serial_for_url(
            cfg.url, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits,
            timeout=self.gateway.read_timeout_s, write_timeout=self.gateway.write_timeout_s, do_not_open=True,
        )
        port.open()
        return port

    def _reader(self) -> None:
        max_line = self.gateway.max_line_bytes
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as err:
                self.stats.errors += 1
                log.warning("serial port %s: cannot open (%s); retrying in %.0f s", self.config.name, err,
                            self.gateway.reopen_s)
                self._stop.wait(self.gateway.reopen_s)
                continue
            with self._serial_lock:
                self._serial = port
            self.stats.opens += 1
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.opened.set)
            buffer = bytearray()
            discarding = False
            try:
                while not self._stop.is_set():
                    chunk = port.read(max(1, min(port.in_waiting, 4096)))
                    if not chunk:
                        continue
                    buffer += chunk
                    while True:
                        end = buffer.find(b"\n")
                        if end < 0:
                            break
                        line = bytes(buffer[: end + 1])
                        del buffer[: end + 1]
                        if discarding:
                            discarding = False  # the rest of an overlong line
                            continue
                        self._deliver(line)
                    if len(buffer) > max_line:
                        self._deliver(b"\x00overlong")
                        buffer.clear()
                        discarding = True
            except (serial.SerialException, OSError, TypeError) as err:
                # TypeError: pyserial's read() on a port closed under it.
                if not self._stop.is_set():
                    self.stats.errors += 1
                    log.warning("serial port %s: %s; reopening", self.config.name, err)
                    self._stop.wait(self.gateway.reopen_s)
            finally:
                with self._serial_lock:
                    self._serial = None
                with contextlib.suppress(Exception):
                    port.close()

    def _deliver(self, line: bytes) -> None:
        def put() -> None:
            try:
                self.lines.put_nowait(line)
            except asyncio.QueueFull:
                self.stats.naked["busy"] += 1  # no answer: the scale times out and resends

        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(put)

    def _write(self, data: bytes) -> None:
        with self._serial_lock:
            port = self._serial
            if port is None:
                return
            try:
                port.write(data)
                port.flush()
            except (serial.SerialException, OSError, TypeError) as err:  # TypeError: closed under it (pyserial)
                self.stats.errors += 1
                log.warning("serial port %s: write failed: %s", self.config.name, err)

    # ---------------------------------------------------------------- the task

    async def _run(self) -> None:
        while True:
            line = await self.lines.get()
            if line is None:
                return
            try:
                reply = await self._handle(line)
            except Exception:
                log.exception("serial port %s: unexpected error handling a frame", self.config.name)
                reply = encode_reply("NAK", None, "busy")
            if reply:
                try:
                    await asyncio.to_thread(self._write, reply)
                except Exception:  # e.g. pyserial failing oddly on a port closed under it: keep answering
                    self.stats.errors += 1
                    log.exception("serial port %s: could not write a reply", self.config.name)

    async def _handle(self, line: bytes) -> bytes:
        stripped = line.rstrip(b"\r\n")
        if not stripped.strip():
            return b""  # blank line (a scale's keep-alive): no answer
        self.stats.frames += 1
        try:
            frame = self._parse(stripped)
        except FrameError as err:
            self.stats.naked[err.reason] += 1
            await self._dead_letter(err.device_id, err.reason, err.detail, stripped)
            return encode_reply("NAK", err.seq, err.reason)
        ack = await self.gateway.pipeline.submit(Uplink(
            transport="serial", device_id=frame.device_id, channel=frame.channel, body=frame.body,
            topic=f"serial:{self.config.name}",
        ))
        if ack.seqs and self.gateway.on_seen is not None:
            try:
                self.gateway.on_seen(frame.device_id)
            except Exception:
                log.exception("presence callback failed for %s", frame.device_id)
        return self._answer(frame.seq, ack)

    def _answer(self, seq: int, ack: Ack) -> bytes:
        if seq in ack.seqs:
            self.stats.acked += 1
            return encode_reply("ACK", seq, ack.high)
        for rejection in ack.rejected:
            if rejection.seq in (seq, None):
                self.stats.naked[rejection.reason] += 1
                return encode_reply("NAK", seq, rejection.reason)  # dead-lettered by the pipeline
        self.stats.naked["busy"] += 1
        return encode_reply("NAK", seq, "busy")  # not durable (store down): send again later

    def _parse(self, line: bytes) -> Frame:
        return parse_frame(line, devices=self.config.devices, port_name=self.config.name,
                           max_line_bytes=self.gateway.max_line_bytes,
                           max_payload_bytes=self.gateway.pipeline.max_payload_bytes)

    async def _dead_letter(self, device_id: str | None, reason: str, detail: str, raw: bytes) -> None:
        if not self.gateway.write_db:
            return
        started, used = self._dead_budget
        now = time.monotonic()
        if now - started >= 60:
            started, used = now, 0
        if used >= self.gateway.dead_letters_per_minute:
            self.stats.dead_letters_suppressed += 1
            self._dead_budget = (started, used)
            return
        self._dead_budget = (started, used + 1)
        from broker.models import DeadLetter

        try:
            await DeadLetter.create(
                transport="serial", device_id=device_id, topic=f"serial:{self.config.name}"[:255],
                reason="malformed" if reason in ("crc", "frame") else reason,
                detail=f"{reason}: {detail}", payload=raw[:_DEAD_LETTER_BYTES],
            )
            self.stats.dead_letters += 1
        except Exception:
            log.exception("serial port %s: could not write a dead letter", self.config.name)


def parse_frame(
    line: bytes, *, devices: frozenset[str], port_name: str, max_line_bytes: int, max_payload_bytes: int
) -> Frame:
    """One received line (CR LF stripped) as a frame for a port wired to `devices`; `FrameError` (with the NAK
    reason) for anything else. Pure: every byte string either parses or raises `FrameError`."""
    if line == b"\x00overlong":
        raise FrameError("frame", f"line longer than {max_line_bytes} bytes")
    head, sep, crc_text = line.rpartition(b"|")
    parts = head.split(b"|") if sep else []
    seq = int(parts[3]) if len(parts) == 5 and _SEQ.match(parts[3].decode("latin-1")) else None
    if not sep or len(crc_text) != 4:
        raise FrameError("frame", "not a frame: expected MF1|device|channel|seq|base64|CRC", seq)
    if not _CRC.match(crc_text):  # exactly: a bit flip turning 'A' into 'a' must not pass
        raise FrameError("frame", f"CRC field {crc_text[:8]!r} is not 4 upper-case hex digits", seq)
    crc = int(crc_text, 16)
    actual = crc16_ccitt(head + b"|")
    if crc != actual:
        raise FrameError("crc", f"frame CRC mismatch: frame says {crc:04X}, bytes give {actual:04X}", seq,
                          _maybe_device(parts))
    if len(parts) != 5:
        raise FrameError("frame", f"frame has {len(parts) + 1} fields; expected 6", seq)
    version, device_raw, channel_raw, _seq_raw, body_b64 = parts
    try:
        device_id = device_raw.decode("ascii")
        channel = channel_raw.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("frame", "device id and channel must be ASCII", seq) from None
    if version != FRAME_VERSION.encode():
        raise FrameError("frame", f"unsupported frame version {version[:8]!r}; expected {FRAME_VERSION}",
                          seq, device_id)
    if seq is None:
        raise FrameError("malformed", "seq field must be an integer", None, device_id)
    if not _DEVICE_ID.match(device_id) or device_id not in devices:
        raise FrameError("unknown_device", f"device {device_id[:64]!r} is not configured on port "
                          f"{port_name}", seq, device_id[:64])
    try:
        body = base64.b64decode(body_b64, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("malformed", "body is not base64", seq, device_id) from None
    if len(body) > max_payload_bytes:
        raise FrameError("oversized", f"message of {len(body)} bytes; at most "
                          f"{max_payload_bytes}", seq, device_id)
    _check_body_seq(body, seq, device_id)
    return Frame(device_id, channel, seq, body)


def _maybe_device(parts: list[bytes]) -> str | None:
    if len(parts) < 2:
        return None
    text = parts[1].decode("ascii", "replace")[:64]
    return text if _DEVICE_ID.match(text) else None


def _check_body_seq(body: bytes, seq: int, device_id: str) -> None:
    """The frame's clear seq must be the message's own (else an ACK would name the wrong message)."""
    try:
        messages = decode_uplink(body)
    except UplinkError:
        return  # the pipeline rejects it as malformed, under this seq
    if len(messages) != 1:
        raise FrameError("malformed", f"one message per frame; this one carries {len(messages)}", seq, device_id)
    inner = messages[0].seq
    if isinstance(messages[0], MessageError) and inner is None:
        return
    if inner != seq:
        raise FrameError("malformed", f"frame seq {seq} differs from the message's seq {inner}", seq, device_id)


# ---------------------------------------------------------------- the gateway


class SerialGateway:
    """Reads every configured port, submits each frame to the pipeline and answers ACK/NAK on the same port."""

    def __init__(
        self,
        ports: Iterable[SerialPortConfig],
        pipeline: IngestPipeline,
        *,
        write_db: bool = True,
        max_line_bytes: int | None = None,
        max_queued_lines: int = 1000,
        dead_letters_per_minute: int = 60,
        reopen_s: float = 5.0,
        read_timeout_s: float = 0.2,
        write_timeout_s: float = 2.0,
    ) -> None:
        self.configs: Sequence[SerialPortConfig] = list(ports)
        names = [c.name for c in self.configs]
        if len(set(names)) != len(names):
            raise ValueError("serial port names must be unique")
        self.pipeline = pipeline
        self.write_db = write_db
        # base64 grows a body by 4/3; 200 bytes for the other fields.
        self.max_line_bytes = max_line_bytes or (pipeline.max_payload_bytes * 4 // 3 + 200)
        self.max_queued_lines = max_queued_lines
        self.dead_letters_per_minute = dead_letters_per_minute
        self.reopen_s = reopen_s
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.ports: dict[str, _Port] = {}
        # Called with the device id for every frame the pipeline accepted (presence: last seen, online).
        self.on_seen: Callable[[str], None] | None = None

    async def start(self) -> None:
        if self.ports:
            return
        for config in self.configs:
            port = _Port(self, config)
            self.ports[config.name] = port
            port.start()

    async def wait_open(self) -> None:
        """Wait until every port has been opened once (bound it with `asyncio.timeout`)."""
        for port in self.ports.values():
            await port.opened.wait()

    async def aclose(self) -> None:
        ports, self.ports = self.ports, {}
        for port in ports.values():
            await port.aclose()

    async def __aenter__(self) -> SerialGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: port.stats.as_dict() for name, port in self.ports.items()}
