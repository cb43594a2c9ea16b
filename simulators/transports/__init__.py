"""Device-side transports: MQTT, CoAP, HTTP, serial, and an in-process loopback for tests."""

from simulators.transports.base import DeviceIdentity, DeviceLink, LinkDown, RequestTransport, Transport
from simulators.transports.coap import CoapAuth, CoapTransport, NoAuth, OscoreAuth
from simulators.transports.http import HttpTransport, sign
from simulators.transports.loopback import LoopbackTransport
from simulators.transports.mqtt import MqttTransport
from simulators.transports.serial import SerialTransport

__all__ = [
    "CoapAuth",
    "CoapTransport",
    "DeviceIdentity",
    "DeviceLink",
    "HttpTransport",
    "LinkDown",
    "LoopbackTransport",
    "MqttTransport",
    "NoAuth",
    "OscoreAuth",
    "RequestTransport",
    "SerialTransport",
    "Transport",
    "sign",
]
