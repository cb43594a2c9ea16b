"""The standards files: every one loads through the schema, and every item cites a clause of its standard."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.checks import spec_keys_for
from compliance.requirements import (
    STANDARDS_DIR,
    Requirement,
    StandardsInvalid,
    known_kinds,
    load_standard_file,
    load_standards,
)

FILES = sorted(STANDARDS_DIR.glob("*.yaml"))


def test_the_expected_standard_files_are_there() -> None:
    assert {p.name for p in FILES} >= {"sz_db4403_t228_2022.yaml", "bj.yaml"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_standards_file_loads(path: Path) -> None:
    standard = load_standard_file(path)
    assert standard.items


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_item_cites_a_clause_of_its_own_standard_and_quotes_it(path: Path) -> None:
    standard = load_standard_file(path)
    for item in standard.items:
        assert item.clause.startswith(f"{standard.code} "), item.id
        assert len(item.clause) > len(standard.code) + 1, item.id
        assert item.wording.strip(), item.id
        assert item.parameter.zh.strip() and item.parameter.en.strip(), item.id


def test_item_ids_are_unique_across_all_standards() -> None:
    ids = [item.id for standard in load_standards() for item in standard.items]
    assert len(ids) == len(set(ids))


def test_every_item_names_a_known_kind() -> None:
    assert {item.kind for s in load_standards() for item in s.items} <= set(known_kinds())


def test_the_seed_parameters_the_issue_names_are_encoded() -> None:
    by_id = {item.id: item for s in load_standards() for item in s.items}
    assert by_id["sz-scale-type-approval"].clause == "SZ 6.2.1"
    assert by_id["sz-detector-channels"].requirement.min == 5
    assert by_id["sz-tablet-standby"].requirement.min == 10
    assert by_id["sz-tablet-camera"].requirement.min == 8
    assert by_id["sz-tablet-storage"].requirement.min == 32
    assert by_id["sz-camera-resolution"].requirement.min == 5
    assert by_id["sz-public-screen-size"].requirement.min == 55
    assert by_id["bj-esl-pages"].requirement.min == 8


def test_a_spec_key_is_read_with_one_type_per_kind() -> None:
    """Two items reading the same key of the same kind must agree on what kind of value it holds."""
    for kind in known_kinds():
        for key in spec_keys_for(kind).keys:
            families = {
                item.requirement.family
                for s in load_standards()
                for item in s.items
                if item.kind == kind and item.parameter.key == key.key
            }
            assert len(families - {"one_of", "includes"}) <= 1, (kind, key.key, families)


def test_a_file_with_a_bad_item_is_refused_naming_the_item(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "code: SZ\ndesignation: x\ntitle: x\ntitle_en: x\nstatus: published\nseed: x\nitems:\n"
        "  - id: sz-broken\n    clause: SZ 6.4.2 c\n    kind: inspection_tablet\n"
        "    parameter: {key: standby_h, en: Standby, zh: 待机}\n"
        "    requirement: {min: 10, equals: true}\n    wording: 设备待机时间应 ≥ 10 小时\n",
        encoding="utf-8",
    )
    with pytest.raises(StandardsInvalid, match=r"bad\.yaml: items\[0\] \(sz-broken\)"):
        load_standard_file(bad)


def test_an_item_citing_another_standard_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "code: BJ\ndesignation: x\ntitle: x\ntitle_en: x\nstatus: draft\nseed: x\nitems:\n"
        "  - id: bj-x\n    clause: SZ 6.3.1\n    kind: food_detector\n"
        "    parameter: {key: channels, en: Channels, zh: 通道数}\n"
        "    requirement: {min: 5}\n    wording: 检测设备通道数不少于 5 个\n",
        encoding="utf-8",
    )
    with pytest.raises(StandardsInvalid, match="does not start with 'BJ'"):
        load_standard_file(bad)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"min": 10, "unit": "h"}, "≥ 10 h"),
        ({"min": 18, "max": 55, "unit": "inch"}, "18–55 inch"),
        ({"min": 30, "min_exclusive": True, "unit": "days"}, "> 30 days"),
        ({"max": 3, "max_exclusive": True, "unit": "s"}, "< 3 s"),
        ({"min": "IP65", "unit": "IP"}, "≥ IP65 (each digit)"),
        ({"equals": True}, "= true"),
        ({"one_of": ["vga", "hdmi"]}, "one of: vga, hdmi"),
        ({"present": True}, "stated"),
    ],
)
def test_requirements_read_as_people_write_them(data: dict, text: str) -> None:
    assert Requirement.model_validate(data).describe() == text


def test_a_requirement_needs_exactly_one_test() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Requirement.model_validate({"unit": "h"})


def test_the_docs_list_every_item_and_every_scorecard_row() -> None:
    from compliance.scorecard import ROWS

    docs = (Path(__file__).resolve().parents[3] / "docs" / "compliance.md").read_text(encoding="utf-8")
    ids = [item.id for s in load_standards() for item in s.items] + list(ROWS)
    assert [i for i in ids if f"`{i}`" not in docs] == []
