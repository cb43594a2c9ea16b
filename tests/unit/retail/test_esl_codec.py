"""The label frame format: round trips, diffs, compactness, and refusing what a label cannot show."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from retail.esl_codec import FrameError, LabelImage, decode, encode, frame_info
from retail.render import LabelContent, LabelSpec, render_page

SPEC = LabelSpec(296, 128, "bwr")
CONTENT = LabelContent(name="西红柿", price=Decimal("6.80"), code="1002", stall_no="A03")


def test_full_frame_round_trips_to_the_same_planes() -> None:
    image = render_page(CONTENT, "price", SPEC)
    frame = encode(image)
    assert not frame_info(frame).diff
    assert decode(frame) == image
    assert frame_info(frame).sha256 == image.sha256


def test_price_change_travels_as_a_small_diff() -> None:
    before = render_page(CONTENT, "price", SPEC)
    after = render_page(dataclasses.replace(CONTENT, price=Decimal("7.20")), "price", SPEC)
    frame = encode(after, before)
    assert frame_info(frame).diff
    assert len(frame) < len(encode(after)) < len(after.planes) / 4  # diff < full frame < a quarter of raw
    assert decode(frame, before) == after


def test_diff_against_another_image_is_refused() -> None:
    before = render_page(CONTENT, "price", SPEC)
    other = render_page(dataclasses.replace(CONTENT, name="黄瓜"), "price", SPEC)
    after = render_page(dataclasses.replace(CONTENT, price=Decimal("7.20")), "price", SPEC)
    with pytest.raises(FrameError, match="does not show"):
        decode(encode(after, before), other)
    with pytest.raises(FrameError, match="no image"):
        decode(encode(after, before), None)


@pytest.mark.parametrize("garbage", [b"", b"MFL1", b"XXXX" + bytes(60), encode(LabelImage(8, 8, "bw", bytes(8)))[:-3]])
def test_garbage_frames_raise_frame_error(garbage: bytes) -> None:
    with pytest.raises(FrameError):
        decode(garbage)


def test_corrupted_body_is_detected_by_the_hash() -> None:
    image = LabelImage(16, 2, "bw", b"\xff\x00\x0f\xf0")
    frame = bytearray(encode(image, level=0))
    frame[-6] ^= 0x01  # flip a pixel inside the stored (uncompressed) block
    with pytest.raises(FrameError):
        decode(bytes(frame))


def test_pixels_read_back_with_their_colours() -> None:
    # 8×1, bwr: plane 0 (black) has pixel 0, plane 1 (red) pixel 7
    image = LabelImage(8, 1, "bwr", bytes([0x80, 0x01]))
    assert [image.pixel(x, 0) for x in (0, 3, 7)] == ["black", "white", "red"]
    assert decode(encode(image)).pixel(7, 0) == "red"
