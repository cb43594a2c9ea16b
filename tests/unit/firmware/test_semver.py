"""Semantic versions and the ranges images declare they install over."""

from __future__ import annotations

import pytest

from firmware.semver import InvalidRange, InvalidVersion, Version, VersionRange, satisfies


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "1.2.3.4", "v1.2.3", "", "x", "1.2.3-", "1.2.3-01"])
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_precedence_follows_semver_org() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]  # fmt: skip
    versions = [Version.parse(v) for v in ordered]
    assert versions == sorted(reversed(versions))


def test_build_metadata_does_not_affect_precedence() -> None:
    assert Version.parse("1.2.3+build.7") == Version.parse("1.2.3")


@pytest.mark.parametrize(
    ("range_text", "inside", "outside"),
    [
        ("*", ["0.0.1", "9.9.9"], []),
        ("", ["1.0.0"], []),
        (">=1.2.0 <2.0.0", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0", "2.0.0-rc.1"]),
        ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
        ("1.x", ["1.0.0", "1.99.0"], ["2.0.0", "0.9.0"]),
        ("1.2.*", ["1.2.0", "1.2.7"], ["1.3.0"]),
        ("1.2.0 - 1.4.x", ["1.2.0", "1.4.9"], ["1.1.9", "1.5.0"]),
        ("<1.2 || >=2", ["1.1.9", "2.3.0"], ["1.2.0", "1.9.0"]),
        (">1.2", ["1.3.0"], ["1.2.9"]),
        ("<=1.2", ["1.2.9"], ["1.3.0"]),
        ("1.2.3", ["1.2.3"], ["1.2.4"]),
        (">= 1.0.0", ["1.0.0"], ["0.9.9"]),
    ],
)
def test_ranges_contain_what_npm_notation_says(range_text: str, inside: list[str], outside: list[str]) -> None:
    parsed = VersionRange.parse(range_text)
    assert all(v in parsed for v in inside), inside
    assert not any(v in parsed for v in outside), outside


@pytest.mark.parametrize("text", [">=foo", "1.2.3 ||", ">*", "^a.b"])
def test_malformed_ranges_name_the_problem(text: str) -> None:
    with pytest.raises(InvalidRange, match="'"):
        VersionRange.parse(text)


def test_a_device_with_an_unparseable_version_satisfies_no_range() -> None:
    assert not satisfies("build-42", ">=1.0.0")
