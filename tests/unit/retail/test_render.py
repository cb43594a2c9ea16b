"""Server-side rendering: every page at every panel size and colour depth, and prices readable from pixels."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from retail.render import PAGES, LabelContent, LabelSpec, price_box, read_price, render_page, render_pages

CONTENT = LabelContent(name="西红柿", price=Decimal("6.80"), unit="kg", code="1002", origin="山东寿光",
                       promo_text="周末特价", stall_no="A03", holder="王记蔬菜", market="福田市场",
                       trace_url="https://trace.example/1002")
PANELS = [LabelSpec(296, 128, "bwr"), LabelSpec(250, 122, "bw"), LabelSpec(400, 300, "bwry"),
          LabelSpec(212, 104, "bwr")]


def test_the_template_has_at_least_eight_pages() -> None:
    assert len(PAGES) >= 8  # BJ 4.2.9


@pytest.mark.parametrize("spec", PANELS, ids=lambda s: f"{s.width}x{s.height}-{s.colours}")
def test_every_page_renders_at_the_panels_resolution_and_depth(spec: LabelSpec) -> None:
    pages = render_pages(CONTENT, spec)
    stride = (spec.width + 7) // 8
    planes = len(spec.colours) - 1
    assert len({p.sha256 for p in pages}) == len(PAGES)  # every page differs
    for image in pages:
        assert (image.width, image.height, image.colours) == (spec.width, spec.height, spec.colours)
        assert len(image.planes) == stride * spec.height * planes
        assert any(image.planes)  # something is drawn


@pytest.mark.parametrize("spec", PANELS, ids=lambda s: f"{s.width}x{s.height}-{s.colours}")
@pytest.mark.parametrize("price", ["0.50", "6.80", "12.90", "1999.99"])
def test_the_price_reads_back_from_the_pixels(spec: LabelSpec, price: str) -> None:
    image = render_page(dataclasses.replace(CONTENT, price=Decimal(price)), "price", spec)
    assert read_price(image, price_box(spec)) == Decimal(price)


def test_a_promotion_shows_its_price_in_red_on_a_red_panel() -> None:
    spec = PANELS[0]
    plain = render_page(CONTENT, "price", spec)
    promo = render_page(dataclasses.replace(CONTENT, promo_price=Decimal("5.99")), "price", spec)
    assert read_price(promo, price_box(spec)) == Decimal("5.99")
    assert plain.count("red") == 0 and promo.count("red") > 500


def test_a_price_a_label_cannot_show_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        render_page(dataclasses.replace(CONTENT, price=Decimal("10000")), "price", PANELS[0])


def test_unknown_pages_and_panels_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="pages"):
        render_page(CONTENT, 8, PANELS[0])
    with pytest.raises(ValueError, match="colour depth"):
        LabelSpec(296, 128, "rgb")


@pytest.mark.parametrize("spec", PANELS, ids=lambda s: f"{s.width}x{s.height}-{s.colours}")
def test_the_traceability_qr_is_drawn_whole_at_the_panels_resolution(spec: LabelSpec) -> None:
    """Module by module, the trace page's pixels are the QR code of the product's trace URL (no decoder is
    installed here: segno's own matrix is the reference), every module square, black on white, inside the panel."""
    import segno

    image = render_page(CONTENT, "trace_qr", spec)
    matrix = [list(row) for row in segno.make(CONTENT.trace_url, error="m").matrix_iter(scale=1, border=1)]
    size = len(matrix)
    scale = (spec.height - 4) // size
    assert scale >= 1 and 2 + size * scale <= min(spec.width, spec.height)  # fits on the panel
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            for dy in range(scale):
                for dx in range(scale):
                    pixel = image.pixel(2 + c * scale + dx, 2 + r * scale + dy)
                    assert pixel == ("black" if dark else "white"), (r, c, dx, dy)
