"""Topic tries for the embedded broker: who is subscribed to a topic, and which retained messages a filter matches.

amqtt 0.12.1 keeps subscriptions in a dict keyed by filter and tests every filter against every published topic
(`Broker._run_broadcast` → `_matches`), so one message costs O(subscriptions): 317 msgs/s with 5,000 devices
subscribed to their own `down/` (docs/ingest.md). `SubscriptionIndex` answers the same question in
O(topic depth): a trie keyed by topic level, where a node holds the subscribers whose filter ends there and
the subscribers of `<node>/#`. `RetainedIndex` is the mirror image for retained messages (a trie of topics,
walked with a filter), used when a client subscribes.

Both follow MQTT 3.1.1 matching: `+` matches exactly one level (also an empty one), `#` matches the parent
level and everything below, and filters starting with a wildcard do not match topics starting with `$`
(MQTT-4.7.2-1). A client subscribed through several overlapping filters receives a message once, at the
highest QoS of those subscriptions (MQTT-3.3.5-1 allows either; once is what devices expect).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

__all__ = ["RetainedIndex", "SubscriptionIndex"]

S = TypeVar("S")  # what a subscription carries (the broker's Session)
V = TypeVar("V")


class _Node(Generic[S]):
    __slots__ = ("children", "hash_subs", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        self.subs: dict[str, tuple[S, int]] = {}  # client id -> (session, qos): filter ends here
        self.hash_subs: dict[str, tuple[S, int]] = {}  # filter is "<path to here>/#"


class SubscriptionIndex(Generic[S]):
    """Filters → subscribers, matched per topic in O(depth) instead of O(number of filters)."""

    def __init__(self) -> None:
        self._root: _Node[S] = _Node()
        self._by_client: dict[str, dict[str, int]] = {}  # client id -> {filter: qos}
        self._count = 0

    def __len__(self) -> int:
        """Number of (client, filter) subscriptions."""
        return self._count

    def add(self, topic_filter: str, client_id: str, session: S, qos: int) -> bool:
        """Subscribe (or update the QoS of an existing subscription); True when it is new."""
        levels = topic_filter.split("/")
        node = self._root
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if level == "#" and i == last:
                return self._put(node.hash_subs, topic_filter, client_id, session, qos)
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        return self._put(node.subs, topic_filter, client_id, session, qos)

    def _put(
        self, table: dict[str, tuple[S, int]], topic_filter: str, client_id: str, session: S, qos: int
    ) -> bool:
        new = client_id not in table
        table[client_id] = (session, qos)
        self._by_client.setdefault(client_id, {})[topic_filter] = qos
        if new:
            self._count += 1
        return new

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Unsubscribe one filter; True when the client had it. Prunes emptied branches."""
        levels = topic_filter.split("/")
        path: list[tuple[_Node[S], str]] = []
        node = self._root
        last = len(levels) - 1
        table: dict[str, tuple[S, int]] | None = None
        for i, level in enumerate(levels):
            if level == "#" and i == last:
                table = node.hash_subs
                break
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if table is None:
            table = node.subs
        if table.pop(client_id, None) is None:
            return False
        self._count -= 1
        filters = self._by_client.get(client_id)
        if filters is not None:
            filters.pop(topic_filter, None)
            if not filters:
                del self._by_client[client_id]
        for parent, level in reversed(path):  # prune
            child = parent.children[level]
            if child.children or child.subs or child.hash_subs:
                break
            del parent.children[level]
        return True

    def remove_client(self, client_id: str) -> list[str]:
        """Drop every subscription of a client (on session end); returns the filters it had."""
        filters = list(self._by_client.get(client_id, {}))
        for topic_filter in filters:
            self.remove(topic_filter, client_id)
        return filters

    def filters_of(self, client_id: str) -> dict[str, int]:
        """A client's subscriptions: {filter: qos}."""
        return dict(self._by_client.get(client_id, {}))

    def clear(self) -> None:
        self._root = _Node()
        self._by_client.clear()
        self._count = 0

    def match(self, topic: str) -> dict[str, tuple[S, int]]:
        """Subscribers of `topic`: {client id: (session, highest matching qos)}."""
        found: dict[str, tuple[S, int]] = {}
        levels = topic.split("/")
        dollar = topic.startswith("$")
        # Iterative walk over (node, depth); a wildcard at depth 0 never matches a $-topic.
        stack: list[tuple[_Node[S], int]] = [(self._root, 0)]
        n = len(levels)
        while stack:
            node, depth = stack.pop()
            if node.hash_subs and not (dollar and depth == 0):
                _merge(found, node.hash_subs)
            if depth == n:
                if node.subs:
                    _merge(found, node.subs)
                continue
            children = node.children
            child = children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
            if not (dollar and depth == 0):
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, depth + 1))
        return found


def _merge(found: dict[str, tuple[Any, int]], table: dict[str, tuple[Any, int]]) -> None:
    for client_id, entry in table.items():
        current = found.get(client_id)
        if current is None or entry[1] > current[1]:
            found[client_id] = entry


class _RNode(Generic[V]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RNode[V]] = {}
        self.value: V | None = None


class RetainedIndex(Generic[V]):
    """Retained messages by topic, found by walking the trie with a subscription filter."""

    def __init__(self) -> None:
        self._root: _RNode[V] = _RNode()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def set(self, topic: str, value: V) -> None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RNode()
            node = child
        if node.value is None:
            self._count += 1
        node.value = value

    def discard(self, topic: str) -> None:
        path: list[tuple[_RNode[V], str]] = []
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        if node.value is None:
            return
        node.value = None
        self._count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.children or child.value is not None:
                break
            del parent.children[level]

    def clear(self) -> None:
        self._root = _RNode()
        self._count = 0

    def match(self, topic_filter: str) -> Iterator[V]:
        """Retained values whose topic matches `topic_filter`."""
        levels = topic_filter.split("/")
        n = len(levels)
        stack: list[tuple[_RNode[V], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == n:
                if node.value is not None:
                    yield node.value
                continue
            level = levels[depth]
            if level == "#":
                # '#' matches the parent level too ("a/#" matches "a").
                if node.value is not None and depth > 0:
                    yield node.value
                yield from _all_below(node, skip_dollar=depth == 0)
            elif level == "+":
                for name, child in node.children.items():
                    if depth == 0 and name.startswith("$"):
                        continue
                    stack.append((child, depth + 1))
            else:
                child = node.children.get(level)
                if child is not None:
                    stack.append((child, depth + 1))


def _all_below(node: _RNode[V], skip_dollar: bool) -> Iterator[V]:
    stack = [child for name, child in node.children.items() if not (skip_dollar and name.startswith("$"))]
    while stack:
        current = stack.pop()
        if current.value is not None:
            yield current.value
        stack.extend(current.children.values())
