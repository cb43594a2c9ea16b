"""The printable scorecard: both languages, the biggest gains first, one table's items only when asked."""

from __future__ import annotations

from compliance.facts import DeviceFacts, LayoutFacts, MarketFacts
from compliance.report import filter_source, scorecard_html, top_gains
from compliance.scorecard import score_market


def card():
    layout = LayoutFacts(floor_area_m2=600, entrances=("North gate", "South gate"), stall_count=3)
    facts = MarketFacts("M1", (DeviceFacts(id="c1", kind="flow_counter", entrance="North gate"),), layout)
    return score_market(facts)


def test_the_biggest_losses_with_an_action_come_first() -> None:
    gains = top_gains(card(), count=50)
    missing = [g.max_points - (g.points or 0) for g in gains]
    assert missing == sorted(missing, reverse=True) and all(g.action for g in gains)
    assert "sz-a1-flow-counter" in {g.id for g in gains}  # one of two entrances covered


def test_html_in_chinese_and_english_escapes_and_prints() -> None:
    zh, en = scorecard_html(card(), "zh"), scorecard_html(card(), "en")
    assert "最能提高得分的事项" in zh and "客流监测设备" in zh and 'lang="zh-CN"' in zh
    assert "What would raise the score most" in en and "One flow counter per entrance" in en
    assert "@media print" in zh and "<script" not in zh
    assert "South gate" in en  # the uncovered entrance is named in the evidence or the action


def test_one_standard_only() -> None:
    full = card()
    zz = filter_source(full, "ZZ")
    assert zz.items and {i.source for i in zz.items} == {"ZZ"}
    assert {t.section for t in zz.totals} == {i.section for i in zz.items}
    assert filter_source(full, None) is full
