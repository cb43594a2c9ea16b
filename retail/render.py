"""Server-side rendering of shelf-label pages with Pillow, to the label's resolution and colour depth.

A template is a list of pages (`PAGES`, eight of them, BJ 4.2.9 asks for ≥ 8); each page is drawn on a palette
image whose indices are the label's colours (0 white, 1 black, 2 red, 3 yellow) with anti-aliasing off, because
e-paper has no grey. The price is drawn with seven-segment digits in a fixed box, not with a font: it reads well
on 1-bit e-paper at any size, does not depend on which fonts a server has, and `read_price` can read it back
from the pixels, which is how tests and the benchmark check what a label really shows.

    image = render_page(content, "price", LabelSpec(296, 128, "bwr"))   # -> esl_codec.LabelImage
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Final

import segno
from PIL import Image, ImageDraw, ImageFont

from retail.esl_codec import LabelImage, planes_for

__all__ = ["PAGES", "LabelContent", "LabelSpec", "price_box", "read_price", "render_page", "render_pages"]

WHITE, BLACK, RED, YELLOW = 0, 1, 2, 3
JIN_PER_KG: Final = Decimal(2)  # 1 市斤 = 500 g: shoppers compare prices per jin

# Fonts with CJK glyphs first; without any, Pillow's built-in font still draws Latin text and digits.
FONT_CANDIDATES: Final = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class LabelSpec:
    """A label's panel: resolution and colour depth (`bw`, `bwr`, `bwry`)."""

    width: int = 296
    height: int = 128
    colours: str = "bwr"

    def __post_init__(self) -> None:
        planes_for(self.colours)  # raises on an unknown depth
        if not (64 <= self.width <= 1600 and 32 <= self.height <= 1200):
            raise ValueError(f"label size {self.width}×{self.height} is outside 64×32 … 1600×1200")


@dataclass(frozen=True)
class LabelContent:
    """Everything a label's pages may show about one product."""

    name: str
    price: Decimal
    unit: str = "kg"
    code: str = ""
    category: str = ""
    origin: str = ""
    grade: str = ""
    promo_price: Decimal | None = None
    promo_text: str = ""
    trace_url: str = ""
    stall_no: str = ""
    holder: str = ""
    market: str = ""
    notice: str = ""
    day: date | None = None

    @property
    def shown_price(self) -> Decimal:
        return self.promo_price if self.promo_price is not None else self.price


# ---------------------------------------------------------------- fonts and primitives


@functools.lru_cache(maxsize=1)
def _font_path() -> str | None:
    return next((p for p in FONT_CANDIDATES if Path(p).is_file()), None)


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _accent(spec: LabelSpec) -> int:
    """Red where the panel has it, else black: promotions stand out on colour panels."""
    return RED if spec.colours in ("bwr", "bwry") else BLACK


@functools.lru_cache(maxsize=8192)
def _text_mask(text: str, size: int, max_width: int) -> tuple[Image.Image, int, int]:
    """`text` as a 1-bit mask, shrunk (down to 10 px) until it fits `max_width`, and its offset from the
    anchor. Cached: units, product names and stall numbers repeat across labels and updates, and glyph
    rasterising is most of a page's rendering time."""
    while size > 10 and font(size).getlength(text) > max_width:
        size -= 2
    x0, y0, x1, y1 = font(size).getbbox(text)
    mask = Image.new("1", (max(1, int(x1 - x0)), max(1, int(y1 - y0))), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), text, fill=1, font=font(size))
    return mask, int(x0), int(y0)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, fill: int, max_width: int) -> None:
    """Draw `text` at `xy` (top left), shrinking it until it fits `max_width`."""
    if not text:
        return
    mask, dx, dy = _text_mask(text, size, max_width)
    draw.bitmap((xy[0] + dx, xy[1] + dy), mask, fill=fill)


# Seven segments: a top, b upper right, c lower right, d bottom, e lower left, f upper left, g middle.
_DIGIT_SEGMENTS: Final = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}  # fmt: skip
_SEGMENTS_DIGIT: Final = {frozenset(v): k for k, v in _DIGIT_SEGMENTS.items()}
PRICE_DECIMALS: Final = 2
PRICE_CELLS: Final = 6  # up to 9999.99


@dataclass(frozen=True)
class _Cell:
    width: int
    height: int
    thick: int
    gap: int
    dot: int


def _cell_for(box: tuple[int, int, int, int]) -> _Cell:
    """Digit cells sized so that the widest price (PRICE_CELLS digits and the point) fits the box."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    thick = max(2, height // 9)
    gap = max(2, thick // 2 + 1)
    dot = thick + 4
    width = max(6, min(int(height * 0.55), (x1 - x0 - dot - PRICE_CELLS * gap) // PRICE_CELLS))
    thick = max(2, min(thick, width // 4))
    return _Cell(width, height, thick, gap, dot)


def _segment_rects(x: int, y: int, cell: _Cell) -> dict[str, tuple[int, int, int, int]]:
    w, h, t = cell.width, cell.height, cell.thick
    mid = y + h // 2
    return {
        "a": (x + t, y, x + w - t - 1, y + t - 1),
        "b": (x + w - t, y + t, x + w - 1, mid - 1),
        "c": (x + w - t, mid + 1, x + w - 1, y + h - t - 1),
        "d": (x + t, y + h - t, x + w - t - 1, y + h - 1),
        "e": (x, mid + 1, x + t - 1, y + h - t - 1),
        "f": (x, y + t, x + t - 1, mid - 1),
        "g": (x + t, mid - t // 2, x + w - t - 1, mid - t // 2 + t - 1),
    }


def _price_text(price: Decimal) -> str:
    value = price.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if value < 0 or value >= Decimal(10) ** (PRICE_CELLS - PRICE_DECIMALS):
        raise ValueError(f"price {price} does not fit a label (0 … 9999.99)")
    return f"{value:.{PRICE_DECIMALS}f}"


def _draw_price(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], price: Decimal, fill: int) -> None:
    """Right-aligned seven-segment digits in `box`; `read_price` reads them back from the same layout."""
    cell = _cell_for(box)
    x = box[2]
    for char in reversed(_price_text(price)):
        if char == ".":
            x -= cell.dot
            draw.rectangle((x + 1, box[3] - cell.thick, x + cell.thick, box[3] - 1), fill=fill)
            continue
        x -= cell.width + cell.gap
        for seg in _DIGIT_SEGMENTS[char]:
            draw.rectangle(_segment_rects(x + cell.gap, box[1], cell)[seg], fill=fill)


def read_price(image: LabelImage, box: tuple[int, int, int, int]) -> Decimal | None:
    """The price drawn by `_draw_price` in `box`, read from the pixels; None if no price is there.

    Samples the centre of every segment (any non-white colour counts as lit)."""
    cell = _cell_for(box)

    def digit_at(x: int) -> str | None:
        lit = set()
        for seg, (sx0, sy0, sx1, sy1) in _segment_rects(x + cell.gap, box[1], cell).items():
            if image.pixel((sx0 + sx1) // 2, (sy0 + sy1) // 2) != "white":
                lit.add(seg)
        if not lit:
            return None
        return _SEGMENTS_DIGIT.get(frozenset(lit), "?")

    x = box[2]
    chars: list[str] = []
    for position in range(PRICE_CELLS + 1):
        if position == PRICE_DECIMALS:
            x -= cell.dot
            chars.append(".")
            continue
        x -= cell.width + cell.gap
        if x < box[0]:
            break
        digit = digit_at(x)
        if digit is None:
            break
        chars.append(digit)
    text = "".join(reversed(chars))
    if "?" in text or len(text) < PRICE_DECIMALS + 2:
        return None
    return Decimal(text)


# ---------------------------------------------------------------- pages


def price_box(spec: LabelSpec) -> tuple[int, int, int, int]:
    """Where page 0 draws the price (the left 70 % of the lower part), for `read_price`."""
    w, h = spec.width, spec.height
    return (4, int(h * 0.36), int(w * 0.74), h - 6)


def _page_price(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    w, h = spec.width, spec.height
    _text(draw, (4, 2), c.name, int(h * 0.24), BLACK, w - 8)
    fill = _accent(spec) if c.promo_price is not None else BLACK
    _draw_price(draw, price_box(spec), c.shown_price, fill)
    unit_x = int(w * 0.76)
    _text(draw, (unit_x, int(h * 0.40)), "元", int(h * 0.17), BLACK, w - unit_x - 2)
    _text(draw, (unit_x, int(h * 0.62)), f"/{c.unit}", int(h * 0.15), BLACK, w - unit_x - 2)
    if c.promo_price is not None:
        _text(draw, (unit_x, int(h * 0.82)), "促销", int(h * 0.13), fill, w - unit_x - 2)


def _page_promotion(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    w, h = spec.width, spec.height
    accent = _accent(spec)
    draw.rectangle((0, 0, w - 1, int(h * 0.28)), fill=accent)
    _text(draw, (4, 2), c.promo_text or "今日特价", int(h * 0.22), WHITE, w - 8)
    _text(draw, (4, int(h * 0.32)), c.name, int(h * 0.16), BLACK, w - 8)
    _draw_price(draw, (4, int(h * 0.52), int(w * 0.62), h - 6), c.shown_price, accent)
    if c.promo_price is not None:
        _text(draw, (int(w * 0.66), int(h * 0.60)), f"原价 {c.price:.2f}", int(h * 0.13), BLACK, int(w * 0.33))


def _page_details(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    h = spec.height
    rows = [c.name, f"品类 {c.category or '-'}", f"产地 {c.origin or '-'}", f"等级 {c.grade or '-'}  单位 {c.unit}"]
    for i, row in enumerate(rows):
        _text(draw, (4, 1 + i * h // 4), row, int(h * 0.18), BLACK, spec.width - 8)


def _page_trace(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    w, h = spec.width, spec.height
    data = c.trace_url or f"MF:{c.market}:{c.stall_no}:{c.code}"
    qr = segno.make(data, error="m")
    modules = qr.symbol_size(scale=1, border=1)[0]
    scale = max(1, (h - 4) // modules)
    for row_no, row in enumerate(qr.matrix_iter(scale=scale, border=1)):
        for col_no, dark in enumerate(row):
            if dark:
                draw.point((2 + col_no, 2 + row_no), fill=BLACK)
    left = 6 + modules * scale
    _text(draw, (left, 4), "扫码溯源", int(h * 0.18), BLACK, w - left - 2)
    _text(draw, (left, int(h * 0.36)), c.name, int(h * 0.16), BLACK, w - left - 2)
    _text(draw, (left, int(h * 0.64)), c.code or c.stall_no, int(h * 0.14), BLACK, w - left - 2)


def _page_stall(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    h = spec.height
    _text(draw, (4, 2), f"摊位 {c.stall_no or '-'}", int(h * 0.28), BLACK, spec.width - 8)
    _text(draw, (4, int(h * 0.40)), c.holder or "-", int(h * 0.2), BLACK, spec.width - 8)
    _text(draw, (4, int(h * 0.70)), c.market or "-", int(h * 0.16), BLACK, spec.width - 8)


def _page_per_jin(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    w, h = spec.width, spec.height
    _text(draw, (4, 2), f"{c.name} 每斤", int(h * 0.22), BLACK, w - 8)
    per_jin = c.shown_price / JIN_PER_KG if c.unit == "kg" else c.shown_price
    _draw_price(draw, (4, int(h * 0.36), int(w * 0.74), h - 6), per_jin, BLACK)
    _text(draw, (int(w * 0.76), int(h * 0.50)), "元/斤" if c.unit == "kg" else f"元/{c.unit}", int(h * 0.15),
          BLACK, int(w * 0.23))


def _page_picking(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    w, h = spec.width, spec.height
    draw.rectangle((0, 0, w - 1, h - 1), outline=BLACK, width=max(2, h // 40))
    _text(draw, (8, 6), "拣货", int(h * 0.2), _accent(spec), w - 16)
    _text(draw, (8, int(h * 0.34)), c.code or c.name, int(h * 0.34), BLACK, w - 16)
    _text(draw, (8, int(h * 0.76)), f"{c.stall_no} {c.name}", int(h * 0.14), BLACK, w - 16)


def _page_notice(draw: ImageDraw.ImageDraw, c: LabelContent, spec: LabelSpec) -> None:
    h = spec.height
    day = c.day.isoformat() if c.day else ""
    _text(draw, (4, 2), c.notice or "今日快检合格", int(h * 0.22), BLACK, spec.width - 8)
    _text(draw, (4, int(h * 0.40)), c.name, int(h * 0.18), BLACK, spec.width - 8)
    _text(draw, (4, int(h * 0.70)), day, int(h * 0.16), BLACK, spec.width - 8)


PageDrawer = Callable[[ImageDraw.ImageDraw, LabelContent, LabelSpec], None]
#: The template's pages in order: page number = position. A label starts on page 0.
PAGES: Final[dict[str, PageDrawer]] = {
    "price": _page_price,
    "promotion": _page_promotion,
    "details": _page_details,
    "trace_qr": _page_trace,
    "stall": _page_stall,
    "per_jin": _page_per_jin,
    "picking": _page_picking,
    "notice": _page_notice,
}
PAGE_NUMBERS: Final = {name: i for i, name in enumerate(PAGES)}


def page_name(page: int | str) -> str:
    if isinstance(page, int):
        names = list(PAGES)
        if not 0 <= page < len(names):
            raise ValueError(f"page {page} does not exist; pages 0–{len(names) - 1}: {', '.join(names)}")
        return names[page]
    if page not in PAGES:
        raise ValueError(f"page {page!r} does not exist; pages: {', '.join(PAGES)}")
    return page


def render_page(content: LabelContent, page: int | str, spec: LabelSpec) -> LabelImage:
    """One page as the label's packed planes."""
    canvas = Image.new("P", (spec.width, spec.height), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # no anti-aliasing: e-paper pixels are on or off
    PAGES[page_name(page)](draw, content, spec)
    return to_label_image(canvas, spec)


def render_pages(content: LabelContent, spec: LabelSpec) -> list[LabelImage]:
    return [render_page(content, name, spec) for name in PAGES]


# bytes.translate tables (C speed; Image.point with a list would round 256 floats per call): index -> 255/0
_PLANE_TABLES: Final = {
    index: bytes(255 if value == index else 0 for value in range(256)) for index in (BLACK, RED, YELLOW)
}
_FOLD_TABLES: Final = {  # a colour the panel lacks becomes black
    planes: bytes(value if value <= planes else BLACK for value in range(256)) for planes in (1, 2, 3)
}


def to_label_image(canvas: Image.Image, spec: LabelSpec) -> LabelImage:
    """Palette indices → packed planes; a colour the panel lacks (yellow on bwr) falls back to black."""
    if canvas.mode != "P" or canvas.size != (spec.width, spec.height):
        raise ValueError(f"expected a {spec.width}×{spec.height} palette image, got {canvas.mode} {canvas.size}")
    planes = planes_for(spec.colours)
    indices = canvas.tobytes().translate(_FOLD_TABLES[planes])
    data = b"".join(
        Image.frombytes("L", canvas.size, indices.translate(_PLANE_TABLES[index]))
        .convert("1", dither=Image.Dither.NONE)
        .tobytes()
        for index in range(1, planes + 1)
    )
    return LabelImage(spec.width, spec.height, spec.colours, data)
