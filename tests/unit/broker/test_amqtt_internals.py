"""The amqtt internals broker/amqtt_broker.py overrides or relies on are exactly those of amqtt 0.12.1.

When this fails after an upgrade: read the changed upstream method, port the change into IndexedBroker (or
drop the override if upstream fixed the problem), then update the hash in `UPSTREAM_PINS`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version
from typing import Any

import pytest

from broker.amqtt_broker import AMQTT_VERSION, UPSTREAM_PINS

pytestmark = pytest.mark.timeout(30)


def _resolve(path: str) -> Any:
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(path)


def test_amqtt_is_the_pinned_version() -> None:
    assert version("amqtt") == AMQTT_VERSION, (
        f"amqtt {version('amqtt')} installed; broker/amqtt_broker.py is written against {AMQTT_VERSION}"
    )


@pytest.mark.parametrize("path", sorted(UPSTREAM_PINS))
def test_upstream_method_is_unchanged(path: str) -> None:
    try:
        target = _resolve(path)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{path} no longer exists in amqtt: IndexedBroker relies on it ({err})")
    source = inspect.getsource(target)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == UPSTREAM_PINS[path], (
        f"{path} changed upstream (sha256 {digest}, pinned {UPSTREAM_PINS[path]}): review IndexedBroker's "
        "override against the new source before updating the pin"
    )


def test_overridden_signatures_match_upstream() -> None:
    from amqtt.broker import Broker

    from broker.amqtt_broker import IndexedBroker

    for name in ("_run_broadcast", "add_subscription", "_del_subscription", "_del_all_subscriptions",
                 "_initialize_client_session", "_handle_client_session", "retain_message",
                 "_publish_retained_messages_for_subscription", "_topic_filtering"):
        ours = inspect.signature(getattr(IndexedBroker, name))
        theirs = inspect.signature(getattr(Broker, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_plugin_api_hooks_exist() -> None:
    from amqtt.events import BrokerEvents

    assert BrokerEvents.MESSAGE_RECEIVED == "broker_message_received"
    assert BrokerEvents.CLIENT_CONNECTED == "broker_client_connected"
    assert BrokerEvents.CLIENT_DISCONNECTED == "broker_client_disconnected"
