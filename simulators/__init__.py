"""Device simulators that speak the real protocol (docs/protocol.md), one per device kind, and a whole market.

Imports only `fleet` (the kinds and their schemas) and `broker.topics` (the topic scheme, via
`simulators.topics`). See docs/simulators.md.
"""

from simulators.device import DeviceStats, ReceivedCommand, SimulatedDevice
from simulators.faults import Burst, DropLink, FailedTest, Fault, Garbage, OutOfRange, SkewClock
from simulators.generators import Emission, Generator, make_generator
from simulators.market import Endpoints, MarketSimulation, register_market_devices, simulate
from simulators.ota import OtaAgent, OtaBehaviour
from simulators.outbox import Outbox, OutboxEntry, OutboxStore, open_outbox
from simulators.transports import (
    CoapAuth,
    CoapTransport,
    DeviceIdentity,
    HttpTransport,
    LinkDown,
    LoopbackTransport,
    MqttTransport,
    NoAuth,
    OscoreAuth,
    SerialTransport,
    Transport,
)
from simulators.wire import Ack

__all__ = [
    "Ack",
    "Burst",
    "CoapAuth",
    "CoapTransport",
    "DeviceIdentity",
    "DeviceStats",
    "DropLink",
    "Emission",
    "Endpoints",
    "FailedTest",
    "Fault",
    "Garbage",
    "Generator",
    "HttpTransport",
    "LinkDown",
    "LoopbackTransport",
    "MarketSimulation",
    "MqttTransport",
    "NoAuth",
    "OscoreAuth",
    "OtaAgent",
    "OtaBehaviour",
    "OutOfRange",
    "Outbox",
    "OutboxEntry",
    "OutboxStore",
    "ReceivedCommand",
    "SerialTransport",
    "SimulatedDevice",
    "SkewClock",
    "Transport",
    "make_generator",
    "open_outbox",
    "register_market_devices",
    "simulate",
]
