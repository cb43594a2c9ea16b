"""Sequence spans and the in-memory providers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from compliance.providers import NoSequenceStats, SeqSpan, SequenceStats, StaticPresence, StaticSequenceStats

T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)


def test_a_span_from_received_seqs_counts_gaps() -> None:
    span = SeqSpan.from_seqs([5, 6, 6, 9, 10])
    assert span == SeqSpan(5, 10, 4) and (span.expected, span.lost) == (6, 2)


def test_no_seqs_no_span() -> None:
    assert SeqSpan.from_seqs([]) is None


@pytest.mark.parametrize(("first", "last", "received"), [(5, 4, 1), (0, 9, 11), (0, 9, 0)])
def test_an_impossible_span_is_refused(first: int, last: int, received: int) -> None:
    with pytest.raises(ValueError):
        SeqSpan(first, last, received)


async def test_static_stats_answer_only_for_the_devices_asked() -> None:
    stats = StaticSequenceStats({"a": SeqSpan(0, 9, 10), "b": SeqSpan(0, 9, 9)})
    assert isinstance(stats, SequenceStats)
    assert await stats.sequence_spans({"a": "scale"}, T0, T1) == {"a": SeqSpan(0, 9, 10)}


async def test_without_a_source_loss_is_unknown() -> None:
    assert await NoSequenceStats().sequence_spans({"a": "scale"}, T0, T1) is None


async def test_static_presence_keeps_its_basis() -> None:
    report = await StaticPresence({"a": 0.5, "b": 1.0}).online_ratios(["a"], T0, T1)
    assert (dict(report.ratios), report.basis) == ({"a": 0.5}, "history")
    with pytest.raises(ValueError):
        StaticPresence({"a": 1.5})
