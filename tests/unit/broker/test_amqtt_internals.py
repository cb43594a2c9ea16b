"""The amqtt internals broker/amqtt_broker.py overrides or relies on are exactly those of amqtt 0.12.1.

When this fails after an upgrade: read the changed upstream method, port the change into IndexedBroker (or
drop the override if upstream fixed the problem), then update the hash in `UPSTREAM_PINS`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
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
                 "_publish_retained_messages_for_subscription", "_topic_filtering", "_client_message_loop"):
        ours = inspect.signature(getattr(IndexedBroker, name))
        theirs = inspect.signature(getattr(Broker, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_overridden_handler_signatures_match_upstream() -> None:
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    from broker.amqtt_handler import MarketProtocolHandler

    for name in ("init_from_connect", "_reader_loop", "start", "stop", "handle_subscribe", "handle_unsubscribe",
                 "handle_disconnect",
                 "handle_publish", "handle_pingreq", "handle_read_timeout", "_handle_qos1_message_flow"):
        ours = inspect.signature(getattr(MarketProtocolHandler, name))
        theirs = inspect.signature(getattr(BrokerProtocolHandler, name))
        assert list(ours.parameters) == list(theirs.parameters), name


async def test_private_attributes_the_extension_reads_exist() -> None:
    """Attributes (not methods, so not hashed above) that broker/amqtt_handler.py and IndexedBroker read."""
    import asyncio

    from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
    from amqtt.events import BrokerEvents
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.plugins.manager import PluginManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # no plugins configured: it looks at entry points
        manager: PluginManager[Any] = PluginManager("amqtt.test.none", None)
    assert isinstance(manager._event_plugin_callbacks, dict)
    handler = BrokerProtocolHandler(manager)
    for attribute in ("_pending_subscriptions", "_pending_unsubscriptions", "_disconnect_waiter", "_puback_waiters",
                      "_reader_ready", "_reader_stopped", "_reader_task", "_write_lock"):
        assert hasattr(handler, attribute), attribute
    assert isinstance(handler._pending_subscriptions, asyncio.Queue)
    reader = asyncio.StreamReader()
    assert StreamReaderAdapter(reader)._reader is reader
    assert StreamWriterAdapter(None)._writer is None  # type: ignore[arg-type]
    assert str(BrokerEvents.MESSAGE_RECEIVED) == "broker_message_received"


def test_light_session_follows_the_upstream_state_machine() -> None:
    """Every trigger sequence of length ≤ 4 ends in the same state, or fails the same way, as upstream's Session."""
    import itertools

    from amqtt.session import Session
    from transitions import MachineError

    from broker.amqtt_handler import LightSession

    for length in range(5):
        for triggers in itertools.product(("connect", "disconnect"), repeat=length):
            theirs, ours = Session(), LightSession()
            for trigger in triggers:
                outcome = []
                for session in (theirs, ours):
                    try:
                        getattr(session.transitions, trigger)()
                        outcome.append("ok")
                    except MachineError:
                        outcome.append("refused")
                assert outcome[0] == outcome[1], triggers
                if outcome[0] == "refused":
                    break
                assert ours.transitions.state == theirs.transitions.state, triggers
                for check in ("is_new", "is_connected", "is_disconnected"):
                    assert getattr(ours.transitions, check)() == getattr(theirs.transitions, check)(), triggers
                assert (ours.last_connect_time is None) == (theirs.last_connect_time is None), triggers
                assert (ours.last_disconnect_time is None) == (theirs.last_disconnect_time is None), triggers


def test_plugin_api_hooks_exist() -> None:
    from amqtt.events import BrokerEvents

    assert BrokerEvents.MESSAGE_RECEIVED == "broker_message_received"
    assert BrokerEvents.CLIENT_CONNECTED == "broker_client_connected"
    assert BrokerEvents.CLIENT_DISCONNECTED == "broker_client_disconnected"
