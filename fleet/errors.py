"""The platform's error hierarchy. `api/` maps these to HTTP once; transports map them to protocol codes."""

from __future__ import annotations


class MarketFleetError(Exception):
    """Base of every error the platform raises on purpose; the message is for the person who caused it."""


class NotFound(MarketFleetError):
    """The thing does not exist, or the caller may not know that it does."""


class Conflict(MarketFleetError):
    """The request clashes with what is already stored (duplicate code, state that forbids it)."""


class InvalidRequest(MarketFleetError):
    """The request is well-formed but its content cannot be accepted; the message names the field."""


class Unauthorised(MarketFleetError):
    """No valid credential was presented."""


class Forbidden(MarketFleetError):
    """A valid credential that may not do this."""
