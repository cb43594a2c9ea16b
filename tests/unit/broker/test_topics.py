"""The topic scheme of docs/protocol.md."""

from __future__ import annotations

import pytest

from broker import topics

pytestmark = pytest.mark.timeout(30)


def test_build_and_parse_round_trip() -> None:
    topic = topics.up_topic("M1", "acme-S1", "telemetry")
    assert topic == "mf/v1/M1/acme-S1/up/telemetry"
    parsed = topics.parse(topic)
    assert parsed == topics.DeviceTopic("M1", "acme-S1", "up", "telemetry")
    assert parsed.reply("ack") == "mf/v1/M1/acme-S1/down/ack"


def test_underscore_means_no_market() -> None:
    assert topics.down_topic(None, "d", "cmd") == "mf/v1/_/d/down/cmd"
    parsed = topics.parse("mf/v1/_/d/up/event")
    assert parsed is not None and parsed.market is None and parsed.market_segment == "_"
    assert topics.status_topic("", "d") == "mf/v1/_/d/up/status"


@pytest.mark.parametrize(
    "topic",
    ["mf/v1/M/d/up", "mf/v2/M/d/up/telemetry", "mf/v1/M/d/sideways/x", "mf/v1/M/d/up/bogus",
     "mf/v1/M/d/down/telemetry", "mf/v1/M/+/up/telemetry", "mf/v1//d/up/state", "mf/v1/M/d/up/state/extra"],
)
def test_foreign_topics_do_not_parse(topic: str) -> None:
    assert topics.parse(topic) is None


@pytest.mark.parametrize("segment", ["", "a/b", "a+", "#", "x\x00"])
def test_segments_with_separators_or_wildcards_are_refused(segment: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.up_topic("M", segment, "telemetry")


def test_filters() -> None:
    assert topics.device_down_filter("M1", "d") == "mf/v1/M1/d/down/#"
    assert topics.shared_up_filter("g") == "$share/g/mf/v1/+/+/up/#"


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("mf/v1/M1/dev/down/#", True),
        ("mf/v1/+/dev/down/#", True),
        ("mf/v1/M1/dev/down/cmd", True),
        ("mf/v1/M1/dev/down/+", True),
        ("mf/v1/M1/other/down/#", False),
        ("mf/v1/M1/+/down/#", False),
        ("mf/v1/#", False),
        ("#", False),
        ("mf/v1/M1/dev/up/#", False),
        ("mf/v1/#/dev/down/#", False),
        ("mf/v1/M1/dev/down/cmd/x", False),
    ],
)
def test_device_may_subscribe_only_to_its_own_downlinks(topic_filter: str, allowed: bool) -> None:
    assert topics.device_may_subscribe("dev", topic_filter) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+", "a/b/c", False),
        ("+/+", "a/", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topics.topic_matches(topic_filter, topic) is expected
