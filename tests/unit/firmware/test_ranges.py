"""HTTP Range parsing for image downloads (RFC 9110 §14)."""

from __future__ import annotations

import pytest

from firmware.delivery import ByteRange, RangeNotSatisfiable, etag_for, if_range_allows, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),
        ("bytes=999-999", ByteRange(999, 999)),
    ],
)
def test_satisfiable_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=-0", "bytes=a-b", "items=0-1", "bytes=-",
                                    "bytes=0-1,5-6"])  # fmt: skip
def test_unsatisfiable_or_malformed_ranges_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, SIZE)


def test_content_range_header() -> None:
    assert ByteRange(500, 999).content_range(SIZE) == "bytes 500-999/1000"


def test_if_range_must_name_the_same_image() -> None:
    tag = etag_for("ab" * 32)
    assert if_range_allows(None, tag)
    assert if_range_allows(tag, tag)
    assert not if_range_allows(etag_for("cd" * 32), tag)
