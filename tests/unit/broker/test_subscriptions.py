"""The topic tries that replace amqtt's linear subscription matching."""

from __future__ import annotations

import random

import pytest

from broker.subscriptions import RetainedIndex, SubscriptionIndex
from broker.topics import topic_matches

pytestmark = pytest.mark.timeout(30)


def subscribers(index: SubscriptionIndex[str], topic: str) -> dict[str, int]:
    return {client: qos for client, (_session, qos) in index.match(topic).items()}


def test_exact_plus_and_hash_filters_match() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("mf/v1/M1/d1/down/#", "d1", "s1", 1)
    index.add("mf/v1/+/d2/down/cmd", "d2", "s2", 1)
    index.add("mf/v1/+/+/up/#", "svc", "s3", 0)
    index.add("#", "spy", "s4", 0)
    assert subscribers(index, "mf/v1/M1/d1/down/cmd") == {"d1": 1, "spy": 0}
    assert subscribers(index, "mf/v1/M1/d1/down") == {"d1": 1, "spy": 0}  # '#' matches the parent level
    assert subscribers(index, "mf/v1/M9/d2/down/cmd") == {"d2": 1, "spy": 0}
    assert subscribers(index, "mf/v1/M9/d2/down/ota") == {"spy": 0}
    assert subscribers(index, "mf/v1/M1/d1/up/telemetry") == {"svc": 0, "spy": 0}


def test_wildcards_at_the_first_level_do_not_match_dollar_topics() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("#", "a", "s", 0)
    index.add("+/x", "b", "s", 0)
    index.add("$SYS/#", "c", "s", 0)
    assert subscribers(index, "$SYS/x") == {"c": 0}


def test_overlapping_filters_deliver_once_at_the_highest_qos() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a/#", "c", "s", 0)
    index.add("a/+", "c", "s", 1)
    assert subscribers(index, "a/b") == {"c": 1}


def test_resubscribing_updates_qos_and_remove_prunes() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert index.add("a/b", "c", "s", 0)
    assert not index.add("a/b", "c", "s", 1)
    assert len(index) == 1
    assert subscribers(index, "a/b") == {"c": 1}
    assert index.remove("a/b", "c")
    assert not index.remove("a/b", "c")
    assert subscribers(index, "a/b") == {}
    assert index._root.children == {}


def test_remove_client_drops_all_its_filters() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for f in ("a/#", "b/+", "c"):
        index.add(f, "x", "s", 1)
    index.add("c", "y", "s", 1)
    assert sorted(index.remove_client("x")) == ["a/#", "b/+", "c"]
    assert len(index) == 1
    assert subscribers(index, "c") == {"y": 1}
    assert index.filters_of("x") == {}


def test_index_agrees_with_linear_matching_on_random_filters() -> None:
    rng = random.Random(7)
    levels = ["a", "b", "c", "+", "#", ""]
    index: SubscriptionIndex[str] = SubscriptionIndex()
    filters = {}
    for n in range(300):
        depth = rng.randint(1, 4)
        parts = [rng.choice(levels) for _ in range(depth)]
        parts = [p for i, p in enumerate(parts) if p != "#" or i == depth - 1]
        if not parts:
            continue
        f = "/".join(parts)
        filters[f"c{n}"] = f
        index.add(f, f"c{n}", "s", 0)
    for _ in range(300):
        topic = "/".join(rng.choice(["a", "b", "c", "", "$x"]) for _ in range(rng.randint(1, 4)))
        expected = {c for c, f in filters.items() if topic_matches(f, topic)}
        assert set(index.match(topic)) == expected, topic


def test_retained_index_walks_filters() -> None:
    retained: RetainedIndex[str] = RetainedIndex()
    for topic in ("mf/v1/M/d1/up/status", "mf/v1/M/d2/up/status", "mf/v1/M/d1/down/config", "$SYS/load", "a"):
        retained.set(topic, topic)
    assert sorted(retained.match("mf/v1/+/+/up/status")) == ["mf/v1/M/d1/up/status", "mf/v1/M/d2/up/status"]
    assert sorted(retained.match("mf/v1/M/d1/#")) == ["mf/v1/M/d1/down/config", "mf/v1/M/d1/up/status"]
    assert "$SYS/load" not in set(retained.match("#"))
    assert list(retained.match("$SYS/#")) == ["$SYS/load"]
    assert list(retained.match("a/#")) == ["a"]
    retained.discard("a")
    assert list(retained.match("a")) == []
    assert len(retained) == 4
