"""The fleet: device kinds and their schemas, markets, vendors, devices, credentials, metrology records."""

from fleet.envelope import DeviceMessage, Envelope
from fleet.errors import Conflict, Forbidden, InvalidRequest, MarketFleetError, NotFound, Unauthorised
from fleet.kinds import CATALOG, Channel, DeviceKind, KindSpec, spec_for, validate_payload

__all__ = [
    "CATALOG",
    "Channel",
    "Conflict",
    "DeviceKind",
    "DeviceMessage",
    "Envelope",
    "Forbidden",
    "InvalidRequest",
    "KindSpec",
    "MarketFleetError",
    "NotFound",
    "Unauthorised",
    "spec_for",
    "validate_payload",
]

# ORM models are imported by tortoise through the module path "fleet.models", not from here, so that
# importing the kinds catalog (simulators, vision) does not need tortoise.
