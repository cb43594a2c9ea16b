"""The shelf-label image wire format, and the label side that decodes it (`LabelScreen`).

The platform renders a label page to the label's resolution and colour depth (retail/render.py) and sends it
as one compact *frame* inside a `show_image` command (`frame`: base64). A frame is:

    magic   4 bytes   b"MFL1"
    flags   u8        bit 0: diff (the planes are XORed with the page's previous image), bit 1: zlib
    planes  u8        1 = black/white, 2 = black/white/red, 3 = black/white/red/yellow
    width   u16       pixels (big-endian, like every field)
    height  u16
    base    8 bytes   the first 8 bytes of the previous image's sha256 (zeros for a full frame)
    sha256  32 bytes  sha256 of the resulting raw planes: what the label reports in its `shown` event
    body    …         the planes, each `height × ceil(width / 8)` bytes, 8 pixels a byte, MSB first

Plane 0 is black, plane 1 red, plane 2 yellow; a pixel with no bit set is white. A diff of a price change
touches a few hundred bytes of mostly-zero planes, which zlib squeezes to tens of bytes: that is what keeps
60,000 updates an hour inside a base station's radio budget.

This module needs nothing but the standard library, so the ESL simulator (and real gateway code) can use it:

    screen = LabelScreen(296, 128, "bwr")
    events = screen.apply(command, now)     # a show_image / show_page / flash_led command as a dict
    events += screen.tick(now)              # timed changes switch here, on the label's own clock
    screen.image.pixel(10, 20)              # "white" | "black" | "red" | "yellow"
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

__all__ = [
    "COLOURS",
    "FrameError",
    "LabelImage",
    "LabelScreen",
    "decode",
    "encode",
    "frame_info",
    "planes_for",
]

MAGIC: Final = b"MFL1"
HEADER: Final = struct.Struct(">4sBBHH8s32s")
FLAG_DIFF: Final = 0x01
FLAG_ZLIB: Final = 0x02
#: colour depth name → the colours a pixel may take, in palette order (index 0 is white)
COLOURS: Final[dict[str, tuple[str, ...]]] = {
    "bw": ("white", "black"),
    "bwr": ("white", "black", "red"),
    "bwry": ("white", "black", "red", "yellow"),
}
_DEPTH_FOR_PLANES: Final = {1: "bw", 2: "bwr", 3: "bwry"}
MAX_PIXELS: Final = 1600 * 1200  # larger than any shelf label; refuses absurd headers before allocating


class FrameError(ValueError):
    """A frame the label cannot show: bad header, wrong size, or a diff against an image it does not have."""


def planes_for(colours: str) -> int:
    try:
        return len(COLOURS[colours]) - 1
    except KeyError as err:
        raise FrameError(f"unknown colour depth {colours!r}; expected one of {sorted(COLOURS)}") from err


@dataclass(frozen=True)
class LabelImage:
    """A decoded label image: raw packed planes, as the e-paper controller takes them."""

    width: int
    height: int
    colours: str
    planes: bytes

    @property
    def stride(self) -> int:
        return (self.width + 7) // 8

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.planes).hexdigest()

    def pixel(self, x: int, y: int) -> str:
        """The colour name at (x, y)."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise IndexError(f"({x}, {y}) is outside {self.width}×{self.height}")
        plane_size = self.stride * self.height
        offset = y * self.stride + x // 8
        bit = 0x80 >> (x % 8)
        names = COLOURS[self.colours]
        for plane in range(len(names) - 1):
            if self.planes[plane * plane_size + offset] & bit:
                return names[plane + 1]
        return "white"

    def count(self, colour: str) -> int:
        """How many pixels show `colour` (tests use it to see that red really is red)."""
        return sum(1 for y in range(self.height) for x in range(self.width) if self.pixel(x, y) == colour)

    def to_pil(self) -> Any:
        """The image as a Pillow 'P' image (Pillow is imported only here: the label side does not need it)."""
        from PIL import Image

        palette_rgb = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (220, 0, 0), "yellow": (240, 200, 0)}
        out = Image.new("P", (self.width, self.height), 0)
        out.putpalette([c for name in COLOURS[self.colours] for c in palette_rgb[name]])
        plane_size = self.stride * self.height
        for plane in range(len(COLOURS[self.colours]) - 1):
            bits = self.planes[plane * plane_size:(plane + 1) * plane_size]
            mask = Image.frombytes("1", (self.width, self.height), bits)
            out.paste(plane + 1, mask=mask)
        return out


def _xor(a: bytes, b: bytes) -> bytes:
    # int arithmetic XORs 10 kB in microseconds, a Python byte loop would take milliseconds.
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def encode(image: LabelImage, base: LabelImage | None = None, *, level: int = 6) -> bytes:
    """One frame showing `image`; a diff against `base` (what the page shows now) when that is smaller."""
    sha = hashlib.sha256(image.planes).digest()
    full = HEADER.pack(MAGIC, FLAG_ZLIB, planes_for(image.colours), image.width, image.height, bytes(8), sha)
    full += zlib.compress(image.planes, level)
    if base is None or (base.width, base.height, base.colours) != (image.width, image.height, image.colours):
        return full
    base_sha = hashlib.sha256(base.planes).digest()
    diff = HEADER.pack(MAGIC, FLAG_ZLIB | FLAG_DIFF, planes_for(image.colours), image.width, image.height,
                       base_sha[:8], sha)
    diff += zlib.compress(_xor(image.planes, base.planes), level)
    return diff if len(diff) < len(full) else full


@dataclass(frozen=True)
class FrameInfo:
    diff: bool
    colours: str
    width: int
    height: int
    base_prefix: bytes
    sha256: str


def frame_info(frame: bytes) -> FrameInfo:
    """The header of a frame, checked; FrameError says what is wrong."""
    if len(frame) < HEADER.size:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its {HEADER.size}-byte header")
    magic, flags, planes, width, height, base, sha = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise FrameError(f"not a label frame (magic {magic!r}, expected {MAGIC!r})")
    if planes not in _DEPTH_FOR_PLANES:
        raise FrameError(f"frame has {planes} colour planes; 1 to 3 are defined")
    if not (0 < width and 0 < height and width * height <= MAX_PIXELS):
        raise FrameError(f"frame size {width}×{height} is not a label's")
    return FrameInfo(bool(flags & FLAG_DIFF), _DEPTH_FOR_PLANES[planes], width, height, base, sha.hex())


def decode(frame: bytes, base: LabelImage | None = None) -> LabelImage:
    """The image a frame shows. A diff frame needs `base`, the image its header names (FrameError if not)."""
    info = frame_info(frame)
    flags = frame[4]
    body = frame[HEADER.size:]
    stride = (info.width + 7) // 8
    expected = stride * info.height * planes_for(info.colours)
    if flags & FLAG_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, expected + 1)
        except zlib.error as err:
            raise FrameError(f"frame body does not inflate: {err}") from err
        if not inflater.eof:
            raise FrameError("frame body is truncated")
    if len(body) != expected:
        raise FrameError(f"frame body is {len(body)} bytes, {info.width}×{info.height} {info.colours} needs {expected}")
    if info.diff:
        if base is None:
            raise FrameError("diff frame but the label has no image on that page; send a full frame")
        if hashlib.sha256(base.planes).digest()[:8] != info.base_prefix:
            raise FrameError("diff frame against an image the label does not show; send a full frame")
        if (base.width, base.height, base.colours) != (info.width, info.height, info.colours):
            raise FrameError("diff frame of another size or colour depth than the page's image")
        body = _xor(body, base.planes)
    image = LabelImage(info.width, info.height, info.colours, body)
    if image.sha256 != info.sha256:
        raise FrameError("decoded image does not match the frame's sha256 (corrupt frame or wrong base)")
    return image


def frame_to_text(frame: bytes) -> str:
    return base64.b64encode(frame).decode("ascii")


def frame_from_text(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as err:
        raise FrameError(f"frame is not base64: {err}") from err


# ---------------------------------------------------------------- the label side


@dataclass
class _Pending:
    at: datetime
    page: int
    frame: bytes
    sha256: str


@dataclass
class LabelScreen:
    """What a shelf label holds and shows: one image per page, the page shown, timed changes, the LED.

    `apply(command, now)` takes a decoded `show_image` / `show_page` / `flash_led` command (a dict, as in
    fleet/kinds.py) and returns the events the label sends (`shown`, or a `fault` it could not show); `tick(now)`
    switches timed changes whose moment has come. `now` is the label's own clock: a timed change is held on the
    label, so it switches on time even when the label hears nothing from its base station then.
    """

    width: int
    height: int
    colours: str = "bwr"
    pages: dict[int, LabelImage] = field(default_factory=dict)
    page: int = 0
    pending: list[_Pending] = field(default_factory=list)
    led: tuple[str, datetime] | None = None  # colour, until
    shown_log: list[tuple[datetime, int, str]] = field(default_factory=list)  # (when, page, sha256) switched

    @property
    def image(self) -> LabelImage | None:
        """The image on the page shown now."""
        return self.pages.get(self.page)

    def led_on(self, now: datetime) -> str | None:
        if self.led is not None and now < self.led[1]:
            return self.led[0]
        return None

    def apply(self, command: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        name = command.get("command")
        if name == "show_image":
            return self._show_image(command, now)
        if name == "show_page":
            self.page = int(command["page"])
            return [self._shown(now)]
        if name == "flash_led":
            self.led = (str(command.get("colour", "green")), now + timedelta(seconds=int(command.get("seconds", 10))))
            return []
        return []

    def tick(self, now: datetime) -> list[dict[str, Any]]:
        due = [p for p in self.pending if p.at <= now]
        if not due:
            return []
        self.pending = [p for p in self.pending if p.at > now]
        events: list[dict[str, Any]] = []
        for item in sorted(due, key=lambda p: p.at):
            events += self._install(item.frame, item.page, item.at)
        return events

    def next_due(self) -> datetime | None:
        return min((p.at for p in self.pending), default=None)

    def _show_image(self, command: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        text = command.get("frame")
        if not text:
            return [_fault("refresh_failed", "show_image without a frame")]
        try:
            frame = frame_from_text(text)
            info = frame_info(frame)
        except FrameError as err:
            return [_fault("refresh_failed", str(err))]
        page = int(command.get("page", 0))
        at = command.get("at")
        when = datetime.fromisoformat(at) if isinstance(at, str) else at
        if when is not None and when > now:
            # Held until its moment; a newer timed change for the same page and moment replaces it.
            self.pending = [p for p in self.pending if not (p.page == page and p.at == when)]
            self.pending.append(_Pending(when, page, frame, info.sha256))
            return []
        return self._install(frame, page, when or now)

    def _install(self, frame: bytes, page: int, when: datetime) -> list[dict[str, Any]]:
        if frame_info(frame).width != self.width or frame_info(frame).height != self.height:
            return [_fault("refresh_failed", f"frame is not {self.width}×{self.height}")]
        try:
            image = decode(frame, self.pages.get(page))
        except FrameError as err:
            return [_fault("refresh_failed", str(err))]
        self.pages[page] = image
        self.page = page
        self.shown_log.append((when, page, image.sha256))
        return [self._shown(when)]

    def _shown(self, when: datetime) -> dict[str, Any]:
        image = self.image
        sha = image.sha256 if image is not None else hashlib.sha256(b"").hexdigest()
        return {"type": "shown", "image_sha256": sha, "page": self.page}


def _fault(code: str, message: str) -> dict[str, Any]:
    return {"type": "fault", "code": code, "message": message[:200]}
